#!/usr/bin/env python3
"""Render docs/cli-reference.md from ftkit's argparse parser, so the reference cannot drift from the CLI.

  scripts/cli_reference.py            print the page
  scripts/cli_reference.py --write    write docs/cli-reference.md
  scripts/cli_reference.py --check    exit 1 when docs/cli-reference.md differs from what it would generate

Every command and subcommand gets its one-line summary (the `help=` of `add_parser`) and its full `--help` text
(usage, description, arguments, epilog), formatted at a fixed width so the output does not depend on the terminal.
`tests/test_cli_reference.py` fails when the committed page is stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from ftkit.cli import build_parser
from ftkit_release.generated_file import generated_file_main

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cli-reference.md"
WIDTH = 100  # fixed: argparse would otherwise wrap at $COLUMNS / the terminal's width

HEADER = """\
# CLI reference

Generated from `ftkit`'s argparse parser (`ftkit.cli.build_parser()`) by `scripts/cli_reference.py --write`; do not
edit by hand. `tests/test_cli_reference.py` fails when this page and the parser differ. What each exit code means
and how to fix it: [exit-codes.md](exit-codes.md).
"""


def _fixed_width(prog: str) -> argparse.HelpFormatter:
    """argparse's default formatter at WIDTH columns, whatever the terminal."""
    return argparse.HelpFormatter(prog, width=WIDTH)


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, summary, parser) of each subcommand of `parser`, in the order they were added; aliases once."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {choice.dest: choice.help or "" for choice in action._choices_actions}
            seen: set[int] = set()
            found = []
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    found.append((name, summaries.get(name, ""), sub))
            return found
    return []


def walk(parser: argparse.ArgumentParser, summary: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Each parser (the top one first, then depth first) with its summary."""
    yield summary, parser
    for _name, sub_summary, sub in subcommands(parser):
        yield from walk(sub, sub_summary)


def anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def escape(text: str) -> str:
    """Markdown-escape prose (table cells included), leaving `code spans` as they are but for `|`."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: all of it is prose
        parts = [text.replace("`", "\\`")]
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append("`" + part.replace("|", "\\|") + "`")
        else:
            out.append(re.sub(r"([\\*<\[\]|])", r"\\\1", part))
    return "".join(out)


def help_text(parser: argparse.ArgumentParser) -> str:
    """The parser's `--help` output at WIDTH columns."""
    parser.formatter_class = _fixed_width
    return parser.format_help().rstrip()


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole page for `parser` (default: ftkit's)."""
    parser = parser or build_parser()
    entries = list(walk(parser))
    lines = [HEADER, "| command | what it does |", "| --- | --- |"]
    for summary, p in entries:
        lines.append(f"| [`{p.prog}`](#{anchor(p.prog)}) | {escape(summary or p.description or '')} |")
    for summary, p in entries:
        lines += ["", f"## {p.prog}", ""]
        if summary:
            lines += [escape(summary), ""]
        lines += ["```text", help_text(p), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, doc: Path = DOC) -> int:
    return generated_file_main(doc, render, "scripts/cli_reference.py", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
