"""Container image references: parse IMAGE:TAG@DIGEST, read and pin a recipe.yaml's `container:` block, and
tell whether this process runs in the image its recipe pins.

An image cannot carry its own digest, so the launcher sets `FTKIT_IMAGE_DIGEST` at run time; the image bakes in
`FTKIT_IMAGE` and the OCI labels. `python -m ftkit.image_refs RECIPE_YAML` prints the image a recipe runs in (what
`make recipe` pulls; it reads the block as text, so it needs no YAML library). Building and publishing images is
release tooling: `tools/ftkit_release/images.py`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DIGEST_ENV = "FTKIT_IMAGE_DIGEST"
IMAGE_ENV = "FTKIT_IMAGE"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# What a cloud job runs in the image (tini forwards SIGTERM to it).
ENTRYPOINT = ["python", "-m", "ftkit.cloud.entrypoint"]


@dataclass(frozen=True)
class ImageRef:
    image: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        return self.image + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse_ref(ref: str) -> ImageRef:
    """'ghcr.io/o/axolotl:TAG@sha256:…' -> ImageRef (a registry port is not taken for a tag)."""
    ref = ref.strip()
    rest, _, digest = ref.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    image, tag = (rest[:colon], rest[colon + 1 :]) if colon > slash else (rest, "")
    if digest and not DIGEST.match(digest):
        raise ValueError(f"'{ref}': the digest must be sha256:<64 hex digits>")
    if not image:
        raise ValueError(f"'{ref}': no image name")
    return ImageRef(image, tag or None, digest or None)


# ---------------------------------------------------------------- recipe.yaml's container block


_CONTAINER_KEY = re.compile(r"^container:\s*(#.*)?$")
_FIELD = re.compile(r"^(?P<indent>[ \t]+)(?P<key>image|tag|digest):[ \t]*(?P<value>[^#\s][^#]*?|)(?P<tail>[ \t]*#.*)?$")


def _set_value(match: re.Match[str], value: str) -> str:
    """One `key: value  # comment` line with a new value; the comment keeps its column where the value fits."""
    old = match.group("value")
    if old[:1] in ("'", '"'):
        value = f"{old[0]}{value}{old[0]}"
    head = f"{match.group('indent')}{match.group('key')}: {value}"
    tail = match.group("tail")
    if not tail:
        return head
    column = match.start("tail") + len(tail) - len(tail.lstrip())
    return (head.ljust(column) if len(head) < column else head + " ") + tail.lstrip()


def _container_block(lines: list[str]) -> tuple[int, int]:
    """[start, end) of the top-level `container:` mapping: its key line and the indented lines under it."""
    start = next((i for i, line in enumerate(lines) if _CONTAINER_KEY.match(line.rstrip("\r\n"))), None)
    if start is None:
        raise ValueError("no block-style 'container:' mapping at the top level of recipe.yaml")
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
        end += 1
    return start, end


def _container_fields(text: str) -> tuple[list[str], dict[str, tuple[int, re.Match[str]]]]:
    """The lines of a recipe.yaml and its `container:` block's image/tag/digest lines (index, match)."""
    lines = text.splitlines(keepends=True)
    start, end = _container_block(lines)
    fields: dict[str, tuple[int, re.Match[str]]] = {}
    for i in range(start + 1, end):
        if (m := _FIELD.match(lines[i].rstrip("\r\n"))) and m.group("key") not in fields:
            fields[m.group("key")] = (i, m)
    if "image" not in fields or "tag" not in fields:
        raise ValueError("the 'container:' block needs 'image:' and 'tag:' lines")
    return lines, fields


def recipe_image(text: str) -> str:
    """IMAGE:TAG[@DIGEST] of a recipe.yaml's `container:` block (what `make recipe` runs in). Reads the block's lines
    as `pin_container` writes them, so the Makefile needs no YAML library."""
    _, fields = _container_fields(text)
    value = {k: m.group("value").strip("'\"") for k, (_, m) in fields.items()}
    if value.get("digest") in ("null", "~"):  # YAML's null, written out
        value["digest"] = ""
    return image_ref(value)


