"""The GPU bench's old command line, kept: the bench is the package benchmarks/gpu_bench (`--help` says what it
measures). `python benchmarks/gpu_recipe_bench.py ARGS` = `python benchmarks/gpu_bench ARGS`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
