"""The built images, run as users run them (`make test-containers`, pytest -m containers): the smoke recipe through
`make recipe IMAGE=1`; a SageMaker training job, its bad-hyperparameter failure and its spot restart; a RunPod pod
and its restart; GGUF q8_0/q4_k_m through the image's llama.cpp; the PII gate with NER; the CUDA toolchain; what
the images must not contain. Skipped, with the reason, where no Docker engine answers or an image is not built
(`make docker-engine && make containers`). What each test saw is also written to .cache/test-containers/."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from ftkit_release import images

pytestmark = pytest.mark.containers

BUILDS = {b.name: str(b.ref) for b in images.plan(ROOT)}
AXOLOTL, UNSLOTH = BUILDS["axolotl"], BUILDS["unsloth"]
DPO = "llama8b-qlora-dpo"  # two stages (sft, dpo): a channel per stage
SFT = "llama8b-qlora-sft"
RECORD = ROOT / ".cache" / "test-containers"
RUN_TIMEOUT = 1800


def docker(*args: str, timeout: float = RUN_TIMEOUT, check: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"docker {shlex.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return proc


def record(name: str, data: Any) -> None:
    RECORD.mkdir(parents=True, exist_ok=True)
    text = data if isinstance(data, str) else json.dumps(data, indent=2, default=str)
    (RECORD / name).write_text(text)


@pytest.fixture(scope="module", autouse=True)
def engine() -> None:
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no Docker engine: {exc} (make docker-engine)")
    if info.returncode != 0:
        pytest.skip("no Docker engine answers `docker info` (make docker-engine)")
    missing = [ref for ref in BUILDS.values() if docker("image", "inspect", ref, timeout=60).returncode != 0]
    if missing:
        pytest.skip(f"images not built here: {', '.join(missing)} (make containers)")


@contextlib.contextmanager
def container_name(prefix: str) -> Iterator[str]:
    name = f"ftkit-test-{prefix}-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        docker("rm", "-f", name, timeout=120)


def wait_for_log(name: str, pattern: str, timeout: float = 900) -> str:
    """The container's log once `pattern` appears in it (fails when the container exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = docker("logs", name, timeout=60)
        text = logs.stdout + logs.stderr
        if re.search(pattern, text):
            return text
        if docker("inspect", "-f", "{{.State.Running}}", name, timeout=60).stdout.strip() != "true":
            raise AssertionError(f"{name} exited before /{pattern}/:\n{text[-4000:]}")
        time.sleep(1)
    raise AssertionError(f"/{pattern}/ not in {name}'s log within {timeout} s")


def stop(name: str) -> int:
    """`docker stop` with a spot reclaim's grace period (SIGTERM, then up to 120 s); the exit code."""
    docker("stop", "-t", "120", name, timeout=300, check=True)
    return int(docker("inspect", "-f", "{{.State.ExitCode}}", name, timeout=60).stdout.strip())


def owners(tree: Path) -> set[tuple[int, int]]:
    return {(p.lstat().st_uid, p.lstat().st_gid) for p in [tree, *tree.rglob("*")]}


def gate_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """stage.metric -> value of every metric the gate checked."""
    return {f"{r['stage']}.{r['metric']}": r["value"] for r in metrics["checks"] if r.get("value") is not None}


# ---------------------------------------------------------------- a. make recipe through the image


