"""`make recipe` and the script behind it (scripts/recipe.sh): ftkit's own exit code.

GNU make exits 2 whenever a command fails, so `make recipe` cannot exit with ftkit's code; its error line names it
("... recipe] Error 3"), the last line says the code, its meaning and the next command, and the code is written to
RUNS_DIR/last-exit-code and the run dir. scripts/recipe.sh itself exits with the code."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

SCRIPT = ROOT / "scripts" / "recipe.sh"
MAKE_ERROR = re.compile(r"make: \*\*\* \[Makefile:\d+: recipe\] Error (\d+)")
NAME = "tiny-trl-sft-dpo"


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """argv in the checkout, as from a shell (not from the `make test` that may be running these tests)."""
    base = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "RECIPE_FRONT")}
    return subprocess.run(argv, cwd=ROOT, env={**base, **(env or {})}, capture_output=True, text=True, timeout=300)


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run(["make", "--no-print-directory", "recipe", *args], env)


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The script's last line (stderr; under make, the line before make's own error line)."""
    lines = [line for line in proc.stderr.splitlines() if not MAKE_ERROR.match(line)]
    return lines[-1]


def test_make_hands_every_variable_to_the_script_shell_quoted() -> None:
    proc = run(["make", "-n", "recipe", "NAME=x", "PROFILE=smoke", "SET=a=1 b='c d'", "ALLOW_PII=1", "RESUME=runs/x/y"])
    assert proc.returncode == 0, proc.stderr
    line = " ".join(proc.stdout.replace("\\\n", " ").split())
    assert "scripts/recipe.sh NAME='x' PROFILE='smoke' SET='a=1 b='\\''c d'\\''' ALLOW_PII='1'" in line
    assert "RESUME='runs/x/y' RUNS_DIR='runs'" in line
    default = run(["make", "-n", "recipe", "NAME=x"]).stdout
    assert "PROFILE=''" in default, "the script decides: full, or a resumed run's own profile"


