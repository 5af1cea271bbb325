"""The runner's stop/resume bookkeeping, with an engine that trains nothing (fast): which stages are skipped,
which resume and from where, what metrics.json records, and what a resume refuses.

`FakeEngine` and `fake_merges` are also used by tests/test_cloud_entrypoint.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from ftkit.cli import main
from ftkit.engines.base import ProcessResult, StageContext, run_logged
from ftkit.engines.trl import TrlEngine
from ftkit.errors import ExitCode
from ftkit.recipes.resume import checkpoint_step, last_checkpoint, trim_history

RECIPE = "tiny-trl-sft-dpo"


class FakeEngine(TrlEngine):
    """Logs a falling loss (and, for DPO, a rising margin) per step; at `stop_at[stage]` it saves a checkpoint and
    exits as a SIGTERM'd training process does (code 6); `on_train` runs first (e.g. to send a signal)."""

    def __init__(self) -> None:
        self.stop_at: dict[str, int] = {}
        self.calls: list[tuple[str, int]] = []  # (stage, step it started from)
        self.on_train: Callable[[str], None] | None = None

    def train(
        self, config_path: Path, ctx: StageContext, on_progress: Any = None, append_log: bool = False
    ) -> ProcessResult:
        cfg = yaml.safe_load(config_path.read_text())
        resume = cfg["trainer"].get("resume_from_checkpoint")
        start = checkpoint_step(Path(resume)) if resume else 0
        self.calls.append((ctx.stage, start))
        if self.on_train:
            self.on_train(ctx.stage)
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        with ctx.log_path.open("a" if append_log else "w") as log:
            log.write(f"fake {ctx.stage} from {start}\n")
        with ctx.history_path.open("a") as fh:
            for step in range(start + 1, int(cfg["trainer"]["max_steps"]) + 1):
                fh.write(json.dumps({"step": step, "loss": 3.0 / step, "rewards/margins": 0.1 * step,
                                     "rewards/accuracies": 1.0}) + "\n")  # fmt: skip
                if step == self.stop_at.get(ctx.stage):
                    ckpt = ctx.output_dir / f"checkpoint-{step}"
                    ckpt.mkdir()
                    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
                    fh.write(json.dumps({"step": step, "train_runtime": 1.0}) + "\n")
                    return ProcessResult(int(ExitCode.INTERRUPTED), 2**20, 0.5)
            fh.write(json.dumps({"step": step, "train_runtime": 2.0}) + "\n")
        (ctx.output_dir / "adapter_config.json").write_text("{}")
        return ProcessResult(0, 2**20, 1.0)


@pytest.fixture
def fake(tiny_recipe, monkeypatch: pytest.MonkeyPatch) -> FakeEngine:  # type: ignore[no-untyped-def]
    tiny_recipe(RECIPE)
    engine = FakeEngine()
    monkeypatch.setattr("ftkit.recipes.run.get_engine", lambda name: engine)
    fake_merges(monkeypatch)
    return engine


