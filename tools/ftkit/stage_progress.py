"""One progress display per training stage, built from the history file the training process writes.

The training process appends every trainer log record to the stage's history
(`ftkit.engines.trainer_callbacks.HistoryLog`, each with the trainer's `max_steps`). `HistoryTail` reads the lines
added since the last read; `advance` folds a record into a `StageProgress` (steps done and total, last loss,
tokens/s or s/step, ETA): pure, so the arithmetic is tested without a run. `describe` is the text both displays
show: a rich Progress task on a terminal, plain lines on a pipe (CI logs: on each new record, at most one every
`PLAIN_EVERY_S` seconds, and the last one unless it repeats the line before). `HistoryWatcher` polls the file on a
thread while the stage trains.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

PLAIN_EVERY_S = 15.0  # a plain line at most this often (a full run logs every step for hours)
POLL_S = 1.0
TOKEN_COUNTERS = ("tokens/total", "num_tokens")  # cumulative tokens seen: Axolotl's, TRL's


@dataclass(frozen=True)
class StageProgress:
    """What the display shows of one stage. `anchor_*`: the first training record read, which rates start from."""

    step: int = 0
    total: int | None = None
    loss: float | None = None
    eval_loss: float | None = None
    tokens: float | None = None
    last_at: float | None = None
    anchor_at: float | None = None
    anchor_step: int = 0
    anchor_tokens: float | None = None
    records: int = 0
    finished: bool = False

    @property
    def seconds_per_step(self) -> float | None:
        if self.anchor_at is None or self.last_at is None or self.step <= self.anchor_step:
            return None
        return (self.last_at - self.anchor_at) / (self.step - self.anchor_step)

    @property
    def tokens_per_second(self) -> float | None:
        if None in (self.tokens, self.anchor_tokens, self.anchor_at, self.last_at):
            return None
        seconds = self.last_at - self.anchor_at  # type: ignore[operator]
        return (self.tokens - self.anchor_tokens) / seconds if seconds > 0 else None  # type: ignore[operator]

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds left at the measured pace, counted from the last record (less the time since, with `now`)."""
        pace = self.seconds_per_step
        if self.finished or (self.total is not None and self.step >= self.total):
            return 0.0
        if pace is None or self.total is None or self.last_at is None:
            return None
        left = (self.total - self.step) * pace
        return max(0.0, left - (now - self.last_at)) if now is not None else left


def advance(state: StageProgress, record: dict[str, Any], now: float) -> StageProgress:
    """`state` after one history record read at time `now` (records of one read share a `now`)."""
    step = int(record.get("step", state.step))
    total = int(record["max_steps"]) if record.get("max_steps") else state.total
    state = replace(state, step=max(step, state.step), total=total, records=state.records + 1)
    if "train_runtime" in record:  # the trainer's summary: training is over
        return replace(state, finished=True)
    if "eval_loss" in record:
        return replace(state, eval_loss=_finite(record["eval_loss"]))
    if "loss" not in record:
        return state
    tokens = next((float(record[k]) for k in TOKEN_COUNTERS if k in record), None)
    state = replace(state, loss=_finite(record["loss"]), tokens=tokens, last_at=now)
    if state.anchor_at is None or state.anchor_at == now:  # a resumed stage's old records all come in one read
        state = replace(state, anchor_at=now, anchor_step=step, anchor_tokens=tokens)
    return state


def describe(state: StageProgress, now: float | None = None) -> str:
    """`loss 2.314 · 63 tok/s · ETA 0:00:45`: the parts that are known."""
    parts = []
    if state.loss is not None:
        parts.append(f"loss {state.loss:.3f}")
    if state.eval_loss is not None:
        parts.append(f"eval loss {state.eval_loss:.3f}")
    if (rate := state.tokens_per_second) is not None:
        parts.append(f"{rate:,.0f} tok/s")
    elif (pace := state.seconds_per_step) is not None:
        parts.append(f"{pace:.1f} s/step")
    ended = state.finished or (state.total is not None and state.step >= state.total)
    if (eta := state.eta_seconds(now)) is not None and not ended:
        parts.append(f"ETA {clock(eta)}")
    return " · ".join(parts)


def plain_line(stage: str, state: StageProgress, now: float | None = None) -> str:
    """`sft: step 6/12 · loss 2.314 · 63 tok/s · ETA 0:00:45`: one line for a log that is not a terminal."""
    steps = f"step {state.step}/{state.total}" if state.total else f"step {state.step}"
    return " · ".join(p for p in (f"{stage}: {steps}", describe(state, now)) if p)


def clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


class HistoryTail:
    """The records appended to a JSONL file since the last `read`; a file that was emptied or replaced (a fresh
    start) is read from its beginning again. A line still being written is left for the next read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def read(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self._offset:
            self._offset = 0
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        records = []
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records


class HistoryWatcher:
    """Polls a stage's history every `POLL_S` on a daemon thread and calls `on_change(state)` after each read
    that brought records; `stop` reads a last time."""

    def __init__(self, path: Path, on_change: Callable[[StageProgress], None], clock: Callable[[], float]) -> None:
        self.tail = HistoryTail(path)
        self.state = StageProgress()
        self._on_change, self._clock = on_change, clock
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ftkit-history", daemon=True)

    def start(self) -> HistoryWatcher:
        self._thread.start()
        return self

    def poll(self) -> StageProgress:
        records, now = self.tail.read(), self._clock()
        for record in records:
            self.state = advance(self.state, record, now)
        if records:
            self._on_change(self.state)
        return self.state

    def stop(self) -> StageProgress:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.poll()

    def _loop(self) -> None:
        while not self._stopped.wait(POLL_S):
            try:
                self.poll()
            except Exception:  # a display must never end a run
                continue


class StageDisplay:
    """Shows stages' progress: a rich Progress task per stage on a terminal (`live`), else plain lines through
    `say`. `watch(stage, history)` starts a stage's watcher; `finish(stage)` stops it."""

    def __init__(
        self, progress: Any, say: Callable[[str], None], live: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.progress, self.say, self.live, self.clock = progress, say, live, clock
        self.tasks: dict[str, Any] = {}
        self.watchers: dict[str, HistoryWatcher] = {}
        self._printed: dict[str, tuple[float, str]] = {}  # stage -> (time, text) of its last plain line

    def watch(self, stage: str, history: Path, task: Any = None) -> None:
        """Show `stage` from `history`: in the rich Progress `task` (a new one when None) on a terminal."""
        self.finish(stage)
        if self.live:
            self.tasks[stage] = self.progress.add_task(stage, total=None, stats="") if task is None else task
        self.watchers[stage] = HistoryWatcher(history, lambda s: self.show(stage, s), self.clock).start()

    def show(self, stage: str, state: StageProgress, last: bool = False) -> None:
        now = self.clock()
        if self.live:
            self.progress.update(self.tasks[stage], completed=state.step, total=state.total, stats=describe(state, now))
            return
        at, before = self._printed.get(stage, (-math.inf, ""))
        line = plain_line(stage, state, now)
        if line != before and (last or now - at >= PLAIN_EVERY_S):
            self._printed[stage] = (now, line)
            self.say(line)

    def finish(self, stage: str) -> StageProgress | None:
        watcher = self.watchers.pop(stage, None)
        if watcher is None:
            return None
        state = watcher.stop()
        self.show(stage, state, last=True)
        return state

    def close(self) -> None:
        for stage in list(self.watchers):
            self.finish(stage)
