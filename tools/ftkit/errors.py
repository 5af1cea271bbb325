"""User-facing errors and the exit codes the CLI maps them to.

Every error names where the problem is (file, line or row, field) and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    OK = 0
    METRICS_FAILED = 1  # the run finished but a bound in expected-metrics.yaml failed
    USAGE = 2  # bad arguments or a bad recipe/config file
    DATA_INVALID = 3  # a dataset broke its schema; training did not start
    ENGINE_FAILED = 4  # the training engine exited non-zero
    ENVIRONMENT = 5  # the machine cannot run this (no GPU for the full profile, missing package)
    INTERRUPTED = 6  # stopped by SIGTERM: a checkpoint was saved, `ftkit recipe run --resume RUN_DIR` continues


@dataclass
class Problem:
    """One thing wrong, located as precisely as we can."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None
    fix: str | None = None
    column: int | None = None  # 1-based; set where a line alone is not precise enough (YAML syntax errors)

    def where(self) -> str:
        parts = []
        if self.file:
            col = f":{self.column}" if self.line and self.column else ""
            parts.append(self.file + (f":{self.line}{col}" if self.line else ""))
        elif self.line:
            parts.append(f"line {self.line}")
        if self.field:
            parts.append(f"field '{self.field}'")
        return ", ".join(parts)

    def render(self) -> str:
        where = self.where()
        text = f"{where}: {self.message}" if where else self.message
        if self.fix:
            text += f"\n    fix: {self.fix}"
        return text

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class FtkitError(Exception):
    """An error the CLI prints as a list of problems and turns into an exit code."""

    title: str
    problems: list[Problem] = field(default_factory=list)
    code: ExitCode = ExitCode.USAGE

    def __post_init__(self) -> None:
        super().__init__(self.title)

    def __str__(self) -> str:
        lines = [self.title] + ["  - " + p.render().replace("\n", "\n  ") for p in self.problems]
        return "\n".join(lines)

    @classmethod
    def one(
        cls,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        fix: str | None = None,
        code: ExitCode = ExitCode.USAGE,
        column: int | None = None,
    ) -> FtkitError:
        return cls(
            message,
            [Problem(message, str(file) if file else None, line, field, fix, column)],
            code,
        )

    def to_dict(self) -> dict[str, object]:
        return {"error": self.title, "code": int(self.code), "problems": [p.to_dict() for p in self.problems]}
