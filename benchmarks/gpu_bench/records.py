"""What the GPU bench writes: the JSON record (rewritten after every case), the recipe/baseline ratios, a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    by = {r["name"]: r for r in results if "tokens_per_second" in r}
    out: dict[str, Any] = {}
    for kind in ("sft", "dpo"):
        rec, base = by.get(f"{kind}-recipe"), by.get(f"{kind}-baseline")
        if not (rec and base):
            continue
        entry: dict[str, Any] = {
            "tokens_per_second_recipe_over_baseline": round(rec["tokens_per_second"] / base["tokens_per_second"], 3),
            "step_time_baseline_over_recipe": round(base["step_seconds_mean"] / rec["step_seconds_mean"], 3),
        }
        for key in ("peak_allocated_gib", "peak_reserved_gib", "device_used_gib"):
            if rec.get(key) and base.get(key):
                entry[f"{key.removesuffix('_gib')}_recipe_over_baseline"] = round(rec[key] / base[key], 3)
        out[kind] = entry
    return out


def print_table(results: list[dict[str, Any]], device: str) -> None:
    unit = "GPU" if device == "cuda" else "CPU (not GPU numbers)"
    print(f"\n=== results on {unit}")
    head = f"{'case':<13} {'impl':<7} {'tok/s':>9} {'step s':>8} {'p50 s':>8} {'alloc GiB':>10} {'resv GiB':>9} "
    print(head + f"{'used GiB':>9} {'trainable':>11}  loss first→last")
    for r in results:
        if "tokens_per_second" not in r:
            print(f"{r['name']:<13} {r.get('error') or r.get('skipped') or 'no result'}"[:160])
            continue

        def gib(key: str, r: dict[str, Any] = r) -> str:
            return "n/a" if r.get(key) is None else f"{r[key]:.2f}"

        impl = str(r.get("implementation", "")).split(" ")[0].split(".")[0]
        print(f"{r['name']:<13} {impl:<7} {r['tokens_per_second']:>9.0f} {r['step_seconds_mean']:>8.3f} "
              f"{r['step_seconds_p50']:>8.3f} {gib('peak_allocated_gib'):>10} {gib('peak_reserved_gib'):>9} "
              f"{gib('device_used_gib'):>9} {r['trainable_params']:>11,}  "
              f"{r['loss_first']:.3f}→{r['loss_last']:.3f}")  # fmt: skip


def write(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    tmp.replace(path)
