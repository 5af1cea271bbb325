"""A recipe run's terminal: ftkit's own lines and one progress display per stage; library noise goes to the logs.

Unit tests for the history parser and its ETA arithmetic (`ftkit.stage_progress`) and for the routing of library
output in the runner process (`ftkit.library_output`); one slow test runs the quickest smoke recipe through the
command a user types and reads its terminal.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from ftkit.errors import FtkitError
from ftkit.library_output import RUNNER_LOG, LibraryOutput, route_to
from ftkit.stage_progress import (
    PLAIN_EVERY_S,
    HistoryTail,
    StageDisplay,
    StageProgress,
    advance,
    clock,
    describe,
    plain_line,
)
from rich.console import Console

# What a newcomer's first run printed before (issue 23): each looks like a failure and is none.
NOISE = (
    "_C_mxfp8",
    "Failed to load",
    "_pytree",
    "kernels-community",
    "Setting accelerator",
    "clean_up_tokenization_spaces",
    "Traceback",
)
WARN = re.compile(r"\bwarn", re.IGNORECASE)  # "warning:", "UserWarning", "FutureWarning", "W1207 … warn…"
ERROR = re.compile(r"\berror\b|FAIL", re.IGNORECASE)  # ftkit's own `error:` and `FAIL` only when something failed


def _train(step: int, loss: float, tokens: float | None = None, max_steps: int = 10) -> dict[str, float]:
    record = {"step": float(step), "loss": loss, "max_steps": float(max_steps)}
    return record | ({"tokens/total": tokens} if tokens is not None else {})


def _fold(*timed: tuple[float, dict[str, float]]) -> StageProgress:
    state = StageProgress()
    for now, record in timed:
        state = advance(state, record, now)
    return state


# ------------------------------------------------------------------ the parser and its arithmetic


def test_steps_loss_and_total_come_from_the_records():
    state = _fold((100.0, _train(1, 4.4)), (110.0, _train(2, 3.3)))
    assert (state.step, state.total, state.loss, state.records) == (2, 10, 3.3, 2)


def test_pace_and_eta_count_from_the_first_training_record():
    # steps 1 -> 5 in 40 s: 10 s a step, 5 steps left -> 50 s.
    state = _fold((100.0, _train(1, 4.0)), (120.0, _train(3, 3.0)), (140.0, _train(5, 2.0)))
    assert state.seconds_per_step == pytest.approx(10.0)
    assert state.eta_seconds() == pytest.approx(50.0)
    assert state.eta_seconds(now=150.0) == pytest.approx(40.0)  # 10 s have passed since the last record
    assert state.eta_seconds(now=400.0) == 0.0  # never negative


def test_eta_is_unknown_until_two_steps_are_timed_and_zero_when_finished():
    assert _fold((100.0, _train(1, 4.0))).eta_seconds() is None
    done = _fold((100.0, _train(1, 4.0)), (120.0, _train(10, 1.0)), (121.0, {"step": 10.0, "train_runtime": 99.0}))
    assert done.finished and done.eta_seconds() == 0.0 and "ETA" not in describe(done)


def test_tokens_per_second_from_the_cumulative_counter_else_seconds_per_step():
    state = _fold((100.0, _train(1, 4.0, tokens=350.0)), (110.0, _train(2, 3.0, tokens=1000.0)))
    assert state.tokens_per_second == pytest.approx(65.0)
    assert "65 tok/s" in describe(state)
    trl = _fold((100.0, {"step": 1.0, "loss": 4.0, "num_tokens": 100.0}),
                (104.0, {"step": 2.0, "loss": 3.0, "num_tokens": 300.0}))  # fmt: skip
    assert trl.tokens_per_second == pytest.approx(50.0)
    untimed = _fold((100.0, _train(1, 4.0)), (104.0, _train(3, 3.0)))
    assert untimed.tokens_per_second is None and "2.0 s/step" in describe(untimed)


def test_eval_records_set_the_eval_loss_without_moving_the_pace():
    state = _fold((100.0, _train(1, 4.0)), (130.0, {"step": 1.0, "eval_loss": 3.9}), (140.0, _train(3, 3.0)))
    assert state.eval_loss == 3.9 and state.loss == 3.0 and state.seconds_per_step == pytest.approx(20.0)


def test_a_resumed_stages_old_records_read_at_once_do_not_inflate_the_pace():
    old = [(50.0, _train(step, 4.0 - step / 10)) for step in (1, 2, 3, 4)]  # one read: the same time
    state = _fold(*old, (60.0, _train(5, 3.5)))
    assert state.anchor_step == 4 and state.seconds_per_step == pytest.approx(10.0)


def test_a_non_finite_loss_is_shown_as_unknown_and_the_line_reads_plainly():
    state = _fold((100.0, _train(1, float("nan"))), (110.0, _train(2, 3.25)))
    assert state.loss == 3.25
    assert plain_line("sft", state, now=110.0) == "sft: step 2/10 · loss 3.250 · 10.0 s/step · ETA 0:01:20"
    assert plain_line("sft", StageProgress()) == "sft: step 0"
    assert clock(3725) == "1:02:05"


def test_the_training_process_writes_the_trainers_max_steps_into_each_record(tmp_path: Path):
    from types import SimpleNamespace

    from ftkit.engines.trainer_callbacks import HistoryLog

    HistoryLog(path := tmp_path / "history.jsonl").on_log(
        None, SimpleNamespace(is_world_process_zero=True, global_step=3, max_steps=12), None, logs={"loss": 1.5}
    )
    [record] = HistoryTail(path).read()
    assert record == {"step": 3.0, "loss": 1.5, "max_steps": 12.0} and advance(StageProgress(), record, 0.0).total == 12


def test_history_tail_reads_only_new_complete_lines_and_restarts_on_a_new_file(tmp_path: Path):
    path = tmp_path / "history.jsonl"
    tail = HistoryTail(path)
    assert tail.read() == []  # not there yet
    path.write_text(json.dumps(_train(1, 4.0)) + "\n" + '{"step": 2.0, "lo')
    assert [r["step"] for r in tail.read()] == [1.0]
    with path.open("a") as fh:
        fh.write('ss": 3.0}\n')
    assert tail.read() == [{"step": 2.0, "loss": 3.0}]
    assert tail.read() == []
    path.write_text(json.dumps(_train(1, 9.0)) + "\n")  # emptied and started again
    assert tail.read()[0]["loss"] == 9.0


def test_plain_display_prints_on_new_records_at_most_every_interval_and_always_the_last(tmp_path: Path):
    lines: list[str] = []
    now = [0.0]
    display = StageDisplay(None, lines.append, live=False, clock=lambda: now[0])
    history = tmp_path / "history.jsonl"
    display.watch("sft", history)
    watcher = display.watchers["sft"]
    for step, at in ((1, 1.0), (2, 2.0), (3, PLAIN_EVERY_S + 2.0)):
        now[0] = at
        with history.open("a") as fh:
            fh.write(json.dumps(_train(step, 4.0 - step / 4)) + "\n")
        watcher.poll()
    assert [line.split(" · ")[0] for line in lines] == ["sft: step 1/10", "sft: step 3/10"]  # step 2 came too soon
    now[0] += 1.0
    with history.open("a") as fh:
        fh.write(json.dumps(_train(4, 2.0)) + "\n")
    display.finish("sft")
    assert lines[-1].startswith("sft: step 4/10 · loss 2.000") and not display.watchers


# ------------------------------------------------------------------ library output in the runner process


@pytest.fixture
def last_resort(monkeypatch: pytest.MonkeyPatch) -> logging.Logger:
    """A logger with no handler (torchao's, bitsandbytes'): logging's last resort prints to `sys.stderr`."""
    monkeypatch.setattr(logging, "lastResort", logging._StderrHandler(logging.WARNING))  # type: ignore[attr-defined]
    return logging.Logger("torchao_like")  # outside the logger tree, so pytest's log capture does not see it


