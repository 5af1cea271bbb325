"""Which copy of a recipe a cloud job runs (ftkit.cloud.carry): the image's, when the folder is the same as
`recipes/<name>` at the image's commit, else the local folder carried into the job; the fingerprint the job
checks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from ftkit.cloud.carry import check_copy, folder_fingerprint, normalize, recipe_source
from ftkit.errors import ExitCode, FtkitError
from ftkit.image_refs import parse_ref, pin_container

NAME = "tiny-trl-sft-dpo"
DIGEST = "sha256:" + "ab" * 32


def git(repo: Path, *argv: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *argv]
    return subprocess.run(cmd, cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def commit_all(repo: Path, message: str = "recipes") -> str:
    """Commit everything under `repo` (a git repository made on first use); returns the commit's sha."""
    if not (repo / ".git").exists():
        git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def checkout(stub_recipe, recipes_root: Path) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """A git checkout whose recipes/ holds the tiny recipe, committed: (repo root, recipe folder)."""
    rdir = stub_recipe(NAME)
    commit_all(recipes_root.parent)
    return recipes_root.parent, rdir


def test_a_committed_recipe_is_the_images_and_an_edited_one_is_carried_naming_the_file(checkout) -> None:  # type: ignore[no-untyped-def]
    _, rdir = checkout
    source = recipe_source(rdir, NAME)
    assert not source.carried and source.reason.startswith(f"the same as recipes/{NAME} at HEAD (")
    assert source.fingerprint == folder_fingerprint(rdir)
    assert recipe_source(rdir, NAME, carry=True).carried, "--carry-recipe carries it anyway"

    config = rdir / "sft.trl.yaml"
    config.write_text(config.read_text() + "# tuned for the new domain\n")
    edited = recipe_source(rdir, NAME)
    assert edited.carried and edited.reason.startswith("changed since HEAD (") and "sft.trl.yaml" in edited.reason
    assert edited.fingerprint != source.fingerprint


def test_a_fork_that_git_does_not_track_is_carried(checkout) -> None:  # type: ignore[no-untyped-def]
    _, rdir = checkout
    fork = rdir.rename(rdir.with_name("support-bot"))  # moved, not committed: git does not track the fork
    source = recipe_source(fork, "support-bot")
    assert source.carried and "not in git at HEAD" in source.reason and "fork" in source.reason


def test_a_recipe_outside_any_checkout_is_carried(stub_recipe) -> None:  # type: ignore[no-untyped-def]
    rdir = stub_recipe(NAME)
    source = recipe_source(rdir, NAME)
    assert source.carried and "not in a git checkout" in source.reason


def test_no_carry_refuses_a_recipe_the_image_lacks_with_the_fix(stub_recipe) -> None:  # type: ignore[no-untyped-def]
    rdir = stub_recipe(NAME)
    with pytest.raises(FtkitError) as err:
        recipe_source(rdir, NAME, carry=False)
    [problem] = err.value.problems
    assert err.value.code == ExitCode.USAGE and problem.field == "--no-carry-recipe"
    assert "leave out --no-carry-recipe" in (problem.fix or "") and "'recipe' input channel" in (problem.fix or "")


def test_image_commit_compares_with_the_commit_the_image_was_built_from(checkout) -> None:  # type: ignore[no-untyped-def]
    repo, rdir = checkout
    built = git(repo, "rev-parse", "HEAD")
    config = rdir / "sft.trl.yaml"
    config.write_text(config.read_text() + "# a later change, committed\n")
    commit_all(repo, "later")
    assert not recipe_source(rdir, NAME).carried, "HEAD holds it"
    older = recipe_source(rdir, NAME, image_commit=built)
    assert older.carried and f"changed since {built}" in older.reason and "sft.trl.yaml" in older.reason
    with pytest.raises(FtkitError, match=r"no commit 'v9\.9\.9'") as err:
        recipe_source(rdir, NAME, image_commit="v9.9.9")
    assert err.value.problems[0].field == "--image-commit"


def test_pinning_the_published_image_keeps_the_fingerprint_and_other_edits_change_it(checkout) -> None:  # type: ignore[no-untyped-def]
    _, rdir = checkout
    before = folder_fingerprint(rdir)
    recipe = rdir / "recipe.yaml"
    text = recipe.read_text()
    image = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("image:"))
    recipe.write_text(pin_container(text, parse_ref(f"{image}:9.9.9@{DIGEST}")))
    assert DIGEST in recipe.read_text()
    assert folder_fingerprint(rdir) == before, "the pin the release writes after the build does not count"
    assert not recipe_source(rdir, NAME).carried
    recipe.write_text(recipe.read_text().replace("name: tiny-trl-sft-dpo", "name: tiny-trl-sft-dpo  # x", 1))
    assert folder_fingerprint(rdir) != before, "any other byte does"


def test_normalize_drops_only_the_container_blocks_tag_and_digest() -> None:
    text = b"name: x\ncontainer:\n  image: a/b\n  tag: 1\n  digest: null  # later\nstages:\n  - tag: kept\n"
    assert normalize("recipe.yaml", text) == b"name: x\ncontainer:\n  image: a/b\nstages:\n  - tag: kept\n"
    assert normalize("sft.yaml", text) == text


def test_hidden_files_caches_and_runs_do_not_count(stub_recipe) -> None:  # type: ignore[no-untyped-def]
    rdir = stub_recipe(NAME)
    before = folder_fingerprint(rdir)
    for rel in (".DS_Store", "__pycache__/x.pyc", "runs/old/metrics.json", "data/.sft.jsonl.swp"):
        (rdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (rdir / rel).write_text("noise")
    assert folder_fingerprint(rdir) == before
    (rdir / "data" / "extra.jsonl").write_text("{}\n")
    assert folder_fingerprint(rdir) != before


def test_check_copy_stops_a_job_whose_recipe_is_not_the_printed_one(stub_recipe) -> None:  # type: ignore[no-untyped-def]
    rdir = stub_recipe(NAME)
    sha = folder_fingerprint(rdir)
    assert check_copy(rdir, sha, carried=True, image_commit="", fix="f") == sha
    assert check_copy(rdir, "", carried=False, image_commit="", fix="f") == sha, "no fingerprint sent: no check"
    with pytest.raises(FtkitError, match="built from commit abc1234") as err:
        check_copy(rdir, "0" * 64, carried=False, image_commit="abc1234", fix="print it with --carry-recipe")
    assert err.value.code == ExitCode.USAGE and err.value.problems[0].fix == "print it with --carry-recipe"
    assert err.value.problems[0].field == "recipe_sha256"
