"""Throughput and peak memory of `ftkit data validate` against a baseline, in one run.

Input: a JSONL of real preference pairs (Anthropic hh-rlhf harmless-base test, MIT, from
../shared/data), converted by `ftkit data convert --to preference` and repeated until the file
reaches each target size. Both sides check every row against the same rules:

  ftkit     validate_file(path, dpo.schema.json, workers=N): orjson parsing, the JSON Schema
            (jsonschema-rs fast path), the preference/turn-order format checks, N processes.
  baseline  datasets.load_dataset("json") (fresh cache) and a pydantic model of the same schema,
            row by row: what people write first.

Each side runs in its own process; peak RSS is read from the kernel (ru_maxrss) for the process
and, for ftkit's workers, the largest worker. Prints MB/s, the ratio and the peaks, and writes the
raw numbers with hardware, versions, commit and date to benchmarks/results/.

    python benchmarks/validate_throughput.py --sizes 0.25 1.0          # GB
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "recipes/llama8b-qlora-dpo/dpo.schema.json"

FTKIT = """
import json, resource, sys, time
from ftkit.data.validate import validate_file
t = time.perf_counter()
r = validate_file(sys.argv[1], sys.argv[2], workers=int(sys.argv[3]))
dt = time.perf_counter() - t
print(json.dumps({"rows": r.rows, "valid": r.valid, "seconds": dt,
    "rss_self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_worker_max_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

BASELINE = """
import json, resource, sys, time, tempfile
from typing import Literal
import datasets
from pydantic import BaseModel, Field, ValidationError
datasets.disable_progress_bars()
class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str
class Pair(BaseModel):
    id: str | int | None = None
    prompt: str | list[Message]
    chosen: list[Message] = Field(min_length=1)
    rejected: list[Message] = Field(min_length=1)
t = time.perf_counter()
ds = datasets.load_dataset("json", data_files=sys.argv[1], split="train", cache_dir=tempfile.mkdtemp())
valid = rows = 0
for row in ds:
    rows += 1
    try:
        Pair.model_validate(row)
        valid += 1
    except ValidationError:
        pass
dt = time.perf_counter() - t
print(json.dumps({"rows": rows, "valid": valid, "seconds": dt,
    "rss_self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_worker_max_mib": 0}))
"""


def build_input(target_bytes: int, workdir: Path, shared: Path) -> Path:
    from ftkit.data.convert import convert_file

    pairs = workdir / "pairs.jsonl"
    if not pairs.exists():
        convert_file(shared / "hh-rlhf-harmless-base-test.jsonl.gz", pairs, "preference", workdir / "aside.jsonl")
    rows = [json.loads(x) for x in pairs.read_text().splitlines()]
    out = workdir / f"hh-{target_bytes >> 20}MiB.jsonl"
    if out.exists() and out.stat().st_size >= target_bytes:
        return out
    written, copy = 0, 0
    with out.open("w") as fh:
        while written < target_bytes:
            for r in rows:
                line = json.dumps({**r, "id": f"{r['id']}-copy{copy}"}) + "\n"
                fh.write(line)
                written += len(line)
            copy += 1
    return out


def run(code: str, *args: str) -> dict:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.25, 1.0], help="file sizes in GB")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ftkit-validate-bench")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results" / f"validate_throughput-{dt.date.today()}.json"
    )
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "tools"))
    from ftkit import envinfo

    results = []
    for gb in args.sizes:
        path = build_input(int(gb * 1e9), args.workdir, args.shared)
        mb = path.stat().st_size / 1e6
        ours = run(FTKIT, str(path), str(SCHEMA), str(args.workers))
        base = run(BASELINE, str(path))
        row = {
            "file_mb": round(mb, 1),
            "rows": ours["rows"],
            "ftkit": {**ours, "mb_per_s": round(mb / ours["seconds"], 1), "workers": args.workers},
            "baseline": {**base, "mb_per_s": round(mb / base["seconds"], 1)},
        }
        row["ratio"] = round(row["ftkit"]["mb_per_s"] / row["baseline"]["mb_per_s"], 2)
        assert ours["rows"] == base["rows"], "both sides must read every row"
        results.append(row)
        print(
            f"{mb:8.0f} MB  {ours['rows']:>9} rows | ftkit {row['ftkit']['mb_per_s']:6.1f} MB/s "
            f"(peak RSS {ours['rss_self_mib']:.0f} MiB + {args.workers} workers "
            f"<= {ours['rss_worker_max_mib']:.0f} MiB each)"
            f" | baseline {row['baseline']['mb_per_s']:6.1f} MB/s (peak RSS {base['rss_self_mib']:.0f} MiB)"
            f" | ratio {row['ratio']:.2f}x",
            flush=True,
        )
    hw = envinfo.hardware()
    record = {
        "benchmark": "validate_throughput",
        "date": str(dt.date.today()),
        "commit": envinfo.git_commit(ROOT),
        "hardware": envinfo.hardware_label(hw),
        "versions": envinfo.versions(),
        "input": "hh-rlhf harmless-base test pairs (MIT), converted to preference rows and repeated",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
