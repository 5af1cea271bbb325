"""`make test` and `make test-fast` run pytest on TEST_WORKERS pytest-xdist workers (default 2, 1 = one process),
grouped so that the readers of the session's trained run share a worker (docs/testing.md, "Two processes")."""

from __future__ import annotations

import ast
import os
import shlex
import subprocess

import pytest
from conftest import ROOT


def pytest_command(target: str, *overrides: str) -> list[str]:
    """The pytest command `make TARGET` runs (make -n: printed, not run), split into words."""
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_WORKERS", "MAKEFLAGS", "MFLAGS")}
    out = subprocess.run(["make", "--no-print-directory", "-n", target, *overrides], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True, timeout=60).stdout  # fmt: skip
    [line] = [x for x in out.splitlines() if " -m pytest " in x]
    return shlex.split(line)


@pytest.mark.parametrize("target", ["test", "test-fast"])
def test_the_test_targets_run_two_grouped_workers_by_default_and_one_process_with_test_workers_1(target: str):
    default = pytest_command(target)
    assert default[default.index("-n") + 1] == "2" and default[default.index("--dist") + 1] == "loadgroup"
    assert "-n" not in pytest_command(target, "TEST_WORKERS=1")
    four = pytest_command(target, "TEST_WORKERS=4")
    assert four[four.index("-n") + 1] == "4"


def test_every_test_that_reads_the_shared_trained_run_is_in_its_xdist_group():
    """A reader outside the group would make a second worker train the run again (minutes of CPU)."""
    readers: list[str] = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        text = path.read_text()
        if "tiny_trl_run" not in text or path.name == os.path.basename(__file__):
            continue
        for node in ast.walk(ast.parse(text)):
            is_test = isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
            if is_test and "tiny_trl_run" in ast.unparse(node):
                readers.append(f"{path.name}::{node.name}")
                marks = " ".join(ast.unparse(d) for d in node.decorator_list)
                assert "xdist_group('tiny_trl_run')" in marks, (
                    f'{path.name}::{node.name} reads tiny_trl_run: add @pytest.mark.xdist_group("tiny_trl_run")'
                )
    assert len(readers) >= 2, readers