def test_an_unknown_recipe_exits_2_and_says_so_last(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = make("NAME=no-such-recipe", "PROFILE=smoke", f"RUNS_DIR={runs}")
    assert proc.returncode == 2 and MAKE_ERROR.search(proc.stderr).group(1) == "2"  # type: ignore[union-attr]
    assert "no recipe named 'no-such-recipe'" in proc.stderr
    assert last_line(proc).startswith("exit 2: bad arguments or recipe files")
    assert "make recipe NAME=no-such-recipe PROFILE=smoke" in last_line(proc)
    assert (runs / "last-exit-code").read_text() == "2\n"
    direct = run([str(SCRIPT), "NAME=no-such-recipe", "PROFILE=smoke", f"RUNS_DIR={runs}"])
    assert direct.returncode == 2 and last_line(direct).startswith("exit 2: ")
    assert run([str(SCRIPT), "NAEM=typo"]).returncode == 2, "an argument it does not know"


@pytest.mark.model
def test_a_bad_data_row_exits_3_and_make_names_the_3(tiny_recipe, recipes_root: Path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rdir = tiny_recipe(NAME)
    data = tmp_path / "support-tickets.jsonl"  # the new domain's data, one row without an answer
    bad = {"id": "bad", "messages": [{"role": "user", "content": "no answer"}]}
    data.write_text((rdir / "data" / "sft.jsonl").read_text() + json.dumps(bad) + "\n")
    runs = tmp_path / "runs"
    proc = make(f"NAME={NAME}", "PROFILE=smoke", f"SET=sft.dataset.path={data}", f"RUNS_DIR={runs}",
                env={"FTKIT_RECIPES": str(recipes_root)})  # fmt: skip
    assert proc.returncode == 2, "GNU make exits 2 for any failed command"
    assert MAKE_ERROR.search(proc.stderr).group(1) == "3", "the script exited 3: make's error line says so"  # type: ignore[union-attr]
    assert f"{data}:" in proc.stderr, "ftkit named the file and row"
    [run_dir] = (runs / NAME).iterdir()
    assert last_line(proc) == (
        f"exit 3: invalid data: training did not start (the rows are named above) [{run_dir}] -- next: fix what is "
        f"named above, then make recipe NAME={NAME} PROFILE=smoke SET='sft.dataset.path={data}'"
    )
    assert (run_dir / "exit-code").read_text() == "3\n" and (runs / "last-exit-code").read_text() == "3\n"


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_the_full_profile_without_a_gpu_exits_5_and_names_the_smoke_command(tmp_path: Path) -> None:
    proc = run([str(SCRIPT), "NAME=llama8b-qlora-dpo", f"RUNS_DIR={tmp_path}"])
    assert proc.returncode == 5 and "No NVIDIA GPU found" in proc.stderr
    assert last_line(proc) == (
        "exit 5: this machine cannot run it -- next: scripts/recipe.sh NAME=llama8b-qlora-dpo PROFILE=smoke"
    )


def test_image_without_a_docker_engine_exits_5(tmp_path: Path) -> None:
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        pytest.skip("a Docker engine answers here")
    proc = make("NAME=llama8b-qlora-dpo", "PROFILE=smoke", "IMAGE=1", f"RUNS_DIR={tmp_path}")
    assert MAKE_ERROR.search(proc.stderr).group(1) == "5"  # type: ignore[union-attr]
    assert "next: make docker-engine, then make recipe NAME=llama8b-qlora-dpo PROFILE=smoke IMAGE=1" in last_line(proc)


FAKE_FTKIT = """#!{python}
# ftkit as far as scripts/recipe.sh sees it: a run dir with metrics.json, then SIGTERM's code 6; a resume passes.
import json, os, pathlib, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if "--resume" in args:
    sys.exit(0)
run_dir = pathlib.Path(args[args.index("--runs-dir") + 1]) / args[2] / "20260101-000000-smoke"
run_dir.mkdir(parents=True)
state = {{"recipe": args[2], "profile": "smoke", "recipe_dir": "/somewhere/recipes/demo", "status": "interrupted"}}
(run_dir / "metrics.json").write_text(json.dumps(state))
sys.exit(6)
"""


def test_a_run_stopped_at_a_checkpoint_exits_6_names_the_resume_command_and_resumes(tmp_path: Path) -> None:
    fake = tmp_path / "ftkit"
    fake.write_text(FAKE_FTKIT.format(python=sys.executable))
    fake.chmod(0o755)
    env = {"FTKIT": str(fake), "FAKE_LOG": str(tmp_path / "calls.jsonl")}
    runs = tmp_path / "runs"
    stopped = run([str(SCRIPT), "NAME=demo", "PROFILE=smoke", "SET=sft.max_steps=9", f"RUNS_DIR={runs}"], env)
    run_dir = runs / "demo" / "20260101-000000-smoke"
    assert stopped.returncode == 6
    assert last_line(stopped) == (
        f"exit 6: stopped at a checkpoint: the run can be resumed [{run_dir}] -- next: scripts/recipe.sh "
        f"RESUME={run_dir}"
    )
    assert (run_dir / "exit-code").read_text() == "6\n"

    resumed = run([str(SCRIPT), f"RESUME={run_dir}", f"RUNS_DIR={runs}"], env)
    assert resumed.returncode == 0 and last_line(resumed).startswith("exit 0: passed: every bound")
    first, second = (json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines())
    assert first == ["recipe", "run", "demo", "--profile", "smoke", "--set", "sft.max_steps=9", "--runs-dir", str(runs)]
    assert second == ["recipe", "run", "demo", "--profile", "smoke", "--resume", str(run_dir), "--runs-dir", str(runs)]
    assert (run_dir / "exit-code").read_text() == "0\n" and (runs / "last-exit-code").read_text() == "0\n"
