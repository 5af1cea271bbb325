"""The container images, for maintainers: their tags, their locks' agreement, builds, digests pinned into recipes.

Pure functions over text (locks, Dockerfiles, `docker buildx` output) plus a small CLI,
`PYTHONPATH=tools python -m ftkit_release.images tags|check|build|pin|constraints` (`ref` is kept as an alias of
`python -m ftkit.image_refs`). Release tooling, not part of the ftkit runtime: image references and the running
image's digest are `ftkit.image_refs`. The commands and the digest rule: docs/cloud.md, "`images.py`: the image tool
and digests".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftkit.envinfo import git_commit
from ftkit.image_refs import ImageRef, parse_ref, pin_container, recipe_image

from ftkit_release.locks import (
    Pin,
    base_version,
    constraints,
    cuda_of_lock,
    parse_lock,
    pin_mismatches,
    subset_mismatches,
    unhashed,
)

REGISTRY = "ghcr.io/finetune-recipes"
IMAGES = ("base", "axolotl", "unsloth")
_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?\s*$", re.MULTILINE)


def parse_imagetools_inspect(text: str) -> ImageRef:
    """The top-level Name and Digest of `docker buildx imagetools inspect IMAGE:TAG` (the index, not a platform)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if m := re.match(r"^(Name|Digest):\s+(\S+)\s*$", line):  # unindented: the top level
            fields.setdefault(m.group(1), m.group(2))
    if "Name" not in fields or "Digest" not in fields:
        raise ValueError("not `docker buildx imagetools inspect` output: no top-level Name and Digest lines")
    ref = parse_ref(fields["Name"])
    return ImageRef(ref.image, ref.tag, parse_ref(f"x@{fields['Digest']}").digest)


def parse_buildx_metadata(data: Mapping[str, Any]) -> list[ImageRef]:
    """Refs from a `docker buildx build --metadata-file` JSON (image.name may list several, comma-separated)."""
    digest = data.get("containerimage.digest")
    names = str(data.get("image.name") or "")
    if not digest or not names:
        raise ValueError("buildx metadata without 'image.name' and 'containerimage.digest' (was the image pushed?)")
    out = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        ref = parse_ref(name)
        out.append(ImageRef(ref.image, ref.tag, digest))
    return out


def dockerfile_args(text: str) -> dict[str, str]:
    """ARG NAME=default of a Dockerfile (the first default of each name; ARGs without one map to '')."""
    out: dict[str, str] = {}
    for name, default in _ARG.findall(text):
        if name not in out or (not out[name] and default):
            out[name] = default
    return out


def cuda_version(base_args: Mapping[str, str]) -> str:
    """The CUDA release of the base image's wheels: '13.0.3' from ARG CUDA_VERSION=13.0.3."""
    version = base_args.get("CUDA_VERSION", "")
    if not re.match(r"^\d+\.\d+(\.\d+)?$", version):
        raise ValueError(f"base Dockerfile: ARG CUDA_VERSION={version!r} is not a CUDA version")
    return version


def cuda_tag(cuda_version: str) -> str:
    """'13.0.2' -> 'cu130', '12.8' -> 'cu128'."""
    major, minor = cuda_version.split(".")[:2]
    return f"cu{major}{minor}"


def image_tag(version: str, cuda_version: str, torch_version: str) -> str:
    """<version>-cu<cuda>-torch<torch>, e.g. 0.19.0-cu130-torch2.13.0."""
    return f"{version}-{cuda_tag(cuda_version)}-torch{base_version(torch_version)}"


# ---------------------------------------------------------------- repository layout: tags, checks, builds


@dataclass(frozen=True)
class Build:
    name: str
    ref: ImageRef
    dockerfile: Path
    args: dict[str, str] = field(default_factory=dict)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def image_version(name: str, args: Mapping[str, str], lock: Mapping[str, Pin]) -> str:
    """The <version> part of an image's tag: py<python> for base, else the engine's locked version."""
    if name == "base":
        return f"py{args['PYTHON_VERSION']}"
    return lock[name].version


ENGINE_DOCKERFILE = "engine"  # containers/engine/Dockerfile builds every engine image (ARG ENGINE picks the lock)
ENGINE_TITLES = {"axolotl": "Axolotl", "unsloth": "Unsloth"}


def dockerfile_path(containers: Path, name: str) -> Path:
    return containers / ("base" if name == "base" else ENGINE_DOCKERFILE) / "Dockerfile"


def engine_description(name: str, lock: Mapping[str, Pin], cuda: str, torch: str) -> str:
    """The OCI description label of an engine image, from its lock."""
    extras = ["ftkit", "llama.cpp"] + (["llm-compressor"] if "llmcompressor" in lock else [])
    with_axolotl = " (and Axolotl " + lock["axolotl"].version + ")" if name != "axolotl" and "axolotl" in lock else ""
    cuda_mm = ".".join(cuda.split(".")[:2])
    return (f"{ENGINE_TITLES.get(name, name)} {lock[name].version}{with_axolotl} on CUDA {cuda_mm} / torch {torch} "
            f"with {', '.join(extras[:-1])} and {extras[-1]}")  # fmt: skip


