"""What every CLI module shares: the consoles (stderr for progress and errors, stdout for results), status lines
and JSON output. It imports nothing from the other CLI modules."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.text import Text

# A part of a status line: text printed as it is, or (text, rich style) for ftkit's own accents.
Part = str | tuple[str, str]

OK: Part = ("✓", "green")
FAILED: Part = ("✗", "red")


# Logs (CI, `| tee`) get wide tables instead of 80 columns of wrapped text.
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
out_console = Console(width=None if sys.stdout.isatty() else 140)


def consoles() -> tuple[Console, Console]:
    """(stderr console for progress and errors, stdout console for results)."""
    return err_console, out_console


def status_text(*parts: Part, style: str = "") -> Text:
    """The line `say` prints: string parts are literal text (a `[x]` in them stays `[x]`), pairs are styled."""
    return Text.assemble(*parts, style=style)


def say(console: Console, *parts: Part, style: str = "") -> None:
    """Print one status or error line: the only way CLI modules print a line that is not a table or JSON.

    String parts (messages, paths, data values) are never read as rich markup, so brackets in them print as they
    are; a (text, style) part or `style` colours ftkit's own words. Styles show on a terminal only: piped, logged
    or captured output is plain text. Lines are not wrapped at the console width, so paths stay whole."""
    line = status_text(*parts, style=style)
    console.print(
        line if console.is_terminal else line.plain, markup=False, emoji=False, highlight=False, soft_wrap=True
    )


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
