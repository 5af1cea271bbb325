"""The runner's stop/resume bookkeeping, with an engine that trains nothing (fast): which stages are skipped,
which resume and from where, what metrics.json records, and what a resume refuses.

The engine is `fakes.FakeEngine` (the `fake_engine` fixture of conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from fakes import SECONDS_PER_STEP, START_SECONDS, TOKENS_PER_STEP, FakeEngine, metrics, only, run
from ftkit.cli import main
from ftkit.engines.base import run_logged
from ftkit.errors import ExitCode
from ftkit.export.model_card import card_facts_from_run, render_model_card
from ftkit.pipeline.metrics_gate import attempt_work, throughput
from ftkit.pipeline.resume import checkpoint_step, last_checkpoint, trim_history, unique_evals


def steps(history: Path) -> list[int]:
    rows = [json.loads(line) for line in history.read_text().splitlines()]
    return [int(r["step"]) for r in rows if "loss" in r]


@pytest.mark.model
def test_resume_skips_finished_stages_and_continues_the_stopped_one_from_its_checkpoint(fake_engine, tmp_path: Path):  # type: ignore[no-untyped-def]
    fake_engine.stop_at = {"dpo": 5}
    assert run(tmp_path / "runs") == ExitCode.INTERRUPTED
    run_dir = only(tmp_path / "runs")
    stopped = metrics(run_dir)
    assert stopped["status"] == "interrupted"
    assert stopped["stages"]["sft"]["status"] == "done" and stopped["stages"]["dpo"]["status"] == "interrupted"
    [stop] = stopped["interruptions"]
    assert stop["stage"] == "dpo" and stop["step"] == 5 and stop["checkpoint"].endswith("dpo/output/checkpoint-5")

    fake_engine.stop_at = {}
    assert main(["recipe", "run", "--resume", str(run_dir)]) == 0
    assert fake_engine.calls == [("sft", 0), ("dpo", 0), ("dpo", 5)], "sft trained once; dpo resumed at step 5"
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


@pytest.mark.model
def test_sigterm_between_stages_stops_before_the_next_one(fake_engine, tmp_path: Path):  # type: ignore[no-untyped-def]
    fake_engine.on_train = lambda stage: os.kill(os.getpid(), signal.SIGTERM) if stage == "sft" else None
    assert run(tmp_path / "runs") == ExitCode.INTERRUPTED
    run_dir = only(tmp_path / "runs")
    stopped = metrics(run_dir)
    assert stopped["stages"]["sft"]["status"] == "done" and "dpo" not in stopped["stages"]
    assert stopped["interruptions"][0] | {"at": None} == {
        "stage": "dpo", "signal": "SIGTERM", "at": None, "checkpoint": None, "step": None
    }  # fmt: skip
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "the handler is removed when the run ends"

    fake_engine.on_train = None
    assert main(["recipe", "run", "--resume", str(run_dir)]) == 0
    assert fake_engine.calls == [("sft", 0), ("dpo", 0)]


@pytest.mark.model
def test_resume_refuses_other_settings_a_finished_run_and_a_dir_without_metrics(fake_engine, tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    fake_engine.stop_at = {"sft": 3}
    assert run(tmp_path / "runs", "--set", "sft.trainer.max_steps=10") == ExitCode.INTERRUPTED
    run_dir = only(tmp_path / "runs")
    capsys.readouterr()
    code = main(["recipe", "run", "--resume", str(run_dir), "--set", "sft.trainer.max_steps=20"])
    assert code == ExitCode.USAGE and "started with sets" in capsys.readouterr().err
    assert main(["recipe", "run", "--resume", str(run_dir), "--profile", "full"]) == ExitCode.USAGE

    fake_engine.stop_at = {}
    assert main(["recipe", "run", "--resume", str(run_dir)]) == 0
    assert fake_engine.calls[-1] == ("dpo", 0) and ("sft", 3) in fake_engine.calls
    capsys.readouterr()
    assert main(["recipe", "run", "--resume", str(run_dir)]) == ExitCode.USAGE
    assert "training finished" in capsys.readouterr().err
    assert main(["recipe", "run", "--resume", str(tmp_path)]) == ExitCode.USAGE
    assert "no metrics.json" in capsys.readouterr().err


@pytest.mark.model
def test_a_new_run_refuses_a_checkpoint_dir_that_holds_another_runs_checkpoints(fake_engine, tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    old = tmp_path / "ckpt" / "sft" / "checkpoint-4"
    old.mkdir(parents=True)
    (old / "trainer_state.json").write_text('{"global_step": 4}')
    (tmp_path / "ckpt" / "metrics.json").write_text('{"status": "interrupted"}')  # the other run's state
    assert run(tmp_path / "runs", "--checkpoint-dir", str(tmp_path / "ckpt")) == ExitCode.USAGE
    assert "checkpoint of an earlier run" in capsys.readouterr().err
    assert fake_engine.calls == []
    refused = metrics(only(tmp_path / "runs"))
    assert refused["status"] == "refused" and refused["refused"]["check"] == "checkpoints"
    assert (tmp_path / "ckpt" / "metrics.json").read_text() == '{"status": "interrupted"}', "the other run's state"


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


@pytest.mark.model
@pytest.mark.parametrize("counter", ["num_tokens", "tokens/total"])
def test_tokens_per_second_of_a_resumed_stage_counts_the_tokens_and_seconds_of_every_attempt(
    fake_engine: FakeEngine, tmp_path: Path, counter: str
) -> None:
    """dpo: 12 steps of TOKENS_PER_STEP tokens. Uninterrupted, one attempt: START + 12 steps of training seconds.
    Stopped at step 5 and resumed: two attempts, each with its start, so 1200 tokens over 2 * START + 12 steps."""
    fake_engine.token_key = counter
    assert run(tmp_path / "whole") == 0
    whole = metrics(only(tmp_path / "whole"))["stages"]["dpo"]
    assert whole["tokens_per_second"] == pytest.approx(12 * TOKENS_PER_STEP / (START_SECONDS + 12 * SECONDS_PER_STEP))

    fake_engine.stop_at = {"dpo": 5}
    assert run(tmp_path / "runs") == ExitCode.INTERRUPTED
    fake_engine.stop_at = {}
    assert main(["recipe", "run", "--resume", str(only(tmp_path / "runs"))]) == 0
    dpo = metrics(only(tmp_path / "runs"))["stages"]["dpo"]
    first, second = dpo["attempts"]
    assert first["tokens"] == 5 * TOKENS_PER_STEP and second["tokens"] == 7 * TOKENS_PER_STEP, "each step once"
    assert first["train_seconds"] == START_SECONDS + 5 * SECONDS_PER_STEP
    assert second["train_seconds"] == START_SECONDS + 7 * SECONDS_PER_STEP
    seconds = 2 * START_SECONDS + 12 * SECONDS_PER_STEP
    assert dpo["train_runtime_s"] == pytest.approx(seconds), "the time before the stop counts"
    assert dpo["tokens_per_second"] == pytest.approx(12 * TOKENS_PER_STEP / seconds)


def test_the_work_of_an_attempt_and_the_throughput_over_attempts():
    kept = [{"step": 1, "loss": 2.0, "num_tokens": 90, "tokens/total": 90}, {"step": 2, "loss": 1.0, "num_tokens": 200}]
    trl = [{"step": 3, "loss": 0.5, "num_tokens": 120}, {"step": 3, "train_runtime": 4.0}]
    assert attempt_work(trl, kept) == {"train_seconds": 4.0, "tokens": 120}, "TRL counts from 0 in each process"
    axolotl = [{"step": 3, "loss": 0.5, "tokens/total": 210}, {"step": 3, "train_runtime": 4.0}]
    assert attempt_work(axolotl, kept) == {"train_seconds": 4.0, "tokens": 120}, "Axolotl goes on from the checkpoint"
    crashed = [{"step": 3, "loss": 0.5, "num_tokens": 120}]
    assert attempt_work(crashed, kept) == {"train_seconds": None, "tokens": 120}
    attempts = [{"train_seconds": 6.0, "tokens": 300}, {"train_seconds": 4.0, "tokens": 120},
                {"train_seconds": None, "tokens": 120}]  # fmt: skip
    assert throughput(attempts) == {"tokens_per_second": 42.0, "train_runtime_s": 10.0}
    assert throughput([{"train_seconds": 3.0, "tokens": None}]) == {"tokens_per_second": None, "train_runtime_s": 3.0}


@pytest.mark.model
def test_each_evaluation_is_logged_once_when_a_resumed_process_evaluates_the_checkpoint_again(
    fake_engine: FakeEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # evaluations at 0, 3, 6; the stop's checkpoint is at step 6
    fake_engine.eval_every, fake_engine.stop_at = 3, {"dpo": 6}
    assert run(tmp_path / "runs") == ExitCode.INTERRUPTED
    run_dir = only(tmp_path / "runs")
    fake_engine.stop_at = {}
    capsys.readouterr()
    assert main(["recipe", "run", "--resume", str(run_dir)]) == 0
    printed = capsys.readouterr()
    assert "1 repeated evaluation(s)" in " ".join((printed.out + printed.err).split())
    for saved in (run_dir / "dpo" / "history.jsonl", run_dir / "dpo" / "history.json"):
        text = saved.read_text()
        rows = json.loads(text) if saved.suffix == ".json" else [json.loads(ln) for ln in text.splitlines()]
        assert [r["step"] for r in rows if "eval_loss" in r] == [0, 3, 6, 9, 12], saved
    assert steps(run_dir / "dpo" / "history.jsonl") == list(range(1, 13))


def test_unique_evals_keeps_the_first_evaluation_of_a_step_and_eval_set_and_every_training_record():
    records = [{"step": 6, "loss": 1.0}, {"step": 6, "eval_loss": 0.9, "eval_runtime": 1.0},
               {"step": 6, "eval_loss": 0.9, "eval_runtime": 2.0}, {"step": 6, "eval_code_loss": 1.2},
               {"step": 7, "loss": 0.8}, {"step": 7, "eval_accuracy": 0.5}, {"step": 7, "train_runtime": 3.0},
               {"step": 7, "eval_code_loss": 1.1}, {"step": 7, "eval_code_loss": 1.1}]  # fmt: skip
    assert unique_evals(records) == [records[0], records[1], *records[3:8]]


@pytest.mark.model
def test_report_and_card_of_a_stopped_and_resumed_run_say_where_it_stopped_and_what_it_resumed_from(
    fake_engine: FakeEngine, tmp_path: Path
) -> None:
    fake_engine.stop_at = {"dpo": 5}
    assert run(tmp_path / "runs") == ExitCode.INTERRUPTED
    run_dir = only(tmp_path / "runs")
    stopped = (run_dir / "report.md").read_text()
    assert "dpo stopped by SIGTERM at step 5, checkpoint saved: `dpo/output/checkpoint-5`" in stopped
    fake_engine.stop_at = {}
    assert main(["recipe", "run", "--resume", str(run_dir)]) == 0
    done = metrics(run_dir)
    report = (run_dir / "report.md").read_text()
    [stop], [resume] = done["interruptions"], done["resumes"]
    assert f"| {stop['at']} | dpo stopped by SIGTERM at step 5, checkpoint saved: `dpo/output/checkpoint-5` |" in report
    assert (f"| {resume['at']} | resumed: dpo continued from `dpo/output/checkpoint-5` at step 5 "
            "(sft finished before: kept) |") in report  # fmt: skip
    assert "tokens/s and wall time count every attempt" in report
    card = render_model_card(card_facts_from_run(done, license_id=None, container=None, datasets=[], methods={}))
    assert "Training was interrupted and resumed" in card
    assert f"- {stop['at']}: dpo stopped by SIGTERM at step 5, checkpoint saved: `dpo/output/checkpoint-5`" in card
    assert f"- {resume['at']}: resumed: dpo continued from `dpo/output/checkpoint-5` at step 5" in card
    whole = tmp_path / "whole"
    assert run(whole) == 0
    assert "## Interruptions" not in (only(whole) / "report.md").read_text()
    untouched = render_model_card(card_facts_from_run(metrics(only(whole)), license_id=None, container=None,
                                                      datasets=[], methods={}))  # fmt: skip
    assert "interrupted" not in untouched
