"""nox sessions. They run in the project's .venv (built from requirements.lock by `make setup`),
so every session uses the exact locked versions; none creates its own environment.

    nox -s lint       ruff check + format check
    nox -s tests      pytest (what `make test` runs; `-- -m "not slow and not model"` for the fast layer)
    nox -s recipes    validate every recipe (all profiles, schemas, samples, bounds)
    nox -s smoke      run every recipe's smoke profile on CPU and gate its metrics
    nox -s gpu        run every recipe's full profile (a GPU machine)
    nox -s containers build the images and run them as users do (Docker; tens of minutes)
    nox -s lock       regenerate requirements*.lock from requirements*.in (uv, network)
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

ROOT = Path(__file__).parent
BIN = ROOT / ".venv" / "bin"
nox.options.sessions = ["lint", "tests", "recipes"]
nox.options.default_venv_backend = "none"


def _setup(session: nox.Session) -> None:
    session.run("make", "--no-print-directory", ".venv/.ftkit-installed", external=True)


def _recipes() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "recipes").glob("*/recipe.yaml"))


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    _setup(session)
    session.run(str(BIN / "ruff"), "check", ".", external=True)
    session.run(str(BIN / "ruff"), "format", "--check", ".", external=True)


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    _setup(session)
    workers = os.environ.get("TEST_WORKERS", "2")  # as `make test`: pytest-xdist, 1 = one process
    xdist = [] if workers == "1" else ["-n", workers, "--dist", "loadgroup"]
    session.run(str(BIN / "python"), "-m", "pytest", "-q", *xdist, *session.posargs, external=True)


@nox.session(python=False)
def recipes(session: nox.Session) -> None:
    _setup(session)
    session.run(str(BIN / "ftkit"), "recipe", "validate", external=True)


@nox.session(python=False)
def smoke(session: nox.Session) -> None:
    """Every recipe's smoke profile (CPU); each must pass its metrics gate. One table at the end (exit code, wall
    time, gated metrics): scripts/smoke_all.py, which also takes --repeat N (`nox -s smoke -- --repeat 2`)."""
    _setup(session)
    session.run(str(BIN / "python"), "scripts/smoke_all.py", *session.posargs, external=True)
    if not session.posargs:  # and a fork of a shipped recipe runs its smoke profile unchanged
        session.run(str(BIN / "python"), "-m", "pytest", "-q", "-m", "recipe_smoke", external=True)


@nox.session(python=False)
def gpu(session: nox.Session) -> None:
    """Every recipe's full profile; for the self-hosted GPU runner (inside the recipe's container)."""
    _setup(session)
    for name in session.posargs or _recipes():
        session.run(str(BIN / "ftkit"), "recipe", "run", name, "--profile", "full", external=True)


@nox.session(python=False)
def containers(session: nox.Session) -> None:
    """`make docker-engine containers test-containers`: build base, axolotl, unsloth and run them (containers/)."""
    for target in ("docker-engine", "containers", "test-containers"):
        session.run("make", "--no-print-directory", target, external=True)


@nox.session(python=False)
def lock(session: nox.Session) -> None:
    """Regenerate the hashed locks. torch comes from the CPU wheel in PIP_FIND_LINKS (default /opt/wheels)."""
    find_links = os.environ.get("PIP_FIND_LINKS", "/opt/wheels")
    common = ["--generate-hashes", "--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28"]
    session.run(
        str(BIN / "uv"), "pip", "compile", "requirements.in", "-o", "requirements.lock", *common,
        "--find-links", find_links, "--index-strategy", "unsafe-best-match", "--no-emit-find-links",
        external=True,
    )  # fmt: skip
    session.run(
        str(BIN / "uv"), "pip", "compile", "requirements-models.in", "-o", "requirements-models.lock",
        "--no-deps", *common, external=True,
    )  # fmt: skip
