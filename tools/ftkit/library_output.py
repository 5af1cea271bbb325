"""What libraries print inside the runner process goes to the run's log file, not the terminal.

`ftkit recipe run` imports transformers, torch, torchao, bitsandbytes, DeepSpeed and Axolotl in its own process
(config validation, the PII gate, merge, export, evaluation). Their warnings, log records and tqdm bars look like
failures on a newcomer's terminal. `LibraryOutput` routes them to a file instead: Python's `sys.stdout` and
`sys.stderr` (print, `warnings`, tqdm, logging's last-resort handler) and every logging handler already writing to
them. Every such line seen in a smoke run is a Python-level write, so no file descriptor is redirected (the swapped
stream's `fileno()` still names the terminal's, for code that redirects it itself). Output is kept in memory until
the run dir exists (`route_to`), then written to `RUNNER_LOG` there. ftkit's own consoles keep the terminal
(`keep`). Which line comes from where: docs/running-recipes.md, "What the terminal shows".
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from ftkit.errors import FtkitError

RUNNER_LOG = "runner.log"  # in the run dir: library output of the runner process (pre-flight, merge, export, eval)

_active: LibraryOutput | None = None


class _Sink(io.TextIOBase):
    """A text stream that buffers until a file is attached, writes to the file, and after `release` passes
    through to the terminal (for handlers and bars that still hold it once the run is over)."""

    def __init__(self, fallback: TextIO) -> None:
        self._lock = threading.Lock()
        self._buffer: io.StringIO | None = io.StringIO()
        self._file: TextIO | None = None
        self._through: TextIO | None = None
        self._fallback = fallback

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        with self._lock:
            target = self._through or self._file or self._buffer
            if target is not None:
                target.write(text)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            for stream in (self._through, self._file):
                if stream is not None:
                    stream.flush()

    def fileno(self) -> int:
        """The terminal's descriptor, as before: code that asks for it works at the descriptor level, e.g.
        DeepSpeed's op builder points it at /dev/null while a compiler probe runs (`cannot find -laio`); handing it
        the log file's descriptor instead let the probe's errors reach the terminal."""
        self.flush()
        return self._fallback.fileno()

    def attach(self, path: Path) -> None:
        with self._lock:
            if self._file is not None or self._through is not None:
                return
            self._file = path.open("a", encoding="utf-8", errors="replace")
            if self._buffer is not None:
                self._file.write(self._buffer.getvalue())
                self._buffer = None
            self._file.flush()

    def release(self, terminal: TextIO, show_kept: bool) -> None:
        """Pass through to `terminal` from now on; output kept in memory (never attached) is shown with
        `show_kept`, else dropped."""
        with self._lock:
            if self._file is not None:
                self._file.close()
            elif self._buffer is not None and show_kept:
                terminal.write(self._buffer.getvalue())
            self._file, self._buffer, self._through = None, None, terminal


class LibraryOutput:
    """Context manager: while active, library output goes to the sink (memory, then `RUNNER_LOG`). Disabled
    (`enabled=False`, `ftkit recipe run --verbose`), it changes nothing."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.terminal_out: TextIO = sys.stdout
        self.terminal_err: TextIO = sys.stderr
        self.path: Path | None = None
        self._sink: _Sink | None = None
        self._rebound: list[tuple[logging.StreamHandler[Any], Any]] = []

    def __enter__(self) -> LibraryOutput:
        global _active
        self.terminal_out, self.terminal_err = sys.stdout, sys.stderr
        if not self.enabled:
            return self
        self._sink = _Sink(self.terminal_err)
        for handler in _stream_handlers():
            if handler.stream in (self.terminal_out, self.terminal_err):
                self._rebound.append((handler, handler.stream))
                handler.setStream(self._sink)  # type: ignore[arg-type]
        sys.stdout = sys.stderr = self._sink  # type: ignore[assignment]
        _active = self
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """Restore the streams. Output that never reached a file (the run stopped before its run dir existed) is
        shown after an unexpected exception, where it may explain it, and dropped after ftkit's own errors
        (`FtkitError`: a bad argument or recipe file, whose message names the fix)."""
        global _active
        if self._sink is None:
            return
        sys.stdout, sys.stderr = self.terminal_out, self.terminal_err
        for handler, stream in self._rebound:
            if handler.stream is self._sink:
                handler.setStream(stream)
        self._sink.release(self.terminal_err, show_kept=exc is not None and not isinstance(exc, FtkitError))
        _active = None

    def route_to(self, path: Path) -> Path | None:
        """Write what was kept so far, and all that follows, to `path`; None when disabled."""
        if self._sink is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sink.attach(path)
        self.path = path
        return path

    @contextmanager
    def keep(self, *consoles: Any) -> Iterator[None]:
        """rich consoles that print to the terminal while library output is routed away."""
        saved = [(c, getattr(c, "_file", None)) for c in consoles]
        for console in consoles:
            console.file = self.terminal_err if console.stderr else self.terminal_out
        try:
            yield
        finally:
            for console, file in saved:
                console.file = file


def route_to(run_dir: Path) -> Path | None:
    """Send the active capture's output to `run_dir/RUNNER_LOG`: its path, or None when nothing is captured."""
    return _active.route_to(run_dir / RUNNER_LOG) if _active is not None else None


def _stream_handlers() -> Iterator[logging.StreamHandler[Any]]:
    """Every stream handler of every logger bound to a stream: not file handlers (they write to a file already), nor
    those whose stream is a property (logging's last-resort kind: it follows `sys.stderr` by itself)."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if (
                isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, logging.FileHandler)
                and not isinstance(getattr(type(handler), "stream", None), property)
            ):
                yield handler
