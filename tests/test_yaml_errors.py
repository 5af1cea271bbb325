"""YAML syntax errors point at the line and column of the mistake (not where PyYAML gave up), with PyYAML's words
and a fix, in recipe.yaml, engine YAMLs and `--set` values alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import copy_recipe
from ftkit.cli import main
from ftkit.dotted_keys import parse_set
from ftkit.errors import ExitCode, FtkitError, Problem
from ftkit.recipes.load import load_recipe
from ftkit.yaml_load import describe_yaml_error, load_yaml

RECIPE = "llama8b-qlora-sft"


def _break_line(path: Path, marker: str, change) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """Apply `change` to the first line containing `marker`; its 1-based number and the new line."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines) if marker in line)
    lines[number] = change(lines[number])
    path.write_text("".join(lines), encoding="utf-8")
    return number + 1, lines[number]


def _error(text: str) -> yaml.YAMLError:
    with pytest.raises(yaml.YAMLError) as exc:
        yaml.safe_load(text)
    return exc.value


def test_an_unclosed_quote_mid_file_is_reported_where_the_quote_opens_not_at_the_end(recipes_root: Path):
    rdir = copy_recipe(RECIPE, recipes_root)
    config = rdir / "sft.axolotl.yaml"
    line, text = _break_line(config, 'pad_token: "', lambda s: s.rstrip().rstrip('"') + "\n")
    total = len(config.read_text().splitlines())
    assert 1 < line < total  # in the middle: the old report named the end of the file
    with pytest.raises(FtkitError) as exc:
        load_recipe(RECIPE)
    [p] = exc.value.problems
    assert (p.file, p.line, p.column) == (str(config), line, text.index('"') + 1)
    assert "found unexpected end of stream" in p.message and "quoted scalar" in p.message  # PyYAML's words
    assert p.fix and "close the double quote" in p.fix and f"line {line}, column {p.column}" in p.fix
    assert p.render().startswith(f"{config}:{line}:{p.column}: YAML syntax error")


def test_a_tab_in_the_indentation_names_its_line_and_says_to_use_spaces(recipes_root: Path):
    rdir = copy_recipe(RECIPE, recipes_root)
    line, _ = _break_line(rdir / "recipe.yaml", "min_vram_gb:", lambda s: "\t" + s.lstrip(" "))
    with pytest.raises(FtkitError) as exc:
        load_recipe(RECIPE)
    [p] = exc.value.problems
    assert p.file.endswith("recipe.yaml") and (p.line, p.column) == (line, 1)
    assert "'\\t'" in p.message and p.fix and "spaces" in p.fix


def test_a_key_indented_less_than_its_siblings_names_that_key(recipes_root: Path):
    rdir = copy_recipe(RECIPE, recipes_root)
    line, text = _break_line(rdir / "recipe.yaml", "min_vram_gb:", lambda s: " " + s.lstrip(" "))
    with pytest.raises(FtkitError) as exc:
        load_recipe(RECIPE)
    [p] = exc.value.problems
    assert (p.line, p.column) == (line, text.index("min_vram_gb") + 1)
    assert "expected <block end>" in p.message and p.fix and "indent" in p.fix


def test_recipe_validate_prints_file_line_and_column_of_the_syntax_error(
    recipes_root: Path, capsys: pytest.CaptureFixture[str]
):
    rdir = copy_recipe(RECIPE, recipes_root)
    config = rdir / "sft.axolotl.yaml"
    line, text = _break_line(config, 'pad_token: "', lambda s: s.rstrip().rstrip('"') + "\n")
    column = text.index('"') + 1
    assert main(["recipe", "validate", RECIPE]) == ExitCode.USAGE
    printed = capsys.readouterr().out
    assert f"{config}:{line}:{column}: YAML syntax error" in printed
    total = len(config.read_text().splitlines())
    assert f"{config}:{total + 1}:" not in printed
    assert main(["recipe", "validate", RECIPE, "--json"]) == ExitCode.USAGE
    [result] = json.loads(capsys.readouterr().out)
    assert {k: result["problems"][0][k] for k in ("line", "column")} == {"line": line, "column": column}


@pytest.mark.parametrize(
    ("text", "where", "words", "fix"),
    [
        ("a: [1, 2\nb: 3\n", (1, 4), "flow sequence", "close the '[' at line 1, column 4"),
        ("a: 1\nb\nc: 2\n", (2, 1), "could not find expected ':'", "'key: value'"),
        ("a: b: c\n", (1, 5), "mapping values are not allowed here", "quote a value"),
        ("a: 'x\nb: 2\n", (1, 4), "quoted scalar", "close the single quote"),
        ("a: 1\nb: \x07\n", (2, 4), "special characters are not allowed", "remove the control"),
    ],
)
def test_each_kind_of_yaml_error_gets_its_position_and_a_matching_fix(
    text: str, where: tuple[int, int], words: str, fix: str
):
    spot = describe_yaml_error(_error(text), text)
    assert (spot.line, spot.column) == where and words in spot.message and fix in spot.fix


def test_a_yaml_error_in_a_file_read_alone_names_the_file_line_and_column(tmp_path: Path):
    path = tmp_path / "merge.yaml"
    path.write_text("models:\n  - model: a\n    parameters: {weight: 0.5\nmerge_method: linear\n")
    with pytest.raises(FtkitError) as exc:
        load_yaml(path)
    [p] = exc.value.problems
    assert (p.file, p.line, p.column) == (str(path), 3, 17) and "flow mapping" in p.message
    assert p.to_dict()["column"] == 17


def test_a_set_value_that_is_not_yaml_says_what_to_close():
    with pytest.raises(FtkitError) as exc:
        parse_set(["lora_target_modules=[q_proj, v_proj"])
    [p] = exc.value.problems
    assert p.field == "lora_target_modules" and "not valid YAML" in p.message and "<unicode string>" not in p.message
    assert p.fix and "close the '['" in p.fix


def test_a_column_is_shown_only_with_a_line():
    assert Problem("m", "f.yaml", 3, None, None, 7).where() == "f.yaml:3:7"
    assert Problem("m", "f.yaml", None, None, None, 7).where() == "f.yaml"
    assert Problem("m", "f.yaml", 3).where() == "f.yaml:3"