def plan(root: Path, registry: str = REGISTRY, commit: str = "unknown") -> list[Build]:
    """The three builds in order (base first), tags from the Dockerfiles' ARGs and the locks."""
    containers = root / "containers"
    base_args = dockerfile_args(_read(containers / "base" / "Dockerfile"))
    torch = base_version(parse_lock(_read(containers / "base" / "requirements.lock"))["torch"].version)
    cuda = cuda_version(base_args)
    builds: list[Build] = []
    for name in IMAGES:
        lock = parse_lock(_read(containers / name / "requirements.lock"))
        ref = ImageRef(f"{registry}/{name}", image_tag(image_version(name, base_args, lock), cuda, torch))
        args = {"GIT_COMMIT": commit, "IMAGE_REF": str(ref), "IMAGE_VERSION": ref.tag or ""}
        if name != "base":
            args |= {"BASE_IMAGE": str(builds[0].ref), "ENGINE": name,
                     "ENGINE_DESCRIPTION": engine_description(name, lock, cuda, torch)}  # fmt: skip
        builds.append(Build(name, ref, dockerfile_path(containers, name), args))
    return builds


@dataclass(frozen=True)
class Builder:
    """How this machine builds images: `docker buildx build`, or a pre-23 Docker client whose `docker build` has
    BuildKit built in (DOCKER_BUILDKIT=1; Debian's docker.io), which needs no buildx plugin."""

    argv: tuple[str, ...] = ("docker", "buildx", "build")
    env: tuple[tuple[str, str], ...] = ()

    @property
    def buildx(self) -> bool:
        return "buildx" in self.argv