def test_library_output_goes_to_the_runner_log_and_ftkits_console_to_the_terminal(
    tmp_path: Path, last_resort: logging.Logger
):
    terminal = io.StringIO()
    ours = Console(file=None, stderr=True)
    lib_logger = logging.getLogger("ftkit_test_lib")
    lib_logger.propagate = False
    lib_logger.addHandler(handler := logging.StreamHandler(sys.stderr))  # bound before the capture, like torch's
    saved = sys.stderr
    sys.stderr = terminal
    try:
        handler.setStream(terminal)
        with LibraryOutput() as library, library.keep(ours):
            last_resort.warning("Failed to load _C_mxfp8.so")
            lib_logger.warning("Setting accelerator to CPU")
            print("a progress bar")
            ours.print("run dir: X")
            log = route_to(tmp_path)  # what came before the run dir is kept
            last_resort.warning("after routing")
        assert route_to(tmp_path) is None  # nothing active any more
        assert sys.stderr is terminal and handler.stream is terminal
    finally:
        sys.stderr = saved
        lib_logger.removeHandler(handler)
    assert terminal.getvalue() == "run dir: X\n"
    assert log == tmp_path / RUNNER_LOG
    text = log.read_text()
    for line in ("Failed to load _C_mxfp8.so", "Setting accelerator to CPU", "a progress bar", "after routing"):
        assert line in text


def test_code_that_redirects_the_stderr_descriptor_still_gets_the_terminals(tmp_path: Path):
    # DeepSpeed's op builder points sys.stderr.fileno() at a file while its compiler probe runs: that must stay fd 2's
    # terminal, else the probe's `cannot find -laio` reaches the terminal.
    with (tmp_path / "terminal").open("w") as terminal:
        saved = sys.stderr
        sys.stderr = terminal
        try:
            with LibraryOutput():
                route_to(tmp_path)
                assert sys.stderr is not terminal and sys.stderr.fileno() == terminal.fileno()
        finally:
            sys.stderr = saved


