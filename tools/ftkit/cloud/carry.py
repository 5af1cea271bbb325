"""Which copy of a recipe a cloud job runs: the one baked into the image, or the local folder carried into the job.

The image holds a recipe only as it was at the image's commit. When the local folder's fingerprint (sha256 over its
files; litter and the pinned `tag:`/`digest:` lines left out) differs from `recipes/<name>` at that commit, the job
carries the folder (SageMaker: the `recipe` channel; RunPod: the network volume), and the entrypoint checks the copy
it runs against the fingerprint (`check_copy`). The rule and its reasons: docs/cloud.md.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ftkit.errors import FtkitError

RECIPE_CHANNEL = "recipe"  # SageMaker input channel of a carried recipe: /opt/ml/input/data/recipe/<name>/
FINGERPRINT_KEY = "recipe_sha256"  # SageMaker hyperparameter
FINGERPRINT_ENV = "RECIPE_SHA256"  # RunPod pod env
RECIPE_DIR_ENV = "RECIPE_DIR"  # RunPod pod env: the carried recipe's folder on the network volume
_PIN_LINE = re.compile(r"^[ \t]+(tag|digest):")
_CONTAINER_KEY = re.compile(r"^container:[ \t]*(#.*)?$")
_SKIP_PARTS = ("__pycache__",)
_SHOW = 5  # changed files named in a reason


@dataclass(frozen=True)
class RecipeSource:
    """The decision for one job: run the image's copy of `name`, or carry `local_dir` into the job."""

    name: str
    local_dir: Path
    fingerprint: str  # of the local folder: what the job must run
    carried: bool
    reason: str  # why, for the notes and errors: "not tracked in git (a fork)", "changed since HEAD (…): …"

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "local_dir": str(self.local_dir), "sha256": self.fingerprint,
                "carried": self.carried, "reason": self.reason}  # fmt: skip


def counted(rel: str) -> bool:
    """Whether a file (path relative to the recipe folder) is part of the recipe: not hidden, not a cache, not a
    run dir (the image build leaves out the last two as well)."""
    parts = PurePosixPath(rel).parts
    return not (
        any(p.startswith(".") or p in _SKIP_PARTS for p in parts) or rel.endswith(".pyc") or parts[:1] == ("runs",)
    )


def normalize(rel: str, data: bytes) -> bytes:
    """The bytes that count: recipe.yaml without the `container:` block's tag/digest lines (the pin), else as is."""
    if rel != "recipe.yaml":
        return data
    out, in_container = [], False
    for line in data.decode("utf-8", errors="surrogateescape").splitlines(keepends=True):
        bare = line.rstrip("\r\n")
        if _CONTAINER_KEY.match(bare):
            in_container = True
        elif bare.strip() and not bare[:1].isspace():
            in_container = False
        if not (in_container and _PIN_LINE.match(bare)):
            out.append(line)
    return "".join(out).encode("utf-8", errors="surrogateescape")


def file_digests(files: Mapping[str, bytes]) -> dict[str, str]:
    """Relative path -> sha256 of the bytes that count, for the files that count."""
    return {rel: hashlib.sha256(normalize(rel, data)).hexdigest() for rel, data in files.items() if counted(rel)}


