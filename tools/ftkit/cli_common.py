"""What every CLI module shares: the consoles (stderr for progress and errors, stdout for results) and JSON output."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console


def consoles() -> tuple[Console, Console]:
    """(stderr console, stdout console) as `ftkit.cli` configured them."""
    from ftkit.cli import console, out

    return console, out


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
