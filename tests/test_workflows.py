"""The GitHub workflows, checked structurally here (actionlint itself runs in CI's lint job: its PyPI
package builds only with GitHub reachable)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_job_has_a_runner_a_timeout_and_pinned_actions(path: Path):
    wf = _load(path)
    assert wf["on"], f"{path.name}: no trigger"
    assert "permissions" in wf, f"{path.name}: set least-privilege permissions"
    for name, job in wf["jobs"].items():
        assert job.get("runs-on"), f"{path.name}: job {name} has no runs-on"
        assert isinstance(job.get("timeout-minutes"), int) or job.get("uses"), f"{path.name}: {name} has no timeout"
        for step in job.get("steps", []):
            if "uses" in step:
                action, _, ref = step["uses"].partition("@")
                assert ref, f"{path.name}: {name}: {action} is not pinned to a version"


def test_the_workflows_do_what_the_readme_says():
    ci, gpu, containers = (_load(ROOT / ".github" / "workflows" / f"{n}.yml") for n in ("ci", "gpu", "containers"))
    steps = lambda job: " ".join(str(s.get("run", "")) for s in job["steps"])  # noqa: E731
    assert "bash .ci/run" in steps(ci["jobs"]["test"]) and "make smoke" in steps(ci["jobs"]["smoke"])
    matrix = ci["jobs"]["smoke"]["strategy"]["matrix"]  # one smoke job per recipe, listed by the `recipes` job
    assert "needs.recipes.outputs.names" in matrix["recipe"] and "make smoke-fork" in steps(ci["jobs"]["smoke"])
    assert "actionlint" in steps(ci["jobs"]["lint"]) and "make lint" in steps(ci["jobs"]["lint"])
    assert gpu["jobs"]["full"]["runs-on"] == ["self-hosted", "gpu"] and "--profile full" in steps(gpu["jobs"]["full"])
    test, release = containers["jobs"]["build-and-test"], containers["jobs"]["release"]
    # Every change: the images built and run exactly as on our machines (no OS_BASE: debootstrap).
    assert "make docker-engine" in steps(test) and "make test-containers" in steps(test)
    assert "make containers" in steps(test) and "OS_BASE" not in steps(test)
    # A release: the same lines on debian:bookworm-slim by digest, pushed, pulled back and run the same way.
    flags = release["env"]["BUILDX_FLAGS"]
    assert "--sbom=true" in flags and "--provenance=mode=max" in flags
    assert 'make containers PUSH=1 OS_BASE="$OS_BASE"' in steps(release) and "debian@${digest}" in steps(release)
    assert "make test-containers" in steps(release) and "trivy image" in steps(release)
    assert "make pin-images" in steps(containers["jobs"]["pin"])


def test_ci_run_covers_every_recipe_within_its_rotation_and_the_history_is_checked_out():
    """.ci/run's recipes over as many consecutive commits as the rotation has slots: the default recipe every
    time, and together the slots are every other recipe (a new recipe folder joins without editing .ci/run)."""
    import re
    import shlex
    import subprocess
    import sys

    from ftkit.recipes.load import list_recipe_dirs

    script = (ROOT / ".ci" / "run").read_text()
    default = re.search(r"make recipe NAME=(\S+) PROFILE=smoke", script).group(1)
    line = next(ln for ln in script.splitlines() if ln.startswith(".venv/bin/python scripts/smoke_all.py"))
    args = shlex.split(line)[2:]  # after the interpreter and the script
    assert "--rotate" in args and default in args[args.index("--skip") + 1 :]

    def planned(index: int) -> list[str]:
        out = subprocess.run([sys.executable, str(ROOT / "scripts" / "smoke_all.py"), *args, "--plan",
                              "--index", str(index)], capture_output=True, text=True, check=True, cwd=ROOT)  # fmt: skip
        return out.stdout.split("\n", 1)[1].split()

    slots = int(re.search(r"of (\d+)", subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "smoke_all.py"), *args, "--plan", "--index", "0"],
        capture_output=True, text=True, check=True, cwd=ROOT).stdout).group(1))  # fmt: skip
    plans = [planned(i) for i in range(100, 100 + slots)]  # consecutive commits: every slot once
    everything = sorted(d.name for d in list_recipe_dirs(ROOT / "recipes"))
    assert sorted([*(name for plan in plans for name in plan), default]) == everything
    assert all(len(plan) >= 2 for plan in plans)  # the default and at least two more, every commit
    ci = _load(ROOT / ".github" / "workflows" / "ci.yml")
    checkout = next(s for s in ci["jobs"]["test"]["steps"] if str(s.get("uses", "")).startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