def pin_container(text: str, ref: ImageRef) -> str:
    """recipe.yaml text with `container.tag`/`container.digest` set to ref's, when `container.image` is ref's image.

    Only those two values change: comments, spacing and every other line stay as they were. A recipe
    for another image comes back unchanged. Raises ValueError when there is no block-style `container:`
    with `image:` and `tag:` lines.
    """
    if ref.tag is None or ref.digest is None:
        raise ValueError(f"'{ref}': pinning needs both a tag and a digest (IMAGE:TAG@sha256:…)")
    lines, fields = _container_fields(text)
    if fields["image"][1].group("value").strip("'\"") != ref.image:
        return text
    for key, value in (("tag", ref.tag), ("digest", ref.digest)):
        if key in fields:
            i, m = fields[key]
            lines[i] = _set_value(m, value) + lines[i][len(lines[i].rstrip("\r\n")) :]
        else:  # no digest line yet: one under tag:, with the same indent
            i, m = fields["tag"]
            eol = lines[i][len(lines[i].rstrip("\r\n")) :] or "\n"
            lines.insert(i + 1, f"{m.group('indent')}digest: {value}{eol}")
    return "".join(lines)


# ---------------------------------------------------------------- the running image


def running_image_digest(env: Mapping[str, str] | None = None) -> str | None:
    """The digest of the image this process runs in: `FTKIT_IMAGE_DIGEST` (set by the launcher), else None.

    Accepts `sha256:…` or `IMAGE@sha256:…`; anything else counts as unknown (None).
    """
    value = (os.environ if env is None else env).get(DIGEST_ENV, "").strip().lower()
    value = value.rpartition("@")[2]
    return value if DIGEST.match(value) else None


def _field(container: Any, key: str) -> Any:
    return container.get(key) if isinstance(container, Mapping) else getattr(container, key, None)


def digest_warning(recipe_container: Any, running_digest: str | None) -> str | None:
    """A warning when the recipe pins an image digest and this run is not in that image, else None.

    `recipe_container` is the recipe's ContainerRef (or a mapping with image/tag/digest). A recipe
    without a digest (images not published yet) has nothing to compare with: None.
    """
    image, tag, digest = (_field(recipe_container, k) for k in ("image", "tag", "digest"))
    if not digest:
        return None
    pinned = f"{image}:{tag}@{digest}"
    if running_digest is None:
        return (
            f"the recipe pins {pinned} but this run is not in a known image ({DIGEST_ENV} is not set): "
            f"its metrics will not name the image they ran on. Run it in the pinned image "
            f"(docker run -e {DIGEST_ENV}={digest} … {image}@{digest}) or set {DIGEST_ENV}."
        )
    if running_digest.strip().lower().rpartition("@")[2] == digest.lower():
        return None
    return (
        f"this run is in image {running_digest}, not the one the recipe pins ({pinned}): the CUDA/torch/engine "
        f"stack may differ from the one its expected metrics were measured on. Run it in {image}@{digest}, "
        f"or pin the new image into the recipe (make pin-images)."
    )


def image_ref(container: Any) -> str:
    """image:tag@digest when the recipe pins a digest (the pull then gets exactly that image), else image:tag.

    `container` is a recipe's ContainerRef or a mapping with image/tag/digest."""
    image, tag, digest = (_field(container, k) for k in ("image", "tag", "digest"))
    return f"{image}:{tag}" + (f"@{digest}" if digest else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Print the image RECIPE_YAML runs in: IMAGE:TAG[@DIGEST]."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m ftkit.image_refs RECIPE_YAML", file=sys.stderr)
        return 2
    print(recipe_image(Path(args[0]).read_text(encoding="utf-8")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
