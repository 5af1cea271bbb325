"""The smoke recipe in its image vs in .venv, on the same machine, in turn: wall time of each and the ratio.

    python benchmarks/image_smoke.py [--recipe llama8b-qlora-dpo] [--rounds 1] [--out benchmarks/results/...json]

Each round runs `make recipe NAME=… PROFILE=smoke LOCAL=1` (the baseline: .venv) and then `… IMAGE=1` (the
recipe's image, through the same `make recipe` Docker branch a full run takes), and prints image/.venv per round.
Both must pass their metrics gate. Time on an idle machine: another job on the same cores moves both by several
times (containers/README.md). Needs the images (`make containers`) and .venv (`make setup`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def run(recipe: str, how: str) -> dict[str, object]:
    """One `make recipe` smoke run, LOCAL=1 or IMAGE=1: its wall seconds and exit code."""
    started = time.monotonic()
    proc = subprocess.run(["make", "recipe", f"NAME={recipe}", "PROFILE=smoke", f"{how}=1"], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    seconds = round(time.monotonic() - started, 1)
    if proc.returncode != 0:
        sys.stderr.write((proc.stdout + proc.stderr)[-4000:])
    return {"how": how, "seconds": seconds, "exit_code": proc.returncode}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="llama8b-qlora-dpo")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rounds = []
    for i in range(args.rounds):
        venv, image = run(args.recipe, "LOCAL"), run(args.recipe, "IMAGE")
        ratio = round(float(image["seconds"]) / float(venv["seconds"]), 3)  # type: ignore[arg-type]
        rounds.append({"venv": venv, "image": image, "ratio": ratio})
        print(f"round {i + 1}: .venv {venv['seconds']} s (exit {venv['exit_code']}), image {image['seconds']} s "
              f"(exit {image['exit_code']}): image/.venv = {ratio}", flush=True)  # fmt: skip
    from ftkit.envinfo import git_commit

    commit = git_commit(ROOT)
    result = {
        "benchmark": "image_smoke",
        "recipe": args.recipe,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "cpu": _cpu_model()},
        "rounds": rounds,
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"image_smoke-{datetime.now(UTC):%Y-%m-%d}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"median image/.venv: {result['median_ratio']} ({out.relative_to(ROOT)})")
    failed = [r for r in rounds for k in ("venv", "image") if r[k]["exit_code"] != 0]  # type: ignore[index]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