def fingerprint(digests: Mapping[str, str]) -> str:
    """One sha256 over the sorted (path, file digest) pairs."""
    text = "".join(f"{rel}\0{digest}\n" for rel, digest in sorted(digests.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def folder_digests(folder: Path) -> dict[str, str]:
    """`file_digests` of a folder on disk, each file read in chunks (a fork may hold a large dataset) and the files
    that do not count (runs/, caches) not read at all."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if not path.is_file() or not counted(rel):
            continue
        if rel == "recipe.yaml":
            out[rel] = hashlib.sha256(normalize(rel, path.read_bytes())).hexdigest()
        else:
            with path.open("rb") as f:
                out[rel] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def folder_fingerprint(folder: Path) -> str:
    return fingerprint(folder_digests(folder))


def _git(cwd: Path, *argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *argv], cwd=cwd, capture_output=True, timeout=30, check=False)


def git_files(recipe_dir: Path, commit: str) -> tuple[dict[str, bytes] | None, str, str]:
    """The files of `recipes/<folder>` at `commit` of the checkout holding `recipe_dir`, as an image built from
    that commit holds them: (files or None, why None, the commit's short id). A `commit` git does not know is an
    error naming --image-commit."""
    try:
        top = _git(recipe_dir, "rev-parse", "--show-toplevel")
    except (OSError, subprocess.SubprocessError):
        return None, "no git here to compare it with", commit
    if top.returncode != 0:
        return None, "not in a git checkout, so in no image", commit
    root = Path(top.stdout.decode().strip()).resolve()
    try:
        rel = recipe_dir.resolve().relative_to(root).as_posix()
    except ValueError:
        return None, f"outside the checkout's recipes/ ({root})", commit
    if PurePosixPath(rel).parent.as_posix() != "recipes":
        return None, f"not a folder of the checkout's recipes/ ({rel}), so in no image", commit
    short = _git(root, "rev-parse", "--short", "--verify", "--end-of-options", f"{commit}^{{commit}}")
    if short.returncode != 0:
        raise FtkitError.one(
            f"git knows no commit '{commit}' in {root}",
            field="--image-commit",
            fix="pass the commit the image was built from: a tag, branch or sha of this checkout (its OCI label "
            "org.opencontainers.image.revision says which)",
        )
    sha = short.stdout.decode().strip()
    listed = _git(root, "ls-tree", "-r", "-z", "--name-only", sha, "--", f"{rel}/")
    names = [n for n in listed.stdout.decode("utf-8", errors="surrogateescape").split("\0") if n]
    if not names:
        return None, f"not in git at {commit} ({sha}): a fork the image was not built with", sha
    files = {}
    for name in names:
        blob = _git(root, "cat-file", "blob", f"{sha}:{name}")
        files[name[len(rel) + 1 :]] = blob.stdout
    return files, "", sha


def decide(
    name: str,
    local_dir: Path,
    local: Mapping[str, str],
    image: Mapping[str, str] | None,
    why_not: str,
    commit: str,
    carry: bool | None = None,
) -> RecipeSource:
    """Carry the folder unless the image holds the same recipe (`carry` None); `carry` True always carries, False
    never does and refuses a recipe the image does not hold. `local`/`image` are `file_digests` of the folder and
    of `recipes/<name>` at the image's commit (None: not there, `why_not` says why)."""
    if image is None:
        in_image, reason = False, why_not
    else:
        changed = sorted(rel for rel in set(local) | set(image) if local.get(rel) != image.get(rel))
        in_image = not changed
        shown = ", ".join(changed[:_SHOW]) + (f" and {len(changed) - _SHOW} more" if len(changed) > _SHOW else "")
        reason = f"the same as recipes/{name} at {commit}" if in_image else f"changed since {commit}: {shown}"
    if carry is False and not in_image:
        raise FtkitError.one(
            f"the image does not hold {name} as it is here ({reason})",
            file=local_dir,
            field="--no-carry-recipe",
            fix="leave out --no-carry-recipe: the job then carries your folder (SageMaker: the 'recipe' input "
            "channel; RunPod: the network volume, --network-volume). Or build and push an image from a commit "
            "that holds it (make containers PUSH=1) and pass --image and --image-commit",
        )
    carried = not in_image if carry is None else carry
    return RecipeSource(name, local_dir, fingerprint(local), carried, reason)


def recipe_source(
    recipe_dir: Path, name: str, carry: bool | None = None, image_commit: str | None = None
) -> RecipeSource:
    """`decide` for a local recipe folder against git (the I/O edge): the image is taken to hold `recipes/<name>`
    as it is at `image_commit` (default HEAD)."""
    commit = image_commit or "HEAD"
    image_files, why_not, sha = git_files(recipe_dir, commit)
    image = file_digests(image_files) if image_files is not None else None
    label = commit if sha == commit else f"{commit} ({sha})"
    return decide(name, recipe_dir, folder_digests(recipe_dir), image, why_not, label, carry)


def image_copy_note(source: RecipeSource, what: str) -> str:
    """The launch note for a recipe the image holds: which copy runs, and what happens if the image is older."""
    return (
        f"recipe: the image's recipes/{source.name} ({source.reason}); if the image holds another version {what} "
        "stops at once (exit 2): --carry-recipe carries your folder instead"
    )


def check_copy(folder: Path, expected: str, *, carried: bool, image_commit: str, fix: str) -> str:
    """The fingerprint of the copy a job is about to run; an error (exit 2) when the launcher printed the job for
    another one (`expected`, empty: a launcher that sent none, nothing to check)."""
    actual = folder_fingerprint(folder)
    if expected and actual != expected:
        what = (
            "the carried recipe"
            if carried
            else f"this image's recipes/{folder.name} (built from commit {image_commit or 'unknown'})"
        )
        raise FtkitError.one(
            f"{what} is not the recipe this job was printed for (sha256 {actual[:12]}, the job's {expected[:12]})",
            file=folder,
            field=FINGERPRINT_KEY,
            fix=fix,
        )
    return actual