def test_output_kept_before_any_run_dir_is_dropped_after_our_error_and_shown_after_a_crash(
    last_resort: logging.Logger,
):
    for error, shown in ((FtkitError.one("bad --set"), False), (RuntimeError("crash"), True)):
        terminal = io.StringIO()
        saved = sys.stderr
        sys.stderr = terminal
        try:
            with pytest.raises(type(error)), LibraryOutput():
                last_resort.warning("Failed to load _C_mxfp8.so")
                raise error
        finally:
            sys.stderr = saved
        assert ("Failed to load" in terminal.getvalue()) is shown


def test_verbose_keeps_library_output_on_the_terminal(tmp_path: Path, last_resort: logging.Logger):
    terminal = io.StringIO()
    saved = sys.stderr
    sys.stderr = terminal
    try:
        with LibraryOutput(enabled=False):
            last_resort.warning("Failed to load _C_mxfp8.so")
            assert route_to(tmp_path) is None
    finally:
        sys.stderr = saved
    assert "Failed to load _C_mxfp8.so" in terminal.getvalue() and not (tmp_path / RUNNER_LOG).exists()


# ------------------------------------------------------------------ a failing stage


@pytest.mark.model  # the runner loads the tiny model's tokenizer in the pre-flight
def test_a_failed_stage_shows_its_logs_last_40_lines_and_path_and_keeps_exit_code_4(
    tiny_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):  # type: ignore[no-untyped-def]
    from ftkit.cli import main
    from ftkit.engines.trl import TrlEngine
    from ftkit.errors import ExitCode

    tiny_recipe("tiny-trl-sft-dpo")
    crash = "import sys\nfor i in range(60): print(f'engine line {i}')\nsys.exit(1)"
    monkeypatch.setattr(TrlEngine, "command", lambda self, cfg, ctx: [sys.executable, "-c", crash])
    code = main(["recipe", "run", "tiny-trl-sft-dpo", "--profile", "smoke", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == ExitCode.ENGINE_FAILED
    [run_dir] = list((tmp_path / "tiny-trl-sft-dpo").iterdir())
    assert f"{run_dir / 'sft' / 'train.log'}: " in err and "exited with code 1" in err
    assert "engine line 59" in err and "engine line 20" in err and "engine line 19\n" not in err


# ------------------------------------------------------------------ a real smoke run, as a user types it

QUICKEST = "llama8b-reward-model"  # recipes/smoke-runs.yaml: the shortest wall time (merge and verify included)


def noise_in(terminal: str) -> list[str]:
    """The noise strings (and any `warn…` or `error` word) on a terminal."""
    found = [s for s in NOISE if s in terminal]
    return found + [m.group(0) for pattern in (WARN, ERROR) for m in pattern.finditer(terminal)]


def test_ci_checks_the_default_recipes_terminal_for_every_noise_string():
    script = (ROOT / ".ci" / "run").read_text()
    [pattern] = re.findall(r"grep -nE '([^']+)' \"\$terminal\"", script)
    assert set(pattern.split("|")) == set(NOISE)
    assert 'make recipe NAME=llama8b-qlora-dpo PROFILE=smoke 2>&1 | tee "$terminal"' in script


@pytest.mark.recipe_smoke  # a whole shipped recipe (70 s idle): `make smoke-fork`, `nox -s smoke`; CI greps its run
def test_a_smoke_runs_terminal_holds_our_lines_and_no_library_noise(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tools"), "FTKIT_RECIPES": str(ROOT / "recipes")}
    env.setdefault("FTKIT_CACHE", str(ROOT / ".cache"))
    cmd = [sys.executable, "-m", "ftkit", "recipe", "run", QUICKEST, "--profile", "smoke", "--runs-dir", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)  # 70 s on an idle machine
    terminal = proc.stdout + proc.stderr
    (tmp_path / "terminal.txt").write_text(terminal)  # to read after the test
    assert proc.returncode == 0, terminal
    assert noise_in(terminal) == [], terminal
    [run_dir] = list((tmp_path / QUICKEST).iterdir())
    stage_log = run_dir / "reward" / "train.log"
    assert f"reward: log {stage_log}" in terminal
    assert re.search(r"^reward: step 12/12 · loss \d", terminal, re.MULTILINE), terminal  # the stage's progress
    assert "metrics gate passed" in terminal
    # The noise went somewhere: the training process's into the stage's log, the runner's into runner.log.
    assert "Failed to load" in stage_log.read_text() and "_pytree" in stage_log.read_text()
    assert f"runner log: {run_dir / RUNNER_LOG}" in terminal
    assert "Failed to load" in (run_dir / RUNNER_LOG).read_text()
