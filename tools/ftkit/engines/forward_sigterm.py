"""SIGTERM in the runner's process: remember that a stop was asked for, and pass it on to the training process.

A cloud machine about to go away sends SIGTERM, then SIGKILL. The runner forwards it to the training process (which
checkpoints and exits with `ExitCode.INTERRUPTED`, see `ftkit.engines.trainer_callbacks`), records the interruption in
metrics.json and exits with the same code. Handlers install only from the main thread; elsewhere both classes do
nothing. In full: docs/resume-and-doctor.md, "`engines/forward_sigterm.py`: SIGTERM in the runner".
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any, Self

STOP_SIGNALS = (signal.SIGTERM,)


def _can_install() -> bool:
    return threading.current_thread() is threading.main_thread()


class _SignalScope:
    """Installs `_handle` for STOP_SIGNALS while entered (main thread only), then puts the previous ones back."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        if _can_install():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            # None: the handler was not installed from Python; the default is the closest we can put back.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()


class StopRequest(_SignalScope):
    """While entered: SIGTERM sets `signal` (its name) instead of ending the process."""

    def __init__(self) -> None:
        super().__init__()
        self.signal: str | None = None
        self.announce = ""

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum).name
            if self.announce:
                print(f"ftkit: {self.signal}: {self.announce}", flush=True)

    def install(self, announce: str = "") -> StopRequest:
        """Install for the rest of the process (a training process: `ftkit.engines.trainer_callbacks`)."""
        self.announce = announce
        return self.__enter__()


def rank_processes(pid: int) -> list[int]:
    """The training ranks a launcher (torchrun under Axolotl's CLI) started below `pid`: descendants with LOCAL_RANK
    in their environment whose parent has none (not the ranks' own children). [] when there are none (yet)."""
    import psutil

    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    ranks = []
    for proc in descendants:
        try:
            parent = proc.parent()
            if "LOCAL_RANK" in proc.environ() and (parent is None or "LOCAL_RANK" not in parent.environ()):
                ranks.append(proc.pid)
        except psutil.Error:  # gone, or not ours to read
            continue
    return ranks


class ForwardSignals(_SignalScope):
    """While a child process runs: SIGTERM to this process is sent on to the child, then to the handler that was
    installed before (a `StopRequest`), so the runner also knows. `received` names the signal, if one came.

    With `to_ranks` (the child is a launcher of several training processes), the signal goes to the ranks
    themselves, not to the launcher: torchrun would pass it on but SIGKILL the ranks 30 s later, too soon for a
    checkpoint of a large model; signalled directly, each rank saves and exits, and the launcher then ends."""

    def __init__(self, to_ranks: bool = False) -> None:
        super().__init__()
        self.received: str | None = None
        self._pid: int | None = None
        self._to_ranks = to_ranks

    def attach(self, pid: int) -> None:
        """The child to forward to; a signal that came while it was being started is sent to it now."""
        self._pid = pid
        if self.received:
            self._send(signal.Signals[self.received])

    def detach(self) -> None:
        """The child was reaped: its pid may be reused, so nothing more is sent to it."""
        self._pid = None

    def _send(self, sig: int) -> None:
        if self._pid is None:
            return
        targets = (rank_processes(self._pid) if self._to_ranks else []) or [self._pid]  # no ranks yet: the launcher
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = self.received or signal.Signals(signum).name
        self._send(signum)
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        super().__exit__(*exc)
        self._pid = None
