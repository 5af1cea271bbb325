"""The estimator against published, measured peaks (benchmarks/vram_reference.yaml), entry by entry.

Every in-test entry must be within its tolerance, except the known misses below, each with the
reason; a known miss that comes within tolerance fails too, so the list cannot go stale. The whole
error table is printed (pytest -s, or in a failure).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from vram_reference_check import check, load_entries

KNOWN_MISSES = {
    "litgpt-llama-3.1-8b-qlora-a10g": "-10.5 %. Run with bitsandbytes 0.42.0, which kept every 4-bit layer's input "
    "(bitsandbytes#1270, modelled): that closed 15 points. The rest is unexplained; LitGPT's LoRA runs agree",
    "litgpt-llama-2-7b-qlora-a10g": "-17 %: as above, ~2 GiB unexplained",
    "litgpt-mistral-7b-qlora-a10g": "-16 %: as above, ~2 GiB unexplained",
    "torchtune-llama-3.2-3b-full-packed4096-ac-compile-a100": "+21 %: torch.compile and chunked cross-entropy",
    "answerai-llama-2-7b-qlora-fsdp2-ctx512-bs1-3090": "-14 %: FSDP keeps ~3.7 GiB after wrapping 4-bit shards",
    "answerai-llama-2-7b-qlora-fsdp2-ctx2048-bs1-3090": "+11.5 %: the same runs at 512 tokens are 14 % under; the "
    "estimate grows faster with length than these runs did",
    "llamafactory-llama-2-7b-qlora-seq32768-a100-40gb": "+11 %: source rounds to GB; transformers version unknown",
    "qwen-7b-lora-seq256-a100": "Qwen v1 remote code (c_attn/w1/w2 module names) is not in the catalog",
    "qwen-7b-lora-seq8192-a100": "as above",
}

ROWS = [check(e) for e in load_entries()]


def _table() -> str:
    lines = [f"{'id':58s} {'measured':>9s} {'estimate':>9s} {'error':>7s}"]
    for r in ROWS:
        if isinstance(r.get("error"), float):
            lines.append(f"{r['id'][:58]:58s} {r['measured_gib']:8.2f}G {r['estimate_gib']:8.2f}G {r['error']:+7.1%}")
        else:
            lines.append(f"{r['id'][:58]:58s} not estimated: {r['error']}")
    return "\n".join(lines)


def test_the_reference_has_at_least_twelve_measured_settings():
    print("\n" + _table())
    assert len(ROWS) >= 12
    assert len([r for r in ROWS if r["id"] not in KNOWN_MISSES]) >= 12


@pytest.mark.parametrize("row", ROWS, ids=[r["id"] for r in ROWS])
def test_estimate_is_within_the_entry_tolerance_or_a_known_miss(row):
    within = isinstance(row.get("error"), float) and abs(row["error"]) <= row["tolerance"]
    if row["id"] in KNOWN_MISSES:
        assert not within, f"{row['id']} is now within tolerance: remove it from KNOWN_MISSES"
    else:
        assert within, f"{row['id']}: {row}\n{_table()}"
