"""`ftkit cloud sagemaker|runpod`: the estimator arguments and the pod template (pure functions), their printed
forms, and launching without the optional SDKs; a recipe the image does not hold (a fork) carried into the job
(SageMaker: the `recipe` channel; RunPod: the network volume) or refused with the fix."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from conftest import ROOT, edit_yaml
from ftkit.cli import main
from ftkit.cloud.carry import RecipeSource, folder_fingerprint
from ftkit.cloud.runpod import create, create_kwargs, pod_template, suggest_gpu
from ftkit.cloud.sagemaker import PLACEHOLDER_ROLE, instance_gpus, launch, render_python, sagemaker_job
from ftkit.cloud.settings import CloudRun
from ftkit.errors import ExitCode, FtkitError
from ftkit.recipes.load import load_recipe
from ftkit.recipes.schema import Hardware
from test_cloud_carry import commit_all

DIGEST = "sha256:" + "ab" * 32
NAME = "tiny-trl-sft-dpo"


@pytest.fixture
def loaded(stub_recipe, recipes_root: Path):  # type: ignore[no-untyped-def]
    """The tiny recipe, committed in a git checkout: the image (built from HEAD) holds it."""
    rdir = stub_recipe(NAME)
    edit_yaml(rdir / "recipe.yaml", lambda d: d["container"].update(image="ghcr.io/o/trl", tag="1.9.0", digest=DIGEST))
    commit_all(recipes_root.parent)
    return load_recipe(NAME, check_profiles=False)


@pytest.fixture
def fork(loaded):  # type: ignore[no-untyped-def]
    """The same recipe edited for a new domain and not committed: the image does not hold this version."""
    config = loaded.dir / "sft.trl.yaml"
    config.write_text(config.read_text() + "# the support-bot domain\n")
    return load_recipe(NAME, check_profiles=False)


def test_estimator_kwargs(loaded, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_TOKEN", "hf_not_to_be_printed")
    run = CloudRun(NAME, "full", ["sft.trainer.max_steps=5", "trainer.learning_rate=1e-4", "report_to=none"])
    job = sagemaker_job(loaded, run, role="arn:aws:iam::1:role/r", s3_prefix="s3://b/p/", run_id="r1",
                        data={"dpo": "s3://b/mine/dpo/"})  # fmt: skip
    est = job.estimator
    sha = folder_fingerprint(loaded.dir)
    assert est["hyperparameters"] == {"recipe": NAME, "profile": "full", "recipe_sha256": sha,
                                      "sft.trainer.max_steps": "5", "trainer.learning_rate": "1e-4",
                                      "report_to": "none"}  # fmt: skip
    assert all(isinstance(v, str) for v in est["hyperparameters"].values()), "SageMaker passes strings"
    assert est["image_uri"] == f"ghcr.io/o/trl:1.9.0@{DIGEST}"
    assert est["checkpoint_s3_uri"] == "s3://b/p/tiny-trl-sft-dpo/r1/checkpoints"
    assert (
        est["checkpoint_local_path"] == "/opt/ml/checkpoints"
        and est["output_path"] == "s3://b/p/tiny-trl-sft-dpo/r1/output"
    )
    assert est["use_spot_instances"] is True and est["max_wait"] >= est["max_run"] == 24 * 3600
    assert est["instance_type"] == "ml.g5.2xlarge" and est["role"] == "arn:aws:iam::1:role/r"
    assert est["container_entry_point"] == ["python", "-m", "ftkit.cloud.entrypoint"]
    assert "HF_TOKEN" not in est["environment"] and job.secrets == ["HF_TOKEN"]
    assert job.inputs == {"sft": "s3://b/p/tiny-trl-sft-dpo/r1/data/sft/", "dpo": "s3://b/mine/dpo/"}
    assert any("ECR" in n for n in job.notes)
    assert job.uploads == {} and not job.recipe["carried"] and job.notes[0].startswith("recipe: the image's recipes/")

    code = render_python(job)
    compile(code, "estimator.py", "exec")
    assert "Estimator(" in code and "os.environ['HF_TOKEN']" in code and "hf_not_to_be_printed" not in code
    assert "estimator.fit({'sft': 's3://b/p/tiny-trl-sft-dpo/r1/data/sft/', 'dpo': 's3://b/mine/dpo/'}" in code
    assert "'sft.trainer.max_steps': '5'" in code

    plain = sagemaker_job(loaded, CloudRun(NAME), spot=False, image="1.dkr.ecr.us-east-1.amazonaws.com/x:1")
    assert plain.estimator["use_spot_instances"] is False and "max_wait" not in plain.estimator
    assert plain.estimator["role"] == PLACEHOLDER_ROLE and "s3://<BUCKET>" in plain.estimator["checkpoint_s3_uri"]
    assert not any("ECR" in n for n in plain.notes)
    other = sagemaker_job(loaded, CloudRun(NAME))
    assert other.estimator["checkpoint_s3_uri"] != job.estimator["checkpoint_s3_uri"], "one checkpoint uri per run"


def test_estimator_refuses_what_the_set_checks_refuse(loaded) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FtkitError, match="max_stesp"):
        sagemaker_job(loaded, CloudRun(NAME, "full", ["sft.trainer.max_stesp=5"]))
    with pytest.raises(FtkitError, match="names no stage"):
        sagemaker_job(loaded, CloudRun(NAME), data={"eval": "s3://b/e/"})


def test_instance_types_and_hardware_notes(loaded) -> None:  # type: ignore[no-untyped-def]
    assert instance_gpus("ml.g5.2xlarge") == ("a10g", 1)
    assert instance_gpus("ml.g5.12xlarge") == ("a10g", 4)
    assert instance_gpus("ml.g6e.xlarge") == ("l40s", 1)
    assert instance_gpus("ml.p4de.24xlarge") == ("a100-80gb", 8)
    assert instance_gpus("ml.m5.large") == (None, 0)
    real = load_recipe(str(ROOT / "recipes" / "llama8b-qlora-dpo"), check_profiles=False)
    shipped = RecipeSource(real.name, real.dir, folder_fingerprint(real.dir), False, "shipped")  # git may differ
    assert not any("needs" in n for n in sagemaker_job(real, CloudRun(real.name), source=shipped).notes)
    small = sagemaker_job(real, CloudRun(real.name), instance_type="ml.g4dn.xlarge", source=shipped).notes
    assert any("not in ftkit's list" in n for n in small)
    job = sagemaker_job(real, CloudRun(real.name), source=shipped)
    assert job.inputs == {} and any("Hub dataset" in n for n in job.notes)
    assert "estimator.fit(wait=False)" in render_python(job)


def test_launch_needs_real_settings_and_the_sdk(loaded, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FtkitError, match="real role and S3 prefix"):
        launch(sagemaker_job(loaded, CloudRun(NAME)))
    job = sagemaker_job(loaded, CloudRun(NAME), role="arn:aws:iam::1:role/r", s3_prefix="s3://b/p")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(FtkitError, match="HF_TOKEN is not set") as err:
        launch(job)
    assert err.value.code == ExitCode.ENVIRONMENT
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setitem(__import__("sys").modules, "sagemaker", None)  # not installed (also true in CI)
    with pytest.raises(FtkitError, match="sagemaker SDK is not installed") as err:
        launch(job)
    assert err.value.code == ExitCode.ENVIRONMENT


def test_pod_template(loaded) -> None:  # type: ignore[no-untyped-def]
    template, notes = pod_template(loaded, CloudRun(NAME, "full", ["sft.trainer.max_steps=5", "trainer.run_name=a b"]))
    assert template["imageName"] == f"ghcr.io/o/trl:1.9.0@{DIGEST}"
    assert template["env"]["RECIPE"] == NAME and template["env"]["PROFILE"] == "full"
    assert template["env"]["SET"] == "sft.trainer.max_steps=5 'trainer.run_name=a b'"
    assert template["env"]["HF_TOKEN"] == "{{ RUNPOD_SECRET_HF_TOKEN }}"
    assert template["volumeMountPath"] == "/workspace" and template["volumeInGb"] == 200
    assert template["ports"] == [] and template["gpuCount"] == 1
    assert template["dockerStartCmd"] == ["python", "-m", "ftkit.cloud.entrypoint"]
    assert template["gpuTypeIds"] == [suggest_gpu(loaded.recipe.hardware)[0]]
    assert any("GPU type" in n for n in notes)
    kwargs = create_kwargs(template)
    assert kwargs["image_name"] == template["imageName"] and kwargs["env"] == template["env"]
    assert kwargs["gpu_type_id"] == template["gpuTypeIds"][0] and kwargs["ports"] is None
    assert kwargs["docker_args"] == "python -m ftkit.cloud.entrypoint"
    given, _ = pod_template(loaded, CloudRun(NAME), gpu_type="NVIDIA H200", image="me/img:1")
    assert given["gpuTypeIds"] == ["NVIDIA H200"] and given["imageName"] == "me/img:1"


def test_gpu_suggestion_from_the_hardware_block() -> None:
    assert suggest_gpu(Hardware(gpus=1, min_vram_gb=24, recommended=["NVIDIA A10G 24GB", "NVIDIA L4 24GB"]))[0] == (
        "NVIDIA L4"
    ), "A10G is not a RunPod GPU; the next recommended one is"
    gpu, why = suggest_gpu(Hardware(gpus=1, min_vram_gb=70))
    assert gpu in {"NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB", "NVIDIA H100 PCIe", "NVIDIA H100 80GB HBM3",
                   "NVIDIA H200"} and "cheapest" in why  # fmt: skip
    with pytest.raises(FtkitError, match="no RunPod GPU"):
        suggest_gpu(Hardware(gpus=1, min_vram_gb=500))


def test_create_needs_an_api_key_and_the_sdk(loaded, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    template, _ = pod_template(loaded, CloudRun(NAME))
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    with pytest.raises(FtkitError, match="RUNPOD_API_KEY"):
        create(template)
    monkeypatch.setenv("RUNPOD_API_KEY", "k")
    monkeypatch.setitem(__import__("sys").modules, "runpod", None)
    with pytest.raises(FtkitError, match="runpod SDK is not installed"):
        create(template)


def test_a_provider_refusal_becomes_a_located_environment_error(loaded, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import types

    template, _ = pod_template(loaded, CloudRun(NAME))
    calls: list[dict[str, object]] = []

    def create_pod(**kwargs: object) -> dict[str, str]:
        calls.append(kwargs)
        raise RuntimeError("There are no longer any instances available with the requested specifications")

    monkeypatch.setenv("RUNPOD_API_KEY", "k")
    monkeypatch.setitem(__import__("sys").modules, "runpod", types.SimpleNamespace(create_pod=create_pod))
    with pytest.raises(FtkitError, match="RunPod refused: There are no longer") as err:
        create(template)
    assert err.value.code == ExitCode.ENVIRONMENT and err.value.problems[0].field == "--create"
    assert calls and calls[0]["image_name"] == template["imageName"]


def test_cli_json_and_printed_forms(loaded, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert main(["cloud", "sagemaker", NAME, "--set", "sft.trainer.max_steps=5", "--json", "--run-id", "x"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["estimator"]["hyperparameters"]["sft.trainer.max_steps"] == "5" and out["launched"] is None
    assert out["python"].startswith("import os") and out["inputs"]["sft"].endswith("/x/data/sft/")
    assert main(["cloud", "sagemaker", NAME, "--no-spot"]) == 0
    printed = capsys.readouterr()
    assert "use_spot_instances=False" in printed.out and "note: " in printed.err
    assert main(["cloud", "runpod", NAME, "--set", "report_to=none", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["template"]["env"]["SET"] == "report_to=none" and out["created"] is None and out["notes"]
    assert main(["cloud", "runpod", NAME]) == 0
    assert json.loads(capsys.readouterr().out)["env"]["RECIPE"] == NAME
    assert main(["cloud", "sagemaker", NAME, "--data", "nonsense"]) == ExitCode.USAGE
    assert main(["cloud", "runpod", NAME, "--set", "sft.trainer.max_stesp=1"]) == ExitCode.USAGE


# ---------------------------------------------------------------- a recipe the image does not hold


def test_a_fork_goes_into_the_sagemaker_job_as_the_recipe_channel(fork) -> None:  # type: ignore[no-untyped-def]
    job = sagemaker_job(fork, CloudRun(NAME), role="arn:aws:iam::1:role/r", s3_prefix="s3://b/p", run_id="r1")
    assert job.inputs["recipe"] == "s3://b/p/tiny-trl-sft-dpo/r1/recipe/"
    assert job.uploads == {str(fork.dir): "s3://b/p/tiny-trl-sft-dpo/r1/recipe/tiny-trl-sft-dpo"}
    assert job.estimator["hyperparameters"]["recipe_sha256"] == folder_fingerprint(fork.dir)
    assert job.recipe["carried"] and "sft.trl.yaml" in job.recipe["reason"]
    assert "carried as the 'recipe' input channel" in job.notes[0] and "/opt/ml/input/data/recipe/" in job.notes[0]
    code = render_python(job)
    compile(code, "estimator.py", "exec")
    upload = f"S3Uploader.upload({str(fork.dir)!r}, 's3://b/p/tiny-trl-sft-dpo/r1/recipe/tiny-trl-sft-dpo')"
    assert "from sagemaker.s3 import S3Uploader" in code and upload in code
    assert code.index(upload) < code.index("estimator.fit("), "uploaded before the job starts"
    kept = sagemaker_job(fork, CloudRun(NAME), source=None)
    assert "recipe" in kept.inputs, "without a source the decision is made against git, the same way"


def test_launch_uploads_the_carried_recipe_then_starts_the_job(fork, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    calls: list[tuple[str, object]] = []

    class Estimator:
        def __init__(self, **kwargs: object) -> None:
            calls.append(("Estimator", kwargs["image_uri"]))
            self.latest_training_job = types.SimpleNamespace(name="job-1")

        def fit(self, inputs: dict[str, str], wait: bool) -> None:
            calls.append(("fit", inputs))

    uploader = types.SimpleNamespace(upload=lambda local, uri: calls.append(("upload", (local, uri))))
    monkeypatch.setitem(sys.modules, "sagemaker", types.ModuleType("sagemaker"))
    monkeypatch.setitem(sys.modules, "sagemaker.estimator", types.SimpleNamespace(Estimator=Estimator))
    monkeypatch.setitem(sys.modules, "sagemaker.s3", types.SimpleNamespace(S3Uploader=uploader))
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    job = sagemaker_job(fork, CloudRun(NAME), role="arn:aws:iam::1:role/r", s3_prefix="s3://b/p", run_id="r1")
    assert launch(job) == "job-1"
    assert [c[0] for c in calls] == ["upload", "Estimator", "fit"]
    assert calls[0][1] == (str(fork.dir), "s3://b/p/tiny-trl-sft-dpo/r1/recipe/tiny-trl-sft-dpo")
    assert calls[2][1]["recipe"] == "s3://b/p/tiny-trl-sft-dpo/r1/recipe/"  # type: ignore[index]


def test_a_fork_on_runpod_needs_a_network_volume_and_runs_from_it(fork, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FtkitError) as err:
        pod_template(fork, CloudRun(NAME))
    [problem] = err.value.problems
    assert err.value.code == ExitCode.USAGE and problem.field == "--network-volume"
    assert "--network-volume ID --data-center DC" in (problem.fix or "")

    template, notes = pod_template(fork, CloudRun(NAME), network_volume="vol123", data_center="EU-RO-1")
    assert template["networkVolumeId"] == "vol123" and template["dataCenterIds"] == ["EU-RO-1"]
    assert "volumeInGb" not in template and template["volumeMountPath"] == "/workspace"
    assert template["env"]["RECIPE_DIR"] == "/workspace/recipes/tiny-trl-sft-dpo"
    assert template["env"]["RECIPE_SHA256"] == folder_fingerprint(fork.dir)
    sync = (f"aws s3 sync {fork.dir} s3://vol123/recipes/tiny-trl-sft-dpo/ --delete --exclude '.*' --exclude '*/.*' "
            "--region EU-RO-1 --endpoint-url https://s3api-eu-ro-1.runpod.io/")  # fmt: skip
    assert sync in notes[0] and "sft.trl.yaml" in notes[0]
    kwargs = create_kwargs(template)
    assert kwargs["network_volume_id"] == "vol123" and kwargs["data_center_id"] == "EU-RO-1"
    assert kwargs["volume_in_gb"] == 0 and kwargs["env"]["RECIPE_DIR"] == template["env"]["RECIPE_DIR"]

    monkeypatch.setenv("RUNPOD_API_KEY", "k")
    created: list[dict[str, object]] = []
    monkeypatch.setitem(sys.modules, "runpod", types.SimpleNamespace(create_pod=lambda **kw: created.append(kw) or
                                                                      {"id": "pod-1"}))  # fmt: skip
    with pytest.raises(FtkitError, match="cannot tell whether it is there") as err:
        create(template)
    assert "--recipe-on-volume" in (err.value.problems[0].fix or "") and not created
    assert create(template, recipe_on_volume=True) == "pod-1" and created[0]["network_volume_id"] == "vol123"
    unsure, unsure_notes = pod_template(fork, CloudRun(NAME), network_volume="vol123")
    assert "dataCenterIds" not in unsure and any("--data-center" in n for n in unsure_notes)
    assert "--region '<DATA_CENTER>'" in unsure_notes[0]


def test_the_cli_carries_a_fork_or_refuses_it_with_no_carry(fork, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert main(["cloud", "sagemaker", NAME, "--json", "--run-id", "x"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recipe"]["carried"] and out["inputs"]["recipe"].endswith("/x/recipe/") and "S3Uploader" in out["python"]
    assert main(["cloud", "sagemaker", NAME, "--no-carry-recipe"]) == ExitCode.USAGE
    assert "--no-carry-recipe" in capsys.readouterr().err
    assert main(["cloud", "runpod", NAME]) == ExitCode.USAGE
    assert "--network-volume" in capsys.readouterr().err
    assert main(["cloud", "runpod", NAME, "--network-volume", "v1", "--data-center", "US-KS-2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["upload"].startswith("aws s3 sync ") and "s3api-us-ks-2.runpod.io" in out["upload"]
    assert out["template"]["networkVolumeId"] == "v1" and out["recipe"]["carried"]
