"""docs/cli-reference.md is generated from ftkit's argparse parser, and a stale page is caught."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
from ftkit.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cli-reference.md"

_spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" / "cli_reference.py")
assert _spec and _spec.loader
cli_reference = importlib.util.module_from_spec(_spec)
sys.modules["cli_reference"] = cli_reference
_spec.loader.exec_module(cli_reference)


def _find(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    """The parser of `ftkit NAME ...`, to change it the way a new flag would."""
    for name in names:
        parser = next(sub for n, _summary, sub in cli_reference.subcommands(parser) if n == name)
    return parser


def test_committed_page_matches_the_parser() -> None:
    assert DOC.read_text(encoding="utf-8") == cli_reference.render(), (
        "docs/cli-reference.md is stale: run .venv/bin/python scripts/cli_reference.py --write"
    )


def test_every_command_and_option_is_on_the_page() -> None:
    text = DOC.read_text(encoding="utf-8")
    for _summary, parser in cli_reference.walk(build_parser()):
        assert f"\n## {parser.prog}\n" in text, parser.prog
        for action in parser._actions:
            for option in action.option_strings:
                assert option in text, f"{parser.prog} {option}"


def test_a_new_flag_makes_the_page_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    _find(parser, "recipe", "run").add_argument("--flag-added-without-regenerating", help="new")
    generated = cli_reference.render(parser)
    assert "--flag-added-without-regenerating" in generated
    assert generated != DOC.read_text(encoding="utf-8")

    # --check reports it (exit 1) and --write fixes it, here on a copy of the page.
    page = tmp_path / "cli-reference.md"
    page.write_text(DOC.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(cli_reference, "build_parser", lambda: parser)
    assert cli_reference.main(["--check"], doc=page) == 1
    assert cli_reference.main(["--write"], doc=page) == 0
    assert cli_reference.main(["--check"], doc=page) == 0
    assert "--flag-added-without-regenerating" in page.read_text(encoding="utf-8")


def test_rendering_ignores_the_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    narrow = cli_reference.render()
    monkeypatch.setenv("COLUMNS", "300")
    assert cli_reference.render() == narrow
