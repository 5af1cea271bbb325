"""The GPU bench: peak memory, step time and tokens/s of the recipes on one GPU (`python benchmarks/gpu_bench --help`).

Recipes are read and checked through ftkit (`gpu_bench.recipes`), the architectures against ftkit's catalog
(`gpu_bench.models`); `gpu_bench.bench` measures, `gpu_bench.records` writes the JSON record, `gpu_bench.cli` is the
command line (also `python benchmarks/gpu_recipe_bench.py`, its old name). A checkout without an installed ftkit
gets the repo's `tools/` on the path.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TOOLS = str(Path(__file__).resolve().parents[2] / "tools")
if _TOOLS not in sys.path:
    sys.path.append(_TOOLS)  # an installed ftkit (or PYTHONPATH) comes first
