"""A checked-in file that a script generates (docs/cli-reference.md, the engines' key lists): the script prints
it, `--write` writes it and `--check` exits 1 when the stored copy is stale, the same way for every such file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def generated_file_main(path: Path, render: Callable[[], str], script: str, description: str | None,
                        argv: Sequence[str] | None = None) -> int:  # fmt: skip
    """Parse `argv` (`--write` | `--check` | nothing: print) and do it for `path`; the exit code."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"write {path.name}")
    mode.add_argument("--check", action="store_true", help=f"exit 1 when the stored {path.name} is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    elif args.check:
        if (path.read_text(encoding="utf-8") if path.is_file() else "") != text:
            print(f"{path} is stale: run {script} --write", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
    else:
        sys.stdout.write(text)
    return 0