def _client_major(client: str) -> int | None:
    try:
        out = subprocess.run([client, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True)
    except OSError:
        return None
    m = re.match(r"(\d+)\.", out.stdout.strip())
    return int(m.group(1)) if m else None


def find_builder() -> Builder:
    """buildx where it is installed, else a Docker client older than 23 (BuildKit without buildx), else an error
    that says what to install. `FTKIT_DOCKER` names the client to use (default: docker, then /usr/bin/docker)."""
    clients = [os.environ["FTKIT_DOCKER"]] if os.environ.get("FTKIT_DOCKER") else ["docker", "/usr/bin/docker"]
    for client in clients:
        if subprocess.run([client, "buildx", "version"], capture_output=True).returncode == 0:
            return Builder((client, "buildx", "build"))
        if (major := _client_major(client)) is not None and major < 23:
            return Builder((client, "build"), (("DOCKER_BUILDKIT", "1"),))
    raise RuntimeError(
        "no way to build with BuildKit here: `docker buildx` is missing and no Docker client older than 23 was "
        "found. Install the buildx plugin, or Debian's docker.io (`make docker-engine`), or set FTKIT_DOCKER."
    )


def build_command(
    build: Build,
    root: Path,
    builder: Builder = Builder(),
    *,
    push: bool = False,
    metadata: Path | None = None,
    extra: str = "",
    ca_bundle: Path | None = None,
) -> list[str]:
    """argv that builds one image (linux/amd64; the repository root is the context). `extra` adds flags (CI: SBOM,
    provenance, cache; `{image}` becomes the image's name); `ca_bundle` is handed over as the BuildKit secret
    `hostca`, which the Dockerfiles' download steps use when it is there (it never lands in a layer)."""
    argv = [*builder.argv, "--platform", "linux/amd64", "-f", str(build.dockerfile), "-t", str(build.ref)]
    for key, value in build.args.items():
        argv += ["--build-arg", f"{key}={value}"]
    if ca_bundle is not None:
        argv += ["--secret", f"id=hostca,src={ca_bundle}"]
    if metadata is not None:
        argv += ["--metadata-file", str(metadata)]
    argv += shlex.split(extra.replace("{image}", build.name))
    if builder.buildx:
        argv.append("--push" if push else "--load")
    elif push or metadata is not None:
        raise ValueError("pushing and buildx metadata need `docker buildx`")
    argv.append(str(root))
    return argv


def check(root: Path) -> list[str]:
    """Every disagreement between the image locks, the root lock and the Dockerfiles ([] when they agree)."""
    problems: list[str] = []
    containers = root / "containers"
    root_lock = parse_lock(_read(root / "requirements.lock"))
    base_lock = parse_lock(_read(containers / "base" / "requirements.lock"))
    base_args = dockerfile_args(_read(containers / "base" / "Dockerfile"))
    cuda = cuda_version(base_args)
    torch = base_lock.get("torch")
    if torch is None or "+" in torch.version:
        problems.append("containers/base/requirements.lock: torch must be the plain PyPI (CUDA) build")
    if base_args.get("TORCH_VERSION") != (torch.version if torch else None):
        problems.append(f"base Dockerfile ARG TORCH_VERSION={base_args.get('TORCH_VERSION')} vs its lock's torch")
    if not base_args.get("PYTHON_VERSION", "").startswith("3.11."):
        problems.append("base Dockerfile ARG PYTHON_VERSION must be a 3.11.x (the locks are for Python 3.11)")
    builds = {b.name: b for b in plan(root)}
    for name in IMAGES:
        path = containers / name / "requirements.lock"
        lock = parse_lock(_read(path))
        label = f"containers/{name}/requirements.lock"
        problems += [f"{label}: {p} has no --hash" for p in unhashed(lock)]
        if (lock_cuda := cuda_of_lock(lock)) is None or not cuda.startswith(lock_cuda + "."):
            problems.append(f"{label}: torch's CUDA runtime is {lock_cuda}, the base image's CUDA is {cuda}")
        if name == "base":
            continue
        problems += [f"{label}: {p}" for p in pin_mismatches(root_lock, lock, label=label)]
        problems += subset_mismatches(base_lock, lock, label=label)
        dockerfile = dockerfile_path(containers, name)
        args = dockerfile_args(_read(dockerfile))
        if args.get("BASE_IMAGE") != builds["base"].args.get("IMAGE_REF") and not any(
            p.startswith(f"{dockerfile.relative_to(root)}: ARG BASE_IMAGE") for p in problems
        ):  # one Dockerfile builds every engine image: report it once
            problems.append(
                f"{dockerfile.relative_to(root)}: ARG BASE_IMAGE={args.get('BASE_IMAGE')} is not the base image "
                f"these locks build ({builds['base'].ref})"
            )
    return problems


# ---------------------------------------------------------------- CLI


OS_BASE_LOCAL = "finetune-recipes/os-base:bookworm"  # containers/scripts/os-base.sh (debootstrap)
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
SPACY_MODEL = "en_core_web_sm"


def spacy_model_arg(requested: str) -> str:
    """The SPACY_MODEL build arg: 'auto' is en_core_web_sm when github.com (where spaCy publishes it) answers on
    port 443 within 5 s, else 'none'; anything else is taken as given."""
    if requested != "auto":
        return requested
    import socket

    try:
        socket.create_connection(("github.com", 443), timeout=5).close()
    except OSError:
        return "none"
    return SPACY_MODEL


def _docker_out(*argv: str) -> str:
    return subprocess.run(["docker", *argv], capture_output=True, text=True).stdout.strip()


def _build(root: Path, args: argparse.Namespace) -> None:
    """Build (and with --push publish) the images in order. A pushed build writes buildx metadata to
    .cache/images/<image>.json (what `pin` reads), and the later images build FROM the base by digest. A local
    build records each image's build time, size and `pip check` in .cache/images/build-record.json."""
    out = root / ".cache" / "images"
    builder = Builder() if args.dry_run else find_builder()
    spacy = spacy_model_arg(args.spacy_model)
    if spacy == "none" and args.spacy_model == "auto":
        print("note: github.com is not reachable, so the engine images are built without the spaCy model "
              "en_core_web_sm (SPACY_MODEL=none); the published images have it", flush=True)  # fmt: skip
    ca = None if args.ca in ("", "none") else Path(args.ca)
    base_digest: str | None = None
    record: list[dict[str, Any]] = []
    for b in plan(root, args.registry, git_commit(root)):
        if b.name not in args.only:
            continue
        b.args.update({"OS_BASE": args.os_base} if b.name == "base" else {"SPACY_MODEL": spacy})
        if base_digest and "BASE_IMAGE" in b.args:
            b.args["BASE_IMAGE"] = f"{b.args['BASE_IMAGE']}@{base_digest}"
        metadata = out / f"{b.name}.json" if args.push else None
        extra = os.environ.get("BUILDX_FLAGS", "")
        cmd = build_command(b, root, builder, push=args.push, metadata=metadata, extra=extra,
                            ca_bundle=ca if ca is not None and ca.is_file() else None)  # fmt: skip
        print("+ " + shlex.join(cmd), flush=True)
        if args.dry_run:
            continue
        out.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        subprocess.run(cmd, check=True, env=os.environ | dict(builder.env))
        seconds = round(time.monotonic() - started, 1)
        if metadata is not None and b.name == "base":
            base_digest = parse_buildx_metadata(json.loads(metadata.read_text(encoding="utf-8")))[0].digest
        if not args.push:
            check = subprocess.run(["docker", "run", "--rm", "--entrypoint", "pip", str(b.ref), "check"],
                                   capture_output=True, text=True)  # fmt: skip
            size = int(_docker_out("image", "inspect", "-f", "{{.Size}}", str(b.ref)) or 0)
            record.append({"image": str(b.ref), "build_s": seconds, "size_bytes": size,
                           "pip_check": (check.stdout + check.stderr).strip(), "pip_check_ok": check.returncode == 0,
                           "args": {k: v for k, v in b.args.items() if k != "ENGINE_DESCRIPTION"}})  # fmt: skip
    if record:
        (out / "build-record.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        for r in record:
            print(f"{r['image']}: built in {r['build_s']:.0f} s, {r['size_bytes'] / 1e9:.2f} GB, "
                  f"pip check: {r['pip_check'].splitlines()[-1] if r['pip_check'] else '?'}")  # fmt: skip


def _refs_from(args: argparse.Namespace) -> list[ImageRef]:
    refs = [parse_ref(r) for r in args.refs]
    for path in args.metadata:
        refs += parse_buildx_metadata(json.loads(Path(path).read_text(encoding="utf-8")))
    refs += [parse_imagetools_inspect(Path(p).read_text(encoding="utf-8")) for p in args.inspect]
    return refs


def pin_recipes(recipes: Path, refs: Sequence[ImageRef]) -> list[tuple[Path, ImageRef]]:
    """Write each ref's tag and digest into every recipe.yaml that uses its image; the (file, ref) changed."""
    changed = []
    for path in sorted(recipes.glob("*/recipe.yaml")):
        text = original = _read(path)
        for ref in refs:
            new = pin_container(text, ref)
            if new != text:
                changed.append((path, ref))
            text = new
        if text != original:
            path.write_text(text, encoding="utf-8")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftkit_release.images", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository root (default: .)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tags", help="the tag each image gets")
    sub.add_parser("check", help="image locks vs the root lock and the Dockerfiles")
    build = sub.add_parser("build", help="build base, axolotl, unsloth (in that order) with BuildKit")
    build.add_argument("--push", action="store_true", help="push to the registry (buildx; else the local store)")
    build.add_argument(
        "--os-base",
        default=os.environ.get("OS_BASE") or OS_BASE_LOCAL,
        help=f"the OS base image (default $OS_BASE or {OS_BASE_LOCAL}, made by os-base.sh)",
    )
    build.add_argument(
        "--spacy-model",
        default=os.environ.get("SPACY_MODEL") or "auto",
        help="en_core_web_sm, none, or auto (default: en_core_web_sm when github.com answers)",
    )
    build.add_argument("--ca", default=str(HOST_CA), help="CA bundle given to the build as secret 'hostca' (none)")
    build.add_argument("--dry-run", action="store_true", help="print the commands only")
    build.add_argument("--registry", default=REGISTRY)
    build.add_argument("--only", nargs="*", choices=IMAGES, default=list(IMAGES))
    pin = sub.add_parser("pin", help="write published tags and digests into every recipe.yaml")
    pin.add_argument("refs", nargs="*", help="IMAGE:TAG@sha256:DIGEST")
    pin.add_argument("--metadata", nargs="*", default=[], help="`docker buildx build --metadata-file` JSON files")
    pin.add_argument("--inspect", nargs="*", default=[], help="saved `docker buildx imagetools inspect` output")
    pin.add_argument("--recipes", type=Path, default=None, help="recipes folder (default: ROOT/recipes)")
    ref = sub.add_parser("ref", help="the image a recipe runs in: IMAGE:TAG[@DIGEST] from its recipe.yaml")
    ref.add_argument("recipe_yaml", type=Path)
    cons = sub.add_parser("constraints", help="a lock's pins without hashes, for `uv pip compile -c`")
    cons.add_argument("lock", type=Path)
    cons.add_argument("--drop", nargs="*", default=[], help="names to leave out")
    args = parser.parse_args(argv)
    root = args.root.resolve()

    if args.command == "tags":
        for b in plan(root):
            print(b.ref)
    elif args.command == "check":
        problems = check(root)
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        print("image locks agree with requirements.lock and the Dockerfiles" if not problems else "", end="\n")
        return 1 if problems else 0
    elif args.command == "build":
        _build(root, args)
    elif args.command == "pin":
        refs = _refs_from(args)
        if not refs:
            parser.error("pin: give IMAGE:TAG@sha256:… refs, --metadata files or --inspect files")
        for path, ref in pin_recipes(args.recipes or root / "recipes", refs):
            print(f"{path.relative_to(root) if path.is_relative_to(root) else path}: {ref}")
    elif args.command == "ref":
        print(recipe_image(_read(args.recipe_yaml)))
    elif args.command == "constraints":
        sys.stdout.write(constraints(_read(args.lock), args.drop))
    return 0


if __name__ == "__main__":
    sys.exit(main())
