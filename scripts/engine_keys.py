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

import json
import sys

from ftkit.engines.known_keys import KEYS_FILE, generate
from ftkit_release.generated_file import generated_file_main


def main(argv: list[str] | None = None) -> int:
    return generated_file_main(KEYS_FILE, lambda: json.dumps(generate(), indent=1) + "\n", "scripts/engine_keys.py",
                               __doc__, argv)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
