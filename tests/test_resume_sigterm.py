"""SIGTERM mid-training saves a checkpoint and exits 6; `--resume` finishes the stage as if nothing happened.

`ftkit recipe run` runs in its own session (as a container's main process does), so the signal reaches only the
runner, which must forward it to the engine's training process. The resumed run's final loss must equal an
uninterrupted run's (same seed, same total steps) and its history must hold every step exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import edit_yaml
from ftkit.cli import main
from ftkit.errors import ExitCode

pytestmark = pytest.mark.slow

STEPS = 10  # optimizer steps of the stage (a margin after STOP_AFTER: the stop must come before the end)
STOP_AFTER = 3  # logged steps before SIGTERM is sent
ENGINES = {
    "trl": ("tiny-trl-sft-dpo", ["sft.trainer.max_steps=10", "sft.dataset.val_fraction=0"]),
    "axolotl": ("tiny-axolotl-sft-dpo", ["sft.max_steps=10"]),
}


def one_stage(tiny_recipe, name: str) -> None:  # type: ignore[no-untyped-def]
    """The fixture recipe cut to its SFT stage, no merge, a bound the short run meets."""
    rdir = tiny_recipe(name)
    edit_yaml(rdir / "recipe.yaml", lambda d: d.update(stages=d["stages"][:1], export={"merge": False}))
    bound = {"train_loss_drop": {"min": 0.01, "source": "estimate"}}
    edit_yaml(rdir / "expected-metrics.yaml", lambda d: d.update(profiles={"smoke": {"sft": bound}}))


def train_losses(history: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    return [(int(r["step"]), r["loss"]) for r in rows if "loss" in r]


def stop_after(history: Path, proc: subprocess.Popen[bytes], output: list[str], timeout: float = 300) -> None:
    """SIGTERM once STOP_AFTER steps are logged; then collect the output until the process exits."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if history.is_file() and len(train_losses(history)) >= STOP_AFTER:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    output.append(proc.communicate(timeout=timeout)[0].decode())


@pytest.mark.parametrize("engine", ["trl", "axolotl"])
def test_sigterm_checkpoints_and_resume_matches_an_uninterrupted_run(engine: str, tiny_recipe, tmp_path: Path):  # type: ignore[no-untyped-def]
    name, sets = ENGINES[engine]
    one_stage(tiny_recipe, name)
    set_args = [arg for s in sets for arg in ("--set", s)]

    # The run that SIGTERM stops after a few steps (checkpoints in their own dir), in its own session as a
    # container's main process is; a thread sends the signal while this one makes the uninterrupted run.
    ckpt = tmp_path / "ckpt"
    cmd = [sys.executable, "-m", "ftkit", "recipe", "run", name, "--runs-dir", str(tmp_path / "runs"),
           "--checkpoint-dir", str(ckpt), *set_args]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    output: list[str] = []
    stopper = threading.Thread(target=stop_after, args=(ckpt / "sft" / "history.jsonl", proc, output))
    stopper.start()

    assert main(["recipe", "run", name, "--runs-dir", str(tmp_path / "base"), *set_args]) == 0
    [base_dir] = (tmp_path / "base" / name).iterdir()
    base = train_losses(base_dir / "sft" / "history.jsonl")
    assert [s for s, _ in base] == list(range(1, STEPS + 1))

    stopper.join(timeout=300)
    out = "".join(output)
    assert proc.returncode == ExitCode.INTERRUPTED == 6, out[-3000:]
    assert "--resume" in out

    [run_dir] = (tmp_path / "runs" / name).iterdir()
    stopped = json.loads((run_dir / "metrics.json").read_text())
    assert stopped["status"] == "interrupted"
    assert json.loads((ckpt / "metrics.json").read_text())["status"] == "interrupted", "mirrored beside checkpoints"
    [stop] = stopped["interruptions"]
    assert stop["stage"] == "sft" and stop["signal"] == "SIGTERM"
    saved = Path(stop["checkpoint"])
    assert saved.parent == ckpt / "sft" and saved.name == f"checkpoint-{stop['step']}"
    assert STOP_AFTER <= stop["step"] < STEPS
    for f in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "adapter_model.safetensors"):
        assert (saved / f).is_file(), f
    assert [s for s, _ in train_losses(ckpt / "sft" / "history.jsonl")] == list(range(1, stop["step"] + 1))

    # Resume: the stage continues from the checkpoint and ends where the uninterrupted run ended.
    assert main(["recipe", "run", "--resume", str(run_dir)]) == 0
    done = json.loads((run_dir / "metrics.json").read_text())
    assert done["status"] == "passed"
    assert done["interruptions"] == stopped["interruptions"]
    [resumed] = done["resumes"]
    assert resumed["stage"] == "sft" and resumed["step"] == stop["step"] and resumed["checkpoint"] == str(saved)
    first, second = done["stages"]["sft"]["attempts"]
    assert first["interrupted"]["step"] == stop["step"] and second["resumed_from"] == str(saved)
    assert done["stages"]["sft"]["steps"] == STEPS
    # Throughput over both attempts: their tokens add up to the uninterrupted run's (each step trained once, whether
    # the engine's counter starts again or goes on from the checkpoint) over both attempts' training seconds.
    [whole] = json.loads((base_dir / "metrics.json").read_text())["stages"]["sft"]["attempts"]
    assert whole["tokens"] > 0 and first["tokens"] + second["tokens"] == whole["tokens"]
    seconds = first["train_seconds"] + second["train_seconds"]
    assert done["stages"]["sft"]["train_runtime_s"] == pytest.approx(seconds, abs=1e-3)
    assert done["stages"]["sft"]["tokens_per_second"] == pytest.approx(whole["tokens"] / seconds)
    after = train_losses(ckpt / "sft" / "history.jsonl")
    assert [s for s, _ in after] == list(range(1, STEPS + 1)), "every step logged exactly once"
    assert after[-1][1] == pytest.approx(base[-1][1], rel=0.01)
    assert [loss for _, loss in after] == pytest.approx([loss for _, loss in base], rel=1e-4), "the same curve"
    assert "ftkit: resumed" in (run_dir / "sft" / "train.log").read_text()
    assert (ckpt / "sft" / "adapter_config.json").is_file(), "the final adapter is in the checkpoint dir"
