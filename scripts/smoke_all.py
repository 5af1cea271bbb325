#!/usr/bin/env python3
"""Run recipes' smoke profiles as a new user does and print one table of the results.

Each recipe runs `ftkit recipe run NAME --profile smoke` (nothing else set) --repeat times; the table gives each
run's exit code, wall time and the values its metrics gate checked, and whether the repeats agree (every gated
value within --rel of the others). Exit 0 only when every run passed and the repeats agreed.

  scripts/smoke_all.py                      every recipe once
  scripts/smoke_all.py --repeat 2 --record  every recipe twice; recipes/smoke-runs.yaml and the catalog updated
  scripts/smoke_all.py --rotate 3 --skip llama8b-qlora-dpo
                                            .ci/run: the 3 recipes of this commit's slot of the rotation
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from ftkit.recipes.load import list_recipe_dirs
from ftkit.recipes.smoke_runs import (
    disagreements,
    gated_metrics,
    load_smoke_runs,
    rotation,
    smoke_run_from,
    write_smoke_runs,
)

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_NUM_THREADS")


def threads_setting() -> str:
    set_ = [f"{v}={os.environ[v]}" for v in THREAD_VARS if os.environ.get(v)]
    return " ".join(set_) or "default"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def rotation_index() -> tuple[int, str]:
    """The number of commits up to HEAD, so consecutive commits take consecutive slots; in a shallow clone (which
    cannot count them) HEAD's hash, which spreads slots at random."""
    if _git("rev-parse", "--is-shallow-repository") == "true":
        head = _git("rev-parse", "HEAD")
        return int(head[:8], 16), f"HEAD {head[:7]} (a shallow clone: no commit count)"
    count = int(_git("rev-list", "--count", "HEAD"))
    return count, f"{count} commits up to HEAD"


def run_once(name: str, runs_dir: Path, log: Path) -> dict:
    """One `ftkit recipe run NAME --profile smoke` into its own runs dir: exit code, wall time, metrics.json."""
    start = time.monotonic()
    with log.open("w") as fh:
        cmd = [sys.executable, "-m", "ftkit", "recipe", "run", name, "--profile", "smoke", "--runs-dir", str(runs_dir)]
        code = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - start
    found = sorted(runs_dir.glob(f"{name}/*/metrics.json"))
    metrics = json.loads(found[-1].read_text()) if found else {}
    return {"recipe": name, "exit": code, "wall_s": round(wall, 1), "log": str(log),
            "run_dir": str(found[-1].parent) if found else None, "status": metrics.get("status"),
            "commit": metrics.get("git_commit"), "gated": gated_metrics(metrics), "metrics": metrics}  # fmt: skip


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def table(results: list[dict], verdicts: dict[str, list[str]]) -> str:
    lines = ["| recipe | run | exit | wall | gated metrics | repeats agree |", "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        gated = ", ".join(f"{k} {v:.4g}" for k, v in r["gated"].items()) or "–"
        agree = (
            ("yes" if not verdicts[r["recipe"]] else "NO: " + "; ".join(verdicts[r["recipe"]]))
            if r["repeat"] == 1
            else ""
        )
        lines.append(f"| {r['recipe']} | {r['repeat']} | {r['exit']} | {minutes(r['wall_s'])} | {gated} | {agree} |")
    return "\n".join(lines)


def record(results: list[dict], verdicts: dict[str, list[str]]) -> list[str]:
    """recipes/smoke-runs.yaml gets every recipe whose runs all passed and agreed on a clean commit."""
    runs, notes = load_smoke_runs(ROOT / "recipes"), []
    for name in dict.fromkeys(r["recipe"] for r in results):
        mine = [r for r in results if r["recipe"] == name]
        last = mine[-1]
        if any(r["exit"] != 0 for r in mine) or verdicts[name]:
            notes.append(f"{name}: not recorded (a run failed or the repeats disagree)")
        elif str(last["commit"]).endswith("-dirty"):
            notes.append(f"{name}: not recorded (the checkout had local changes: record from a clean one)")
        else:
            runs[name] = smoke_run_from(last["metrics"], last["wall_s"], len(mine), threads_setting())
            notes.append(f"{name}: recorded ({runs[name].date}, {runs[name].commit[:7]})")
    write_smoke_runs(ROOT / "recipes", runs)
    subprocess.run([sys.executable, "-m", "ftkit", "recipe", "catalog", "--write"], cwd=ROOT, check=True)
    return notes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="recipes (default: every recipe under recipes/)")
    p.add_argument("--repeat", type=int, default=1, help="runs per recipe (their gated metrics must agree)")
    p.add_argument("--rotate", type=int, metavar="K", help="run only the K recipes of this commit's rotation slot")
    p.add_argument("--index", type=int, help="the rotation index (default: the number of commits up to HEAD)")
    p.add_argument("--skip", action="append", default=[], help="leave this recipe out (repeatable)")
    p.add_argument("--rel", type=float, default=0.01, help="repeats agree within this share of a value (0.01)")
    p.add_argument("--floor", type=float, default=1e-3, help="... or within this absolute difference (1e-3)")
    p.add_argument("--runs-dir", type=Path, help="where the runs go (default runs/smoke-all/<UTC time>)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--record", action="store_true", help="write passing runs to recipes/smoke-runs.yaml")
    p.add_argument("--plan", action="store_true", help="print which recipes would run, run nothing")
    args = p.parse_args(argv)

    names = args.names or [d.name for d in list_recipe_dirs(ROOT / "recipes")]
    names = [n for n in names if n not in args.skip]
    if args.rotate:
        index, why = rotation_index() if args.index is None else (args.index, "--index")
        slot, slots, names = rotation(names, index, args.rotate)
        print(f"rotation: slot {slot + 1} of {slots} ({why}): {', '.join(names)}; any {slots} consecutive "
              "commits run every recipe", flush=True)  # fmt: skip
    if args.plan:
        print("\n".join(names))
        return 0
    runs_dir = args.runs_dir or ROOT / "runs" / "smoke-all" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    runs_dir.mkdir(parents=True, exist_ok=True)
    print(f"threads: {threads_setting()}; runs: {runs_dir}", flush=True)

    results, total = [], len(names) * args.repeat
    for name in names:
        for i in range(1, args.repeat + 1):
            print(f"[{len(results) + 1}/{total}] {name} run {i} ...", end=" ", flush=True)
            r = run_once(name, runs_dir / f"run{i}", runs_dir / f"{name}-{i}.log")
            r["repeat"] = i
            results.append(r)
            print(f"exit {r['exit']} ({r['status']}), {minutes(r['wall_s'])}", flush=True)
    verdicts = {n: disagreements([r["gated"] for r in results if r["recipe"] == n], args.rel, args.floor)
                for n in names}  # fmt: skip
    print()
    print(table(results, verdicts))
    if args.json:
        slim = [{k: v for k, v in r.items() if k != "metrics"} for r in results]
        args.json.write_text(
            json.dumps({"threads": threads_setting(), "results": slim, "disagree": verdicts}, indent=1)
        )
    if args.record:
        print("\n".join(record(results, verdicts)))
    failed = [r for r in results if r["exit"] != 0] + [n for n, v in verdicts.items() if v]
    print(f"\n{len(names)} recipe(s), {len(results)} run(s): " + ("all passed" if not failed else "FAILED"))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
