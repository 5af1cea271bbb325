#!/usr/bin/env python3
"""Write tools/ftkit/engines/engine_keys.json: the config keys of Axolotl's, TRL's and PEFT's schemas.

  scripts/engine_keys.py            print what it would write
  scripts/engine_keys.py --write    write tools/ftkit/engines/engine_keys.json
  scripts/engine_keys.py --check    exit 1 when the stored file differs from the installed packages

ftkit checks engine config keys against this list so that a mistyped key or `--set` is answered before the engine
is imported (seconds). Run it after changing the Axolotl, TRL or PEFT pins; tests/test_cli_speed.py fails when the
stored list differs from the installed packages.
"""

from __future__ import annotations

import argparse
import json
import sys

from ftkit.engines.known_keys import KEYS_FILE, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"write {KEYS_FILE.name}")
    mode.add_argument("--check", action="store_true", help="exit 1 when the stored file is stale")
    args = parser.parse_args(argv)
    text = json.dumps(generate(), indent=1) + "\n"
    if args.write:
        KEYS_FILE.write_text(text, encoding="utf-8")
        print(f"wrote {KEYS_FILE}")
    elif args.check:
        current = KEYS_FILE.read_text(encoding="utf-8") if KEYS_FILE.is_file() else ""
        if current != text:
            print(f"{KEYS_FILE} is stale: run scripts/engine_keys.py --write", file=sys.stderr)
            return 1
        print(f"{KEYS_FILE} is up to date")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
