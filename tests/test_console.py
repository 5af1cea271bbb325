"""Status and error lines: styled on a terminal, plain text elsewhere, and user text (messages, paths, data values)
printed as it is, brackets included, never read as rich markup."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from conftest import ROOT, copy_recipe
from ftkit.cli import main
from ftkit.cli.console import FAILED, OK, say
from ftkit.errors import ExitCode
from rich.console import Console

RECIPE = "llama8b-qlora-sft"
MARKUP = ("[red]", "[/", "[green]", "[bold]", "[yellow]", "\x1b[")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _no_markup(text: str) -> None:
    leaked = [tag for tag in MARKUP if tag in text]
    assert not leaked, f"markup {leaked} leaked into:\n{text}"


def test_say_on_a_terminal_styles_only_ftkits_words_and_keeps_user_brackets():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system="standard", width=30)
    user = " /runs/[x]/a [bold]b[/bold] :smile: " + "long " * 10
    say(console, OK, user, ("done", "yellow"))
    printed = buffer.getvalue()
    assert "\x1b[32m✓" in printed and "\x1b[33mdone" in printed  # green tick, yellow accent
    assert ANSI.sub("", printed) == f"✓{user}done\n"  # brackets, emoji code and length kept: no markup, no wrap


def test_say_off_a_terminal_prints_plain_text():
    buffer = io.StringIO()
    say(Console(file=buffer, width=20), FAILED, " [red]x[/red] in /a [b]/c", style="red")
    assert buffer.getvalue() == "✗ [red]x[/red] in /a [b]/c\n"


def test_cli_output_piped_has_no_markup_and_keeps_bracketed_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    root = tmp_path / "recipes [x]"  # a path with brackets
    root.mkdir()
    monkeypatch.setenv("FTKIT_RECIPES", str(root))
    copy_recipe(RECIPE, root)
    broken = copy_recipe(RECIPE, root, "broken-sft")
    with (broken / "sft.axolotl.yaml").open("a") as fh:
        fh.write("note[x]: 1\n")  # an error whose message contains [x]

    assert main(["recipe", "validate", RECIPE]) == ExitCode.OK
    valid = capsys.readouterr()
    assert valid.out.startswith(f"✓ {RECIPE}: recipe, engine configs")
    assert main(["recipe", "validate", "broken-sft"]) == ExitCode.USAGE
    invalid = capsys.readouterr()
    assert invalid.out.startswith("✗ broken-sft")
    assert f"{broken / 'sft.axolotl.yaml'}:" in invalid.out and "unknown Axolotl key 'note[x]'" in invalid.out

    code = main(["recipe", "run", RECIPE, "--set", "nosuch[x].max_steps=1", "--runs-dir", str(tmp_path / "runs")])
    assert code == ExitCode.USAGE
    error = capsys.readouterr()
    assert error.err.lstrip().startswith("error: --set nosuch[x].max_steps=1: 'nosuch[x]' is not a stage of")

    rows = tmp_path / "rows [x].jsonl"
    rows.write_text(json.dumps({"messages": [{"role": "[x]", "content": "hi"}]}) + "\n")
    schema = ROOT / "recipes" / RECIPE / "sft.schema.json"
    assert main(["data", "validate", str(rows), "--schema", str(schema)]) == ExitCode.DATA_INVALID
    data = capsys.readouterr()
    assert data.out.startswith(f"{rows}: format messages; rows 1 = valid 0 + invalid 1")
    assert f"{rows}:1, field 'messages.0.role': '[x]' is not one of" in data.out  # a data value with brackets
    assert "'[x]' is not one of ['system', 'user']" in data.out  # the reasons table keeps it too

    for printed in (valid, invalid, error, data):
        _no_markup(printed.out + printed.err)