def test_make_recipe_runs_the_smoke_profile_in_the_image_and_the_run_belongs_to_the_caller() -> None:
    runs = ROOT / "runs" / DPO
    before = set(runs.iterdir()) if runs.is_dir() else set()
    started = time.monotonic()
    proc = subprocess.run(["make", "recipe", f"NAME={DPO}", "PROFILE=smoke", "IMAGE=1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)  # fmt: skip
    out = proc.stdout + proc.stderr
    record("make-recipe-image.log", out)
    assert proc.returncode == 0, out[-5000:]
    assert f"running {DPO} (smoke) in {AXOLOTL}" in out
    [run_dir] = set(runs.iterdir()) - before
    metrics = json.loads((run_dir / "metrics.json").read_text())
    record("make-recipe-image.json", {"seconds": round(time.monotonic() - started, 1), "run_dir": str(run_dir),
                                      "status": metrics["status"], "checks": metrics["checks"]})  # fmt: skip
    assert metrics["status"] == "passed"
    assert all(r["passed"] for r in metrics["checks"]) and len(metrics["checks"]) >= 6
    for row in metrics["checks"]:  # the gate table is on the terminal
        assert row["metric"] in out, row
    assert metrics["versions"]["torch"] == "2.13.0", "trained by the image's torch (the CPU build is 2.13.0+cpu)"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert metrics["git_commit"].startswith(head), "the host checkout's commit, passed into the container"
    assert owners(run_dir) == {(os.getuid(), os.getgid())}, "every file of the run belongs to whoever ran make"


# ---------------------------------------------------------------- b, c. SageMaker


def sagemaker_tree(root: Path, hyperparameters: dict[str, str], *, owner: tuple[int, int] = (1000, 1000)) -> Path:
    """/opt/ml as SageMaker lays it out: hyperparameters.json (string values), resourceconfig.json, a data channel
    per stage, empty model/ and output/."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}))  # fmt: skip
    for stage in ("sft", "dpo"):
        channel = root / "input" / "data" / stage
        channel.mkdir(parents=True)
        shutil.copy(ROOT / "recipes" / DPO / "data" / f"{stage}.jsonl", channel / f"{stage}.jsonl")
    for sub in ("model", "output", "checkpoints"):
        (root / sub).mkdir()
    for path in [root, *root.rglob("*")]:
        os.chown(path, *owner)
    return root


def sagemaker_run(tree: Path, name: str, *extra: str, detach: bool = False) -> subprocess.CompletedProcess[str]:
    """`docker run IMAGE train`, as SageMaker starts a training job (here with /opt/ml bind-mounted)."""
    argv = ["run", *(["-d"] if detach else []), "--name", name, "-v", f"{tree}:/opt/ml", *extra, AXOLOTL, "train"]
    return docker(*argv)


# String values, as SageMaker passes them; the same steps as the smoke profile (each channel keeps its slice).
SMOKE_JOB = {"recipe": DPO, "profile": "smoke", "sft.max_steps": "10", "dpo.max_steps": "16"}


@pytest.fixture(scope="module")
def sagemaker_job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted SageMaker job of the smoke profile: its tree and output."""
    tree = sagemaker_tree(tmp_path_factory.mktemp("sm") / "ml", SMOKE_JOB)
    with container_name("sm") as name:
        started = time.monotonic()
        proc = sagemaker_run(tree, name)
        seconds = round(time.monotonic() - started, 1)
    record("sagemaker-job.log", proc.stdout + proc.stderr)
    return {"tree": tree, "proc": proc, "seconds": seconds}


def test_a_sagemaker_job_trains_on_its_channels_and_publishes_the_model(sagemaker_job: dict[str, Any]) -> None:
    tree, proc = sagemaker_job["tree"], sagemaker_job["proc"]
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert not (tree / "output" / "failure").exists()
    for rel in ("config.json", "model.safetensors", "tokenizer.json", "ftkit/metrics.json", "ftkit/report.md"):
        assert (tree / "model" / rel).is_file(), rel
    metrics = json.loads((tree / "output" / "data" / "run" / "metrics.json").read_text())
    assert metrics["status"] == "passed"
    for stage in ("sft", "dpo"):
        resolved = (tree / "output" / "data" / "run" / "resolved" / f"{stage}.yaml").read_text()
        assert f"/opt/ml/input/data/{stage}/{stage}.jsonl" in resolved, f"the {stage} channel replaced its dataset"
    assert metrics["stages"]["sft"]["steps"] == 10 and metrics["stages"]["dpo"]["steps"] == 16
    assert owners(tree / "model") == {(1000, 1000)}, "the job ran as the image's user"


def test_a_bad_hyperparameter_fails_the_job_with_output_failure(tmp_path: Path) -> None:
    # Started as root (a platform that ignores USER) on a root-owned tree: it still reports as uid 1000.
    tree = sagemaker_tree(tmp_path / "ml", {**SMOKE_JOB, "sft.learning_rate": "fast"}, owner=(0, 0))
    with container_name("sm-bad") as name:
        proc = sagemaker_run(tree, name, "--user", "0:0")
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-3000:]
    failure = (tree / "output" / "failure").read_text()
    assert "sft.learning_rate" in failure and "hyperparameter" in failure, failure
    assert (tree / "output" / "failure").stat().st_uid == 1000, "root handed the job's folders to uid 1000"
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_root_owned_opt_ml_is_refused_in_one_line_when_the_image_runs_as_its_user(tmp_path: Path) -> None:
    tree = sagemaker_tree(tmp_path / "ml", SMOKE_JOB, owner=(0, 0))
    for path in [tree, *tree.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    with container_name("sm-ro") as name:
        proc = sagemaker_run(tree, name)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and "/opt/ml/model is not writable by uid 1000" in lines[0], lines


def test_a_reclaimed_spot_job_resumes_from_its_checkpoints_and_ends_like_an_uninterrupted_one(
    sagemaker_job: dict[str, Any], tmp_path: Path
) -> None:
    assert sagemaker_job["proc"].returncode == 0, "the uninterrupted job failed (see the test above)"
    tree = sagemaker_tree(tmp_path / "ml", SMOKE_JOB)
    with container_name("spot") as name:
        sagemaker_run(tree, name, detach=True)
        wait_for_log(name, r"sft: step [4-9]/10")
        code = stop(name)
        stopped_log = docker("logs", name).stdout
    assert code == 6, stopped_log[-3000:]
    state = json.loads((tree / "checkpoints" / "metrics.json").read_text())
    assert state["status"] == "interrupted" and state["interruptions"][0]["signal"] == "SIGTERM"
    step = state["interruptions"][0]["step"]
    assert 4 <= step < 10 and (tree / "checkpoints" / "sft" / f"checkpoint-{step}" / "trainer_state.json").is_file()

    # SageMaker restarts the job on a new instance: same image, same command, checkpoints/ restored from S3.
    shutil.rmtree(tree / "output")
    (tree / "output").mkdir()
    os.chown(tree / "output", 1000, 1000)
    with container_name("spot2") as name:
        proc = sagemaker_run(tree, name)
    record("spot-resume.log", stopped_log + "\n---- restart ----\n" + proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert "resuming the run whose checkpoints are in /opt/ml/checkpoints" in proc.stdout
    resumed = json.loads((tree / "output" / "data" / "run" / "metrics.json").read_text())
    base = json.loads((sagemaker_job["tree"] / "output" / "data" / "run" / "metrics.json").read_text())
    assert resumed["status"] == "passed" and resumed["resumes"][0]["step"] == step
    ours, theirs = gate_metrics(resumed), gate_metrics(base)
    record("spot-resume.json", {"stopped_at_step": step, "resumed": ours, "uninterrupted": theirs})
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, rel=1e-3, abs=1e-4), key


# ---------------------------------------------------------------- d. RunPod


def test_a_runpod_pod_trains_on_its_volume_and_a_restarted_pod_resumes() -> None:
    volume = f"ftkit-test-workspace-{uuid.uuid4().hex[:8]}"
    env = ["-e", "RUNPOD_POD_ID=test-pod", "-e", f"RECIPE={SFT}", "-e", "PROFILE=smoke",
           "-e", "SET=sft.max_steps=12 sft.logging_steps=1"]  # fmt: skip
    pod = ["run", *env, "-v", f"{volume}:/workspace", AXOLOTL]
    try:
        with container_name("pod") as name:
            docker(*pod[:1], "-d", "--name", name, *pod[1:], check=True)
            wait_for_log(name, r"sft: step [3-9]/12")
            assert stop(name) == 6, docker("logs", name).stdout[-3000:]
        with container_name("pod2") as name:  # the pod restarts: a new container on the same volume
            proc = docker(*pod[:1], "--name", name, *pod[1:])
        record("runpod.log", proc.stdout + proc.stderr)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
        assert re.search(rf"resuming /workspace/runs/{SFT}/\S+-smoke", proc.stdout), proc.stdout[-3000:]
        listing = docker("run", "--rm", "-v", f"{volume}:/workspace", "--entrypoint", "bash", AXOLOTL, "-c",
                         f"cat /workspace/runs/{SFT}/*/metrics.json", check=True).stdout  # fmt: skip
        metrics = json.loads(listing)
        assert metrics["status"] == "passed" and metrics["stages"]["sft"]["steps"] == 12
        assert metrics["resumes"] and metrics["interruptions"][0]["signal"] == "SIGTERM"
    finally:
        docker("volume", "rm", "-f", volume, timeout=120)


# ---------------------------------------------------------------- e. GGUF through the image's llama.cpp


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_gguf_exports_through_the_images_llama_cpp_load_back_and_verify(
    quant: str, sagemaker_job: dict[str, Any], tmp_path: Path
) -> None:
    model = sagemaker_job["tree"] / "model"
    assert (model / "model.safetensors").is_file(), "needs the SageMaker job's merged model"
    out = tmp_path / "gguf"
    out.mkdir()
    os.chown(out, 1000, 1000)
    proc = docker("run", "--rm", "-v", f"{model}:/model:ro", "-v", f"{out}:/out", "--entrypoint", "ftkit", AXOLOTL,
                  "export", "gguf", "/model", "--quant", quant, "--backend", "llama.cpp", "--out",
                  f"/out/model.{quant}.gguf", "--json")  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(proc.stdout[proc.stdout.index("{") :])
    record(f"gguf-{quant}.json", result)
    assert result["backend"] == "llama.cpp" and result["quant"] == quant
    assert result["check"]["passed"] and result["check"]["tokenizer_match"], result["check"]
    assert (out / f"model.{quant}.gguf").stat().st_size == result["size_bytes"]


# ---------------------------------------------------------------- f. the PII gate with NER


PII_ROWS = [
    {"messages": [{"role": "user", "content": "Please ship it to Ada Lovelace, 12 St James's Square, London."},
                  {"role": "assistant", "content": "Noted: Ada Lovelace in London."}]},
    {"messages": [{"role": "user", "content": "Grace Hopper will meet you at the Golden Gate Bridge."},
                  {"role": "assistant", "content": "I will tell Grace Hopper."}]},
    {"messages": [{"role": "user", "content": "What is the boiling point of water?"},
                  {"role": "assistant", "content": "100 degrees Celsius at sea level."}]},
]  # fmt: skip


def test_the_pii_gate_with_ner_refuses_names_and_addresses_in_the_image(tmp_path: Path) -> None:
    import spacy

    data = tmp_path / "data"
    data.mkdir()
    (data / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PII_ROWS))
    labels = docker("image", "inspect", "-f", "{{json .Config.Labels}}", AXOLOTL, check=True).stdout
    model = json.loads(labels).get("io.finetune-recipes.spacy-model", "none")
    if model == "none":  # built where GitHub is unreachable: a rule-based spaCy pipeline stands in for the model
        nlp = spacy.blank("en")
        nlp.add_pipe("entity_ruler").add_patterns(
            [{"label": "PERSON", "pattern": p} for p in ("Ada Lovelace", "Grace Hopper")]
            + [{"label": "GPE", "pattern": "London"}, {"label": "FAC", "pattern": "Golden Gate Bridge"}]
        )
        nlp.to_disk(data / "ner")
        model = "/data/ner"
    proc = docker("run", "--rm", "-v", f"{data}:/data:ro", "--entrypoint", "ftkit", AXOLOTL, "pii", "scan",
                  "/data/rows.jsonl", "--ner", model, "--max-rows", "PERSON=0", "--max-rows", "ADDRESS=0",
                  "--workers", "1", "--json")  # fmt: skip
    record("pii-ner.json", proc.stdout + proc.stderr)
    assert proc.returncode == 3, (proc.stdout + proc.stderr)[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert report["ner"]["available"], report["ner"]
    counts = report["rows_by_entity"]
    assert counts.get("PERSON") == 2 and counts.get("ADDRESS") == 2, counts


# ---------------------------------------------------------------- g. security


@pytest.mark.parametrize("image", list(BUILDS))
def test_an_image_runs_as_uid_1000_and_carries_its_oci_labels(image: str) -> None:
    ref = BUILDS[image]
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", ref, check=True).stdout)
    assert config["User"] == "1000:1000"
    assert docker("run", "--rm", "--entrypoint", "id", ref, "-u", check=True).stdout.strip() == "1000"
    labels = config["Labels"]
    for key in ("title", "description", "version", "revision", "source", "licenses", "base.name"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.version"] == ref.rsplit(":", 1)[1]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", labels["org.opencontainers.image.revision"])


def _pem_bodies(text: str) -> set[str]:
    return {m.group(1).replace("\n", "") for m in re.finditer(
        r"-----BEGIN CERTIFICATE-----\n(.+?)\n-----END CERTIFICATE-----", text, re.S)}  # fmt: skip


SECRET_PATTERNS = re.compile(
    rb"hf_[A-Za-z0-9]{34}|AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{36}|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)
# Where a build could leave a credential of its own: our folders, home and config directories. Third-party files
# elsewhere carry look-alikes (boto's documented example key, Unicode names in libunistring) and are not ours.
OUR_PATHS = ("opt/ftkit/", "opt/locks/", "workspace/", "home/", "root/", "etc/", "tmp/", "cache/")
CREDENTIAL_FILES = re.compile(
    r"(^|/)(\.netrc|\.git-credentials|\.pypirc|\.docker/config\.json|\.aws/credentials|\.huggingface/token|"
    r"huggingface/token|\.ssh/id_[a-z0-9]+|run/secrets/.*)$"
)
ENV_SECRETS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN",
               "RUNPOD_API_KEY")  # fmt: skip


def layer_findings(path: str, blob: bytes, needles: dict[str, bytes]) -> list[str]:
    """What is wrong with one file of a layer: a credential file, a secret of this machine, a token-shaped string
    in one of our paths."""
    found = [f"{path}: a credential file"] if CREDENTIAL_FILES.search(path) else []
    found += [f"{path}: holds {what}" for what, needle in needles.items() if needle in blob]
    if path.lstrip("./").startswith(OUR_PATHS) and (m := SECRET_PATTERNS.search(blob)):
        found.append(f"{path}: {m.group()[:40]!r}")
    return found


def test_layer_findings_catch_what_a_leaky_build_would_leave() -> None:
    needles = {"the host CA": b"MIIFakeCertificateBody"}
    assert layer_findings("root/.netrc", b"", needles) == ["root/.netrc: a credential file"]
    assert layer_findings("usr/lib/x.so", b"..MIIFakeCertificateBody..", needles) == ["usr/lib/x.so: holds the host CA"]
    assert layer_findings("opt/ftkit/cfg", b"token=hf_" + b"a" * 34, needles)
    assert not layer_findings("usr/lib/libunistring.so", b"AKIAISLANDISSHARITAL", needles), "not one of our paths"


@pytest.mark.parametrize("image", list(BUILDS))
def test_no_token_key_or_host_certificate_in_any_layer_or_the_history(image: str) -> None:
    ref = BUILDS[image]
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", ref, check=True).stdout
    config = docker("image", "inspect", "-f", "{{json .Config}}", ref, check=True).stdout
    # Certificates the host trusts beyond Debian's bundle (a proxy's CA), and this machine's own tokens.
    own = docker("run", "--rm", "--entrypoint", "cat", ref, "/etc/ssl/certs/ca-certificates.crt", check=True).stdout
    host_only = _pem_bodies(images.HOST_CA.read_text()) - _pem_bodies(own) if images.HOST_CA.is_file() else set()
    needles = {f"a host-only CA ({body[:16]}…)": base64.b64decode(body) for body in host_only}
    needles |= {f"a host-only CA in PEM ({body[:16]}…)": body[:76].encode() for body in host_only}
    needles |= {f"${name}": os.environ[name].encode() for name in ENV_SECRETS if len(os.environ.get(name, "")) >= 8}
    for text in (history, config):
        assert not SECRET_PATTERNS.search(text.encode()), SECRET_PATTERNS.search(text.encode())
        assert "BEGIN CERTIFICATE" not in text
        assert not [what for what, needle in needles.items() if needle.decode(errors="ignore")[:64] in text]
    hits: list[str] = []
    scanned = 0
    # `docker save` streamed, never written out (an image is 6-9 GB), each layer read as it passes.
    save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=save.stdout, mode="r|") as outer:
        for member in outer:
            if not member.name.endswith("layer.tar") or not member.isfile():  # a link: a layer already read
                continue
            with tarfile.open(fileobj=outer.extractfile(member), mode="r|") as layer:
                for item in layer:
                    if item.isfile():
                        scanned += 1
                        blob = layer.extractfile(item).read()  # type: ignore[union-attr]
                        hits += [f"{member.name[:12]}: {f}" for f in layer_findings(item.name, blob, needles)]
    assert save.wait(timeout=600) == 0, "docker save failed"
    tokens = [n for n in needles if n.startswith("$")]
    record(f"layers-{image}.json", {"files_scanned": scanned, "host_only_certificates": len(host_only),
                                    "machine_tokens": tokens, "hits": hits})  # fmt: skip
    assert scanned > 1000 and not hits, hits[:20]


def test_the_unsloth_image_without_a_gpu_stops_with_one_line_and_exit_5() -> None:
    for argv in (["train"], []):
        proc = docker(
            "run", "--rm", "-e", "RUNPOD_POD_ID=x", "-e", "RECIPE=mistral7b-qlora-sft-unsloth", UNSLOTH, *argv
        )
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        assert proc.returncode == 5, proc.stdout + proc.stderr
        assert len(lines) == 1 and "needs an NVIDIA GPU" in lines[0] and "Traceback" not in lines[0], lines


# ---------------------------------------------------------------- the CUDA toolchain from PyPI wheels


def test_the_images_cuda_toolchain_builds_gpu_code_without_a_gpu(tmp_path: Path) -> None:
    script = ROOT / "containers" / "scripts" / "check-cuda-stack.py"
    proc = docker("run", "--rm", "-v", f"{script}:/tmp/check.py:ro", "--entrypoint", "python", AXOLOTL,
                  "/tmp/check.py", "--json")  # fmt: skip
    record("cuda-stack.json", proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    report = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert all(check["ok"] for check in report["checks"].values()), report
