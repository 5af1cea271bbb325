"""One thing `ftkit doctor` found: what, where (file:line), how sure, how to fix it, and the source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]


@dataclass
class Finding:
    id: str
    severity: Severity
    title: str
    fix: list[str]
    source: str | None = None
    detail: str | None = None
    file: str | None = None
    line: int | None = None
    excerpt: str | None = None  # the matching log line, trimmed
    count: int = 1  # matching lines in the log
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str | None:
        if not self.file:
            return None
        return f"{self.file}:{self.line}" if self.line else self.file

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if v not in (None, {}, [])}
        if self.where:
            out["where"] = self.where
        return out
