"""Requirement locks (uv/pip-compile output): parse pins with their hashes, compare locks, write constraints."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)(?:\s*;\s*(.+?))?\s*(?:--hash=|\\|$)")
# Versions every image lock must share with the root requirements.lock (only the torch build differs).
SHARED_PINS = ("axolotl", "trl", "peft", "transformers", "datasets", "accelerate", "tokenizers", "bitsandbytes")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: tuple[str, ...] = ()
    marker: str | None = None
    line: int = 0


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> dict[str, Pin]:
    """`name==version [; marker] [--hash=…] \\` lines of a uv/pip-compile lock, with the --hash lines under each.

    Other requirement forms (`name @ url`, `-e …`) are not pins: hashes under them are not counted for a pin.
    """
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if m := _PIN.match(line):
            current = Pin(normalize(m.group(1)), m.group(2), (), m.group(3), number)
        elif not line.startswith("--hash="):
            current = None
            continue
        if current is not None:
            current = replace(current, hashes=current.hashes + tuple(_HASH.findall(line)))
            pins[current.name] = current
    return pins


def unhashed(lock: Mapping[str, Pin]) -> list[str]:
    """Pins without a single --hash (pip --require-hashes refuses them)."""
    return sorted(f"{p.name}=={p.version} (line {p.line})" for p in lock.values() if not p.hashes)


def base_version(version: str) -> str:
    """'2.13.0+cpu' -> '2.13.0' (the local build label is where the torch builds differ)."""
    return version.split("+", 1)[0]


def pin_mismatches(
    root: Mapping[str, Pin], image: Mapping[str, Pin], names: Iterable[str] = SHARED_PINS, *, label: str = "image lock"
) -> list[str]:
    """Each name whose version in the image lock is missing or differs from the root lock's."""
    problems = []
    for name in (normalize(n) for n in names):
        want, got = root.get(name), image.get(name)
        if want is None:
            problems.append(f"{name}: not in the root requirements.lock")
        elif got is None:
            problems.append(f"{name}: the root lock pins {want.version}, {label} does not pin it")
        elif got.version != want.version:
            problems.append(f"{name}: the root lock pins {want.version}, {label} pins {got.version}")
    return problems


def subset_mismatches(inner: Mapping[str, Pin], outer: Mapping[str, Pin], *, label: str) -> list[str]:
    """Every pin of `inner` (the base image's lock) must be in `outer` with the same version and hashes."""
    problems = []
    for name, pin in sorted(inner.items()):
        other = outer.get(name)
        if other is None:
            problems.append(f"{name}=={pin.version}: in the base lock, missing from {label}")
        elif (other.version, set(other.hashes)) != (pin.version, set(pin.hashes)):
            problems.append(f"{name}: base lock {pin.version}, {label} {other.version} (or other hashes)")
    return problems


def constraints(text: str, drop: Iterable[str] = ()) -> str:
    """The pins of a lock as a constraints file (name==version, no hashes), without the names in `drop`."""
    skip = {normalize(d) for d in drop}
    lines = [f"{p.name}=={p.version}" for p in parse_lock(text).values() if p.name not in skip]
    return "\n".join(sorted(lines)) + "\n"


def cuda_of_lock(lock: Mapping[str, Pin]) -> str | None:
    """The CUDA major.minor of torch's runtime wheel (nvidia-cuda-runtime[-cuXX]) in a lock, else None."""
    for name in ("nvidia-cuda-runtime", "nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu12"):
        if name in lock:
            return ".".join(lock[name].version.split(".")[:2])
    return None


# ---------------------------------------------------------------- Dockerfiles and tags
