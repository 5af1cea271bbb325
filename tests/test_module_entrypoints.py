"""Every `python -m ftkit…` that the Makefile, CI, scripts, container files, nox and the docs start names a module
that exists and can be run (a moved module once left `make containers` calling `ftkit.images`, gone since the
release tooling moved to `ftkit_release`)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from conftest import ROOT

SOURCES = ("Makefile", ".ci/run", "noxfile.py", "README.md", "scripts", "containers", ".github", "docs")
MODULE = re.compile(r"-m\s+(ftkit[A-Za-z0-9_.]*)")


def _files() -> list[Path]:
    out: list[Path] = []
    for name in SOURCES:
        path = ROOT / name
        out.extend([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()))
    return out


def started_modules() -> dict[str, list[str]]:
    """module -> the files (and lines) that start it with `-m`."""
    found: dict[str, list[str]] = {}
    for path in _files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            for module in MODULE.findall(line):
                found.setdefault(module.rstrip("."), []).append(f"{path.relative_to(ROOT)}:{n}")
    return found


def _runnable(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return False
    return not spec.submodule_search_locations or importlib.util.find_spec(f"{module}.__main__") is not None


def test_every_module_our_files_start_with_dash_m_exists_and_runs(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    found = started_modules()
    assert {"ftkit", "ftkit_release.images", "ftkit.cloud.entrypoint"} <= set(found), "the scan finds the known ones"
    missing = {m: where for m, where in found.items() if not _runnable(m)}
    assert not missing, f"`python -m` of a module that is not there: {missing}"


def test_a_module_that_is_gone_or_a_package_without_main_is_not_runnable(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    assert not _runnable("ftkit.images") and not _runnable("ftkit.pii")  # gone; a package with no __main__
    assert _runnable("ftkit_release.images") and _runnable("ftkit")
