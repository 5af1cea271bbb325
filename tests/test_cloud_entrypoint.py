"""`python -m ftkit.cloud.entrypoint` against a fake /opt/ml tree ($FTKIT_SM_ROOT) and a fake /workspace:
platform detection, channels, output/failure, exit codes, resuming after a restart (an engine that trains
nothing), and one real SageMaker-style run of a tiny recipe on CPU (slow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import edit_yaml
from fakes import FakeEngine
from ftkit.cloud.carry import folder_fingerprint
from ftkit.cloud.entrypoint import PrintEvents, detect, main, run_runpod, run_sagemaker
from ftkit.errors import ExitCode

NAME = "tiny-trl-sft-dpo"


def sm_tree(root: Path, hyperparameters: dict[str, Any], channels: dict[str, Path] | None = None) -> Path:
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    for name, src in (channels or {}).items():
        (root / "input" / "data" / name).mkdir(parents=True)
        shutil.copy(src, root / "input" / "data" / name / src.name)
    return root


@pytest.fixture
def fake(fake_engine: FakeEngine) -> tuple[FakeEngine, list[str], Path]:
    return fake_engine, fake_engine.merged, fake_engine.recipe_dir


def quiet() -> PrintEvents:
    return PrintEvents(lambda text: None)


def test_detect(tmp_path: Path) -> None:
    sm = sm_tree(tmp_path / "ml", {"recipe": NAME})
    assert detect({"FTKIT_SM_ROOT": str(sm)}) == "sagemaker"
    assert detect({"FTKIT_SM_ROOT": str(tmp_path / "none"), "RUNPOD_POD_ID": "abc"}) == "runpod"
    ws = tmp_path / "ws"
    ws.mkdir()
    assert detect({"FTKIT_SM_ROOT": str(tmp_path / "none"), "RECIPE": NAME, "FTKIT_WORKSPACE": str(ws)}) == "runpod"
    assert detect({"FTKIT_SM_ROOT": str(tmp_path / "none"), "FTKIT_WORKSPACE": str(tmp_path / "none")}) is None
    code = main(["train"], {"FTKIT_SM_ROOT": str(tmp_path / "none"), "FTKIT_WORKSPACE": str(tmp_path / "none")})
    assert code == ExitCode.USAGE


@pytest.mark.model
def test_sagemaker_spot_restart_resumes_from_the_checkpoints_and_publishes_the_model(fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    engine, merged, rdir = fake
    engine.stop_at = {"dpo": 5}
    root = sm_tree(tmp_path / "ml", {"recipe": NAME, "profile": "smoke", "dpo.trainer.max_steps": "8"},
                   {"sft": rdir / "data" / "sft.jsonl"})  # fmt: skip
    assert run_sagemaker(root, quiet()) == ExitCode.INTERRUPTED
    assert not (root / "output" / "failure").exists(), "an interruption is not a failure"
    state = json.loads((root / "checkpoints" / "metrics.json").read_text())
    assert state["status"] == "interrupted" and state["checkpoint_dir"] == str(root / "checkpoints")
    assert (root / "checkpoints" / "dpo" / "checkpoint-5" / "trainer_state.json").is_file()

    # A managed spot restart: a new machine; SageMaker restores input/ and checkpoints/ only.
    shutil.rmtree(root / "output")
    engine.stop_at = {}
    assert run_sagemaker(root, quiet()) == 0
    assert engine.calls == [("sft", 0), ("dpo", 0), ("dpo", 5)]
    assert merged == ["sft", "sft", "dpo"], "the new run dir merges the finished stage's kept adapter again"
    assert not (root / "output" / "failure").exists()
    for rel in ("config.json", "model.safetensors", "ftkit/metrics.json", "ftkit/report.md"):
        assert (root / "model" / rel).is_file(), rel
    done = json.loads((root / "output" / "data" / "run" / "metrics.json").read_text())
    assert done["status"] == "passed" and done["resumes"][0]["skipped_stages"] == ["sft"]
    assert done["stages"]["dpo"]["steps"] == 8
    sft_config = (root / "output" / "data" / "run" / "resolved" / "sft.yaml").read_text()
    assert str(root / "input" / "data" / "sft" / "sft.jsonl") in sft_config, "the channel replaced the dataset"
    assert (root / "checkpoints" / "sft" / "adapter_config.json").is_file()


@pytest.mark.model
def test_sagemaker_failures_write_output_failure_with_an_exit_code(fake, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    engine, _, rdir = fake
    bad = sm_tree(tmp_path / "a", {"recipe": NAME, "profile": "smoke", "sft.trainer.max_stesp": "3"})
    assert run_sagemaker(bad, quiet()) == ExitCode.USAGE
    assert "hyperparameter 'sft.trainer.max_stesp'" in (bad / "output" / "failure").read_text()

    rows = tmp_path / "sft.jsonl"
    rows.write_text(json.dumps({"id": "x", "messages": [{"role": "user", "content": "no answer"}]}) + "\n")
    data = sm_tree(tmp_path / "b", {"recipe": NAME, "profile": "smoke"}, {"sft": rows})
    assert run_sagemaker(data, quiet()) == ExitCode.DATA_INVALID
    assert "rows of" in (data / "output" / "failure").read_text() and engine.calls == []

    edit_yaml(rdir / "expected-metrics.yaml", lambda d: d["profiles"]["smoke"]["sft"].update(
        train_loss_drop={"min": 100, "source": "estimate"}))  # fmt: skip
    gate = sm_tree(tmp_path / "c", {"recipe": NAME, "profile": "smoke"})
    assert run_sagemaker(gate, quiet()) == ExitCode.METRICS_FAILED
    assert "sft.train_loss_drop" in (gate / "output" / "failure").read_text()
    assert (gate / "model" / "config.json").is_file(), "the model is published for inspection anyway"

    monkeypatch.setattr("ftkit.cloud.entrypoint.run_recipe", lambda *a, **k: 1 / 0)
    crash = sm_tree(tmp_path / "d", {"recipe": NAME, "profile": "smoke"})
    assert run_sagemaker(crash, quiet()) == 70
    assert "ZeroDivisionError" in (crash / "output" / "failure").read_text()


@pytest.mark.model
def test_runpod_pod_restart_resumes_its_run_on_the_volume(fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    engine, _, _ = fake
    env = {"RECIPE": NAME, "PROFILE": "smoke", "SET": "sft.trainer.max_steps=6", "FTKIT_WORKSPACE": str(tmp_path)}
    engine.stop_at = {"sft": 3}
    assert run_runpod(env, quiet()) == ExitCode.INTERRUPTED
    engine.stop_at = {}
    assert run_runpod(env, quiet()) == 0
    assert engine.calls == [("sft", 0), ("sft", 3), ("dpo", 0)]
    [run_dir] = (tmp_path / "runs" / NAME).iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "passed"
    assert run_runpod(env, quiet()) == 0, "a finished run is not resumed: a new one starts"
    assert len(list((tmp_path / "runs" / NAME).iterdir())) == 2
    assert run_runpod({**env, "SET": "nonsense"}, quiet()) == ExitCode.USAGE


# ---------------------------------------------------------------- which copy of the recipe runs


@pytest.mark.model
def test_sagemaker_runs_a_fork_carried_as_the_recipe_channel(fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    engine, _, rdir = fake
    root = sm_tree(tmp_path / "ml", {"recipe": NAME, "profile": "smoke", "recipe_sha256": folder_fingerprint(rdir)})
    carried = root / "input" / "data" / "recipe" / NAME
    shutil.copytree(rdir, carried)
    shutil.rmtree(rdir)  # the image does not hold it
    said: list[str] = []
    assert run_sagemaker(root, PrintEvents(said.append)) == 0, said
    metrics = json.loads((root / "output" / "data" / "run" / "metrics.json").read_text())
    assert metrics["recipe_dir"] == str(carried) and metrics["status"] == "passed"
    assert engine.calls == [("sft", 0), ("dpo", 0)]
    assert any(m.startswith(f"recipe: {carried} (carried into the job, sha256 ") for m in said)


@pytest.mark.model
def test_a_job_printed_for_another_recipe_version_stops_before_any_work(fake, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    engine, _, rdir = fake
    monkeypatch.setenv("FTKIT_GIT_COMMIT", "abc1234")
    older = sm_tree(tmp_path / "a", {"recipe": NAME, "profile": "smoke", "recipe_sha256": "0" * 64})
    assert run_sagemaker(older, quiet()) == ExitCode.USAGE, "an image built before the recipe's last change"
    failure = (older / "output" / "failure").read_text()
    assert "built from commit abc1234" in failure and "--carry-recipe" in failure and engine.calls == []

    stale = sm_tree(tmp_path / "b", {"recipe": NAME, "profile": "smoke", "recipe_sha256": folder_fingerprint(rdir)})
    shutil.copytree(rdir, stale / "input" / "data" / "recipe" / NAME)
    (stale / "input" / "data" / "recipe" / NAME / "data" / "left-over.jsonl").write_text("{}\n")
    assert run_sagemaker(stale, quiet()) == ExitCode.USAGE, "an upload that is not the printed folder"
    assert "upload the folder again" in (stale / "output" / "failure").read_text()

    flat = sm_tree(tmp_path / "c", {"recipe": NAME, "profile": "smoke"})
    shutil.copytree(rdir, flat / "input" / "data" / "recipe")  # the folder's files at the channel's root
    assert run_sagemaker(flat, quiet()) == ExitCode.USAGE
    assert f"not {NAME}/recipe.yaml" in (flat / "output" / "failure").read_text() and engine.calls == []


@pytest.mark.model
def test_runpod_runs_a_recipe_carried_on_the_network_volume(fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    engine, _, rdir = fake
    ws = tmp_path / "ws"
    carried = ws / "recipes" / NAME
    shutil.copytree(rdir, carried)
    shutil.rmtree(rdir)  # the image does not hold it
    env = {"RECIPE": NAME, "PROFILE": "smoke", "FTKIT_WORKSPACE": str(ws), "RECIPE_DIR": str(carried),
           "RECIPE_SHA256": folder_fingerprint(carried)}  # fmt: skip
    assert run_runpod(env, quiet()) == 0
    [run_dir] = (ws / "runs" / NAME).iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["recipe_dir"] == str(carried)
    said: list[str] = []
    missing = {**env, "RECIPE_DIR": str(ws / "recipes" / "not-copied")}
    assert run_runpod(missing, PrintEvents(said.append)) == ExitCode.USAGE
    assert "aws s3 sync" in said[-1] and engine.calls == [("sft", 0), ("dpo", 0)]


@pytest.mark.slow
def test_sagemaker_job_trains_a_tiny_recipe_on_cpu(tiny_recipe, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    rdir = tiny_recipe(NAME)
    loose = {"train_loss_drop": {"min": 0.01, "source": "estimate"}}  # a few steps: the bounds are not the point
    edit_yaml(rdir / "expected-metrics.yaml", lambda d: d.update(profiles={"smoke": {"sft": loose}}))
    hp = {"recipe": NAME, "profile": "smoke", "sft.trainer.max_steps": "6", "dpo.trainer.max_steps": "4"}
    root = sm_tree(tmp_path / "ml", hp, {"sft": rdir / "data" / "sft.jsonl"})
    assert main(["train"], {"FTKIT_SM_ROOT": str(root)}) == 0, capsys.readouterr().out[-3000:]
    assert not (root / "output" / "failure").exists()
    for rel in ("config.json", "model.safetensors", "README.md", "tokenizer.json", "ftkit/metrics.json"):
        assert (root / "model" / rel).is_file(), rel
    assert not list((root / "model").glob("checkpoint-*"))
    metrics = json.loads((root / "output" / "data" / "run" / "metrics.json").read_text())
    assert metrics["status"] == "passed" and metrics["checkpoint_dir"] == str(root / "checkpoints")
    for stage in ("sft", "dpo"):
        assert (root / "checkpoints" / stage / "adapter_config.json").is_file()
        assert (root / "checkpoints" / stage / "history.jsonl").is_file()
    out = capsys.readouterr().out
    assert "== sft: done" in out and "dpo: step 4/4" in out


# ---------------------------------------------------------------- before any work: GPU-only images, the job's user


def test_an_image_whose_engine_needs_a_gpu_is_refused_in_one_line_without_one(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ftkit.cloud import entrypoint

    assert entrypoint.gpu_refusal({"FTKIT_ENGINE": "axolotl"}, lambda: False) is None
    assert entrypoint.gpu_refusal({"FTKIT_ENGINE": "unsloth"}, lambda: True) is None
    line = entrypoint.gpu_refusal({"FTKIT_ENGINE": "unsloth"}, lambda: False)
    assert line is not None and "needs an NVIDIA GPU" in line and "\n" not in line

    monkeypatch.setattr(entrypoint, "_cuda_available", lambda: False)
    sm = sm_tree(tmp_path / "ml", {"recipe": NAME})
    code = main(["train"], {"FTKIT_SM_ROOT": str(sm), "FTKIT_ENGINE": "unsloth"})
    assert code == ExitCode.ENVIRONMENT
    assert "needs an NVIDIA GPU" in (sm / "output" / "failure").read_text(), "SageMaker shows it as FailureReason"


def test_run_as_parses_uid_and_gid() -> None:
    from ftkit.cloud.job_user import parse_run_as

    assert parse_run_as("1000:1000") == (1000, 1000) and parse_run_as("1234") == (1234, 1234)
    with pytest.raises(ValueError, match="UID:GID"):
        parse_run_as("ftkit")


def test_an_unwritable_job_folder_stops_the_job_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from ftkit.cloud import job_user

    sm = sm_tree(tmp_path / "ml", {"recipe": NAME})
    real_access = job_user.os.access
    monkeypatch.setattr(job_user.os, "access", lambda p, mode: Path(p) != sm and real_access(p, mode))
    assert job_user.first_unwritable([sm / "output"]) == sm / "output", "missing: its existing parent decides"
    assert main(["train"], {"FTKIT_SM_ROOT": str(sm)}) == ExitCode.ENVIRONMENT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{sm / 'model'} is not writable by uid" in err[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping root needs root")
def test_started_as_root_the_job_hands_its_folders_to_the_run_as_user_and_becomes_it(tmp_path: Path) -> None:
    folders = [tmp_path / "model", tmp_path / "output" / "data"]
    folders[0].mkdir()
    (folders[0] / "old.txt").write_text("x")
    code = (
        "import os, sys; from pathlib import Path; from ftkit.cloud.job_user import drop_root;"
        "print(drop_root([Path(p) for p in sys.argv[1:]], {'FTKIT_RUN_AS': '4321:4322'}), os.getuid(), os.getgid(),"
        " os.environ['HOME'])"
    )
    out = subprocess.run([sys.executable, "-c", code, *map(str, folders)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["(4321,", "4322)", "4321", "4322", "/tmp"]
    for path in (folders[0], folders[0] / "old.txt", folders[1]):
        assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4322), path
