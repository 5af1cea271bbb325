"""Inside a training process: every trainer log record to a history file, and a clean stop on SIGTERM.

Both engines add the same two callbacks (`ftkit.engines.trl_train`, `ftkit.engines.axolotl_plugin`). On SIGTERM the
handler only sets a flag; at the end of the current optimizer step `GracefulStop` saves a full checkpoint and stops,
and the process exits with `ExitCode.INTERRUPTED` (6). The stop in full: docs/resume-and-doctor.md,
"`engines/trainer_callbacks.py`: a clean stop".

Imported only in training processes (it imports transformers).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ftkit.engines.forward_sigterm import StopRequest
from ftkit.errors import ExitCode

INTERRUPTED_EXIT = int(ExitCode.INTERRUPTED)


class HistoryLog(TrainerCallback):
    """Appends every log record (with its step, the run's max_steps, and peak CUDA memory on a GPU) to a JSONL file,
    on rank 0."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        import torch

        rec = {"step": float(state.global_step)}
        rec |= {k: float(v) for k, v in logs.items() if isinstance(v, int | float)}
        if max_steps := getattr(state, "max_steps", 0):  # the runner shows steps done of this (ftkit.stage_progress)
            rec["max_steps"] = float(max_steps)
        if torch.cuda.is_available():
            rec["memory/max_allocated (GiB)"] = torch.cuda.max_memory_allocated() / 2**30
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")


class GracefulStop(TrainerCallback):
    """Save a checkpoint and stop at the end of the step during which SIGTERM came. `stopped_at` is that step.
    The flag is a `ftkit.engines.forward_sigterm.StopRequest` installed when the training process starts."""

    def __init__(self, flag: StopRequest) -> None:
        self.flag = flag
        self.stopped_at: int | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        control.should_training_stop = False  # a control state restored from our own checkpoint would stop at once

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not _any_rank(self.flag.requested, args) or state.global_step >= state.max_steps:
            return  # the last step ends the stage anyway: let it finish and save normally
        control.should_log = True  # the loss since the last log is not lost
        control.should_save = True
        control.should_training_stop = True
        self.stopped_at = state.global_step

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.stopped_at is not None and state.is_world_process_zero:
            print(f"ftkit: checkpoint-{state.global_step} saved in {args.output_dir}; stopping", flush=True)


def _any_rank(flag: bool, args: Any) -> bool:
    """The flag, or-ed over all ranks when training is distributed (every rank calls this at every step end)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    import torch

    value = torch.tensor([1.0 if flag else 0.0], device=args.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def callbacks(history: Path, flag: StopRequest) -> tuple[HistoryLog, GracefulStop]:
    return HistoryLog(history), GracefulStop(flag)


def exit_if_stopped(stop: GracefulStop) -> None:
    """After `trainer.train()` returns: leave with `INTERRUPTED_EXIT` if it stopped early on SIGTERM."""
    if stop.stopped_at is not None:
        print(f"ftkit: stopped at step {stop.stopped_at} on {stop.flag.signal}; resume from the checkpoint", flush=True)
        sys.exit(INTERRUPTED_EXIT)