def fake_merges(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace merge (and the model card) with a stand-in that writes a config.json; returns the merged stages."""
    merged: list[str] = []

    def merge(engine: Any, resolved: Any, ctx: StageContext, name: str, plan: Any, summary: dict, events: Any) -> Path:
        out = ctx.stage_dir / "merged"
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_text("weights")
        summary["merged_dir"] = str(out)
        merged.append(name)
        return out

    monkeypatch.setattr("ftkit.recipes.run._merge_stage", merge)
    monkeypatch.setattr("ftkit.recipes.run.write_card", lambda loaded, metrics, *a, **k: Path("README.md"))
    return merged


def run(runs: Path, *extra: str) -> int:
    return main(["recipe", "run", RECIPE, "--runs-dir", str(runs), *extra])


def only(runs: Path) -> Path:
    [d] = (runs / RECIPE).iterdir()
    return d


def metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())


def steps(history: Path) -> list[int]:
    rows = [json.loads(line) for line in history.read_text().splitlines()]
    return [int(r["step"]) for r in rows if "loss" in r]


def test_resume_skips_finished_stages_and_continues_the_stopped_one_from_its_checkpoint(fake, tmp_path: Path):  # type: ignore[no-untyped-def]
    fake.stop_at = {"dpo": 5}
    assert run(tmp_path / "runs") == ExitCode.INTERRUPTED
    run_dir = only(tmp_path / "runs")
    stopped = metrics(run_dir)
    assert stopped["status"] == "interrupted"
    assert stopped["stages"]["sft"]["status"] == "done" and stopped["stages"]["dpo"]["status"] == "interrupted"
    [stop] = stopped["interruptions"]
    assert stop["stage"] == "dpo" and stop["step"] == 5 and stop["checkpoint"].endswith("dpo/output/checkpoint-5")

    fake.stop_at = {}
    assert main(["recipe", "run", "--resume", str(run_dir)]) == 0
    assert fake.calls == [("sft", 0), ("dpo", 0), ("dpo", 5)], "sft trained once; dpo resumed at step 5"
    done = metrics(run_dir)
    assert done["status"] == "passed"
    assert done["stages"]["sft"] == stopped["stages"]["sft"], "the finished stage's metrics are kept as they were"
    [resume] = done["resumes"]
    assert resume["skipped_stages"] == ["sft"] and resume["stage"] == "dpo" and resume["step"] == 5
    dpo = done["stages"]["dpo"]
    assert [a.get("resumed_from") for a in dpo["attempts"]] == [None, stop["checkpoint"]]
    assert dpo["steps"] == 12 and steps(run_dir / "dpo" / "history.jsonl") == list(range(1, 13))
    assert (
        yaml.safe_load((run_dir / "resolved" / "dpo.yaml").read_text())["trainer"]["resume_from_checkpoint"]
        == (stop["checkpoint"])
    )
    changes = yaml.safe_load((run_dir / "resolved" / "dpo.changes.yaml").read_text())
    assert any(c["origin"].startswith("resume: checkpoint-5") for c in changes)
    assert (run_dir / "dpo" / "train.log").read_text() == "fake dpo from 0\nfake dpo from 5\n", "log appended"


def test_sigterm_between_stages_stops_before_the_next_one(fake, tmp_path: Path):  # type: ignore[no-untyped-def]
    fake.on_train = lambda stage: os.kill(os.getpid(), signal.SIGTERM) if stage == "sft" else None
    assert run(tmp_path / "runs") == ExitCode.INTERRUPTED
    run_dir = only(tmp_path / "runs")
    stopped = metrics(run_dir)
    assert stopped["stages"]["sft"]["status"] == "done" and "dpo" not in stopped["stages"]
    assert stopped["interruptions"][0] | {"at": None} == {
        "stage": "dpo", "signal": "SIGTERM", "at": None, "checkpoint": None, "step": None
    }  # fmt: skip
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "the handler is removed when the run ends"

    fake.on_train = None
    assert main(["recipe", "run", "--resume", str(run_dir)]) == 0
    assert fake.calls == [("sft", 0), ("dpo", 0)]


def test_resume_refuses_other_settings_a_finished_run_and_a_dir_without_metrics(fake, tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    fake.stop_at = {"sft": 3}
    assert run(tmp_path / "runs", "--set", "sft.trainer.max_steps=10") == ExitCode.INTERRUPTED
    run_dir = only(tmp_path / "runs")
    capsys.readouterr()
    code = main(["recipe", "run", "--resume", str(run_dir), "--set", "sft.trainer.max_steps=20"])
    assert code == ExitCode.USAGE and "started with sets" in capsys.readouterr().err
    assert main(["recipe", "run", "--resume", str(run_dir), "--profile", "full"]) == ExitCode.USAGE

    fake.stop_at = {}
    assert main(["recipe", "run", "--resume", str(run_dir)]) == 0
    assert fake.calls[-1] == ("dpo", 0) and ("sft", 3) in fake.calls
    capsys.readouterr()
    assert main(["recipe", "run", "--resume", str(run_dir)]) == ExitCode.USAGE
    assert "training finished" in capsys.readouterr().err
    assert main(["recipe", "run", "--resume", str(tmp_path)]) == ExitCode.USAGE
    assert "no metrics.json" in capsys.readouterr().err


def test_a_new_run_refuses_a_checkpoint_dir_that_holds_another_runs_checkpoints(fake, tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    old = tmp_path / "ckpt" / "sft" / "checkpoint-4"
    old.mkdir(parents=True)
    (old / "trainer_state.json").write_text('{"global_step": 4}')
    assert run(tmp_path / "runs", "--checkpoint-dir", str(tmp_path / "ckpt")) == ExitCode.USAGE
    assert "checkpoint of an earlier run" in capsys.readouterr().err
    assert fake.calls == []


def test_checkpoint_helpers(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path / "missing") is None
    for step, complete in ((2, True), (10, True), (12, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (tmp_path / "checkpoint-x").mkdir()
    found = last_checkpoint(tmp_path)
    assert found == tmp_path / "checkpoint-10", "numeric order; a checkpoint without trainer_state.json is partial"
    assert found is not None and checkpoint_step(found) == 10
    history = tmp_path / "history.jsonl"
    rows = [{"step": 1, "loss": 2}, {"step": 2, "loss": 1}, {"step": 2, "train_runtime": 3}, {"step": 3, "loss": 0.5}]
    history.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert trim_history(history, 2) == 2
    assert [json.loads(line) for line in history.read_text().splitlines()] == rows[:2]


def test_run_logged_forwards_sigterm_to_the_child_and_keeps_running(tmp_path: Path) -> None:
    child = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); time.sleep(30)"
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    result = run_logged([sys.executable, "-c", child], tmp_path / "log")
    timer.join()
    # 7: the child's handler ran; -15: the signal came before the child installed it. Either way it was forwarded
    # (without forwarding the child sleeps its 30 s and exits 0).
    assert result.returncode in (7, -signal.SIGTERM) and result.signal == "SIGTERM" and result.wall_seconds < 20
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True).returncode == 0
