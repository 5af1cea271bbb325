"""`python benchmarks/gpu_bench ARGS` (or `python -m gpu_bench ARGS` from benchmarks/): the GPU bench."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpu_bench.cli import main

sys.exit(main())
