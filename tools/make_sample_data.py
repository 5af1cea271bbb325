"""Rebuild the recipes' sample data from the public files in ../shared/data (run once, output committed).

- data/sft.jsonl: the first 48 conversations of FastChat's dummy_conversation.json (Apache-2.0),
  ShareGPT turns mapped to chat messages (human -> user, gpt -> assistant), ids kept.
- data/dpo.jsonl: 48 single-turn pairs from Anthropic hh-rlhf harmless-base test (MIT): each
  transcript split into turns, the shared prompt split off, chosen/rejected = prompt + final answer.
- data/*-heldout.jsonl: the next 16 rows of each source, never trained on; `ftkit eval` scores them
  (held-out perplexity; the chosen-minus-rejected margin for pairs).

Usage: python tools/make_sample_data.py [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from ftkit.data.convert import ConversionError, hh_to_preference, sharegpt_to_messages

ROOT = Path(__file__).resolve().parents[1]


def sft_rows(shared: Path, n: int = 48, skip: int = 0) -> list[dict]:
    rows = json.loads((shared / "fastchat-dummy-conversation.sharegpt.json").read_text())
    return [{"id": r["id"], **sharegpt_to_messages(r)} for r in rows[skip : skip + n]]


def dpo_rows(shared: Path, n: int = 48, max_chars: int = 700) -> list[dict]:
    """Short single-turn pairs (prompt + one answer each), in file order."""
    out = []
    with gzip.open(shared / "hh-rlhf-harmless-base-test.jsonl.gz", "rt") as fh:
        for i, line in enumerate(fh):
            r = json.loads(line)
            if len(r["chosen"]) + len(r["rejected"]) > max_chars:
                continue
            try:
                pair = hh_to_preference(r)
            except ConversionError:
                continue
            if len(pair["chosen"]) != 2:
                continue
            out.append({"id": f"hh-harmless-test-{i}", **pair})
            if len(out) == n:
                break
    return out


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{path.relative_to(ROOT)}: {len(rows)} rows")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()
    sft, dpo = sft_rows(args.shared), dpo_rows(args.shared, n=64)
    sft_heldout = sft_rows(args.shared, n=16, skip=48)
    for name in ("llama8b-qlora-sft", "llama8b-qlora-dpo"):
        write(ROOT / "recipes" / name / "data" / "sft.jsonl", sft)
        write(ROOT / "recipes" / name / "data" / "sft-heldout.jsonl", sft_heldout)
    write(ROOT / "recipes" / "llama8b-qlora-dpo" / "data" / "dpo.jsonl", dpo[:48])
    write(ROOT / "recipes" / "llama8b-qlora-dpo" / "data" / "dpo-heldout.jsonl", dpo[48:])


if __name__ == "__main__":
    main()
