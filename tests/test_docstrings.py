"""Docstrings under tools/ftkit/ stay short: what the code does and why. Measurements, provenance and long
explanations belong in docs/ (each docstring links its page), where they are read and kept up to date."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tools" / "ftkit"
MODULE_MAX_LINES = 15
DOCSTRING_MAX_CHARS = 1200

DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def docstrings(source: str) -> list[tuple[str, int, int]]:
    """(name, source lines, characters) of every module, class and function docstring in a source text."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, DOCUMENTED):
            continue
        text = ast.get_docstring(node, clean=False)
        if text is None:
            continue
        literal = node.body[0]
        lines = (literal.end_lineno or literal.lineno) - literal.lineno + 1
        out.append(("<module>" if isinstance(node, ast.Module) else node.name, lines, len(text)))
    return out


def too_long(source: str) -> list[str]:
    """The docstrings of a source text over the limits, one line each."""
    found = []
    for name, lines, chars in docstrings(source):
        if name == "<module>" and lines > MODULE_MAX_LINES:
            found.append(f"{name}: {lines} lines (at most {MODULE_MAX_LINES})")
        if chars > DOCSTRING_MAX_CHARS:
            found.append(f"{name}: {chars} characters (at most {DOCSTRING_MAX_CHARS})")
    return found


def test_ftkit_docstrings_are_short_and_measurements_live_in_docs() -> None:
    found = [
        f"{path.relative_to(ROOT)}: {problem}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for problem in too_long(path.read_text(encoding="utf-8"))
    ]
    assert not found, (
        "docstrings over the limit (move measurements and long explanations to docs/, link the page):\n"
        + "\n".join(found)
    )


def test_the_checker_sees_a_long_module_docstring_and_a_long_function_docstring() -> None:
    module = '"""Summary.\n' + "line\n" * MODULE_MAX_LINES + '"""\n'
    function = 'def f():\n    """' + "x" * (DOCSTRING_MAX_CHARS + 1) + '"""\n'
    assert too_long(module) == [f"<module>: {MODULE_MAX_LINES + 2} lines (at most {MODULE_MAX_LINES})"]
    assert too_long(function) == [f"f: {DOCSTRING_MAX_CHARS + 1} characters (at most {DOCSTRING_MAX_CHARS})"]
    assert too_long('"""' + "line\n" * (MODULE_MAX_LINES - 1) + '"""\n') == []
