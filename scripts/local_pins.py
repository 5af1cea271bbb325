"""Print the pins of a hashed lock whose version has a local label (`torch==2.13.0+cpu`), hash lines included.

PyPI serves no local versions, so `make setup` installs these pins in a pip step of their own, from PyTorch's
wheel index for that label (the Makefile's TORCH_INDEX): only they are looked up there, and an index that cannot
be reached costs one lookup instead of one per package of the lock. Stdlib only: it runs before the lock is
installed.

    python scripts/local_pins.py requirements.lock > .venv/local-pins.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s\\;]+)")


def local_label(version: str) -> str | None:
    """The local version label (`cpu` of `2.13.0+cpu`), or None for a public version."""
    return version.partition("+")[2] or None


def local_pins(lock_text: str) -> dict[str, str]:
    """name -> version of every pin with a local version label."""
    return {
        m["name"]: m["version"]
        for line in lock_text.splitlines()
        if (m := PIN.match(line)) and local_label(m["version"])
    }


def local_pin_blocks(lock_text: str) -> list[str]:
    """Each local-label pin with its continuation lines (`--hash=...`), as requirement-file text."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in lock_text.splitlines():
        if current is None:
            m = PIN.match(line)
            if not (m and local_label(m["version"])):
                continue
            current = []
        current.append(line)
        if not line.rstrip().endswith("\\"):
            blocks.append("\n".join(current))
            current = None
    if current is not None:
        blocks.append("\n".join(current))
    return blocks


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: local_pins.py LOCK", file=sys.stderr)
        return 2
    for block in local_pin_blocks(Path(argv[0]).read_text()):
        print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
