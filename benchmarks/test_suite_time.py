"""Wall and CPU time of test selections (`make test`'s, `make test-fast`'s, collection) at two commits, in turn.

Each commit is exported with `git archive` into a fresh folder (a fresh clone: no pytest cache, no built tiny
model) that uses this checkout's `.venv`; pytest runs there as the Makefile runs it. CPU is user + system of pytest
and every child it waited for (engines, probes), from wait4: on a shared machine it moves less than wall time.
`--workers 1 2` runs each selection in one process and on two pytest-xdist workers (`-n 2 --dist loadgroup`, as
`make test` does since TEST_WORKERS). Prints each run and the ratio of the last run of a selection to its first;
writes the raw numbers to --out as JSON. The fast layer's marker expression is read from each tree's Makefile.

  .venv/bin/python benchmarks/test_suite_time.py --commits HEAD --workers 1 2 --selections make-test fast \
      --out benchmarks/results/test_suite_time-$(date +%F).json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SELECTIONS = ("make-test", "fast", "model-slow", "collect")


def selection_args(tree: Path, selection: str, workers: int) -> list[str]:
    """pytest's arguments for a selection in `tree`, as its Makefile runs them (the FAST expression is its own)."""
    fast = re.search(r"^FAST := (.+)$", (tree / "Makefile").read_text(), re.M)
    default = re.search(r"-m '([^']+)'", tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["pytest"]
                        ["ini_options"]["addopts"])  # fmt: skip
    if fast is None or default is None:
        raise SystemExit(f"{tree}: no `FAST := …` in its Makefile or no `-m '…'` in pyproject's pytest addopts")
    args = {"make-test": [],  # pyproject.toml's addopts: fast + model + slow
            "fast": ["-m", fast.group(1)],
            "model-slow": ["-m", f"({default.group(1)}) and not ({fast.group(1)})"],
            "collect": ["-m", fast.group(1), "--collect-only"]}[selection]  # fmt: skip
    return [*args, "-n", str(workers), "--dist", "loadgroup"] if workers > 1 and selection != "collect" else args


def export(commit: str, into: Path) -> Path:
    """The commit's tree in a folder of its own, with this checkout's .venv linked in."""
    sha = subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()  # fmt: skip
    dst = into / sha
    dst.mkdir()
    archive = subprocess.run(["git", "archive", sha], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
    venv = Path(os.path.realpath(ROOT / ".venv"))
    (dst / ".venv").symlink_to(venv)
    # The Makefile reinstalls the venv when a lock or pyproject.toml is newer than its stamp, as the archive's
    # commit-time mtimes may be: a test that runs `make` would then time a reinstall. The shared venv is what is
    # measured, so the tree's inputs of the stamp get the stamp's own time.
    stamp = venv / ".ftkit-installed"
    if stamp.exists():
        for name in ("requirements.lock", "requirements-models.lock", "pyproject.toml"):
            if (dst / name).exists():
                os.utime(dst / name, ns=(stamp.stat().st_atime_ns, stamp.stat().st_mtime_ns))
    return dst


def summary(out: str) -> dict[str, float]:
    """Counts and pytest's own seconds from its last line (`202 passed, 1 skipped, … in 1508.96s`)."""
    lines = [x for x in out.splitlines() if re.search(r"\b(passed|failed|error|tests? collected)\b", x)]
    last = lines[-1] if lines else ""
    counts = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", last)
    got: dict[str, float] = {k: float(n) for n, k in counts}
    if m := re.search(r"(\d+)(?:/\d+)? tests? collected", last):
        got["collected"] = float(m.group(1))
    if m := re.search(r" in ([\d.]+)s", last):
        got["pytest_seconds"] = float(m.group(1))
    return got


def install_record() -> dict[Path, bytes]:
    """The shared venv's record of where ftkit is installed from: a test that runs a make target needing the venv's
    stamp reinstalls ftkit from the exported tree (seen 2026-12-07), so it is put back after each run."""
    site = Path(os.path.realpath(ROOT / ".venv")) / "lib"
    files = [*site.glob("python3*/site-packages/__editable__.ftkit*.pth"),
             *site.glob("python3*/site-packages/ftkit-*.dist-info/direct_url.json")]  # fmt: skip
    return {f: f.read_bytes() for f in files}


def run_selection(tree: Path, args: list[str]) -> dict[str, object]:
    record = install_record()
    try:
        return _run_selection(tree, args)
    finally:
        for path, content in record.items():
            if path.read_bytes() != content:
                print(f"put back {path} (a test reinstalled ftkit from {tree})", file=sys.stderr)
                path.write_bytes(content)


def _run_selection(tree: Path, args: list[str]) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(tree / "tools"),
           "FTKIT_CACHE": os.environ.get("FTKIT_CACHE", str(ROOT / ".cache"))}  # fmt: skip
    cmd = [str(tree / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    load_before = os.getloadavg()
    start = time.monotonic()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        out = log.read().decode(errors="replace")
    return {"cmd": " ".join(cmd[1:]), "exit": proc.returncode, "wall_s": round(wall, 1),
            "user_s": round(usage.ru_utime, 1), "sys_s": round(usage.ru_stime, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "load_before": load_before,
            "load_after": os.getloadavg(), **summary(out), "tail": out[-1500:]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", nargs="+", default=["HEAD"], help="the first is the baseline")
    ap.add_argument("--selections", nargs="+", choices=SELECTIONS, default=["fast", "collect"])
    ap.add_argument("--workers", nargs="+", type=int, default=[1], help="pytest-xdist workers per run (1: one process)")
    ap.add_argument("--out", type=Path)
    opts = ap.parse_args(argv)
    record: dict[str, object] = {
        "benchmark": "test_suite_time", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "runs": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="suite-time-") as tmp:
        trees = {c: export(c, Path(tmp)) for c in opts.commits}
        record["commits"] = {c: t.name for c, t in trees.items()}
        for selection in opts.selections:
            for tree, workers in ((t, w) for t in trees.values() for w in opts.workers):
                got = run_selection(tree, selection_args(tree, selection, workers))
                got.update(selection=selection, commit=tree.name, workers=workers)
                record["runs"].append(got)  # type: ignore[union-attr]
                print(f"{selection:10} {tree.name} x{workers}  exit {got['exit']}  {got.get('passed', 0):.0f} passed  "
                      f"{got.get('collected', 0):.0f} collected  wall {got['wall_s']:.0f} s  cpu {got['cpu_s']:.0f} s  "
                      f"load {got['load_before'][0]:.1f}->{got['load_after'][0]:.1f}", flush=True)  # fmt: skip
                if opts.out:
                    opts.out.write_text(json.dumps(record, indent=1) + "\n")
            runs = [r for r in record["runs"] if r["selection"] == selection]  # type: ignore[union-attr]
            if len(runs) > 1:
                first, last = runs[0], runs[-1]
                print(f"{selection:10} {last['commit']} x{last['workers']} / {first['commit']} x{first['workers']}: "
                      f"wall {last['wall_s'] / first['wall_s']:.2f}x"
                      f"  cpu {last['cpu_s'] / first['cpu_s']:.2f}x", flush=True)  # fmt: skip
    if opts.out:
        opts.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
