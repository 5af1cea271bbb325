"""Per-entity precision and recall on the independent eval set (benchmarks/pii_eval), dev and held-out splits.

The set is built from sources the detector was not written against (libphonenumber's example numbers of
every region, the public IIN table, the SWIFT IBAN registry, Faker in 38 locales; see pii_eval/build.py).
Tune on `--splits dev` only; the held-out split is for reporting. Scoring is pii_accuracy's strict rule
(same entity, covers the gold span, at most max(2, 10 %) longer). `--presidio` scores presidio's pattern
recognizers on the same texts (its entity names mapped to ours). PERSON/ADDRESS spans are labelled but
not scored here (no NER on this CPU machine; see docs/pii.md).

    .venv/bin/python benchmarks/pii_eval_accuracy.py --splits dev --n 500 --examples 5
    .venv/bin/python benchmarks/pii_eval_accuracy.py --n 500 --presidio      # both splits, report
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pii_accuracy import DetectFn, format_examples, format_kinds, format_negatives, format_table, provenance, score
from pii_eval.build import ENTITIES, SPLITS, build

ROOT = Path(__file__).resolve().parents[1]


def evaluate(
    detect_fn: DetectFn, n: int, splits: Sequence[str] = SPLITS, keep: Sequence[str] = (*ENTITIES, "URL", "SECRET")
) -> dict[str, dict[str, Any]]:
    """`score` of `detect_fn` on each split; table rows for `keep` only (the set labels no URL or SECRET, so
    those rows count false positives; NER entities are not scored)."""
    out = {}
    for split in splits:
        result = score(build(split, n), detect_fn)
        result["entities"] = {e: row for e, row in result["entities"].items() if e in keep}
        out[split] = result
    return out


def presidio_detect() -> Callable[[str], list[Any]]:
    """presidio's pattern recognizers (as in pii_throughput), findings renamed to ftkit's entities."""
    from dataclasses import dataclass

    from pii_throughput import PRESIDIO_TO_FTKIT, presidio_analyzer

    @dataclass(frozen=True)
    class F:
        start: int
        end: int
        entity: str

    scan = presidio_analyzer(Path(tempfile.mkdtemp(prefix="pii-eval-")))
    return lambda text: [F(s, e, PRESIDIO_TO_FTKIT.get(t, t)) for s, e, t in scan(text)]


def compact(result: dict[str, Any]) -> dict[str, Any]:
    """The per-entity rows and the counts, without the example lists (for the JSON record)."""
    return {k: v for k, v in result.items() if k not in ("false_positives", "false_negatives", "kinds")}


def table_lines(title: str, result: dict[str, Any]) -> str:
    return f"{title}: {result['texts']} texts\n{format_table(result)}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--n", type=int, default=500, help="texts per entity (and 2n negatives) per split")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    p.add_argument("--presidio", action="store_true", help="also score presidio's pattern recognizers")
    p.add_argument(
        "--examples", type=int, default=0, help="misses printed per entity (dev only: do not tune on held-out)"
    )
    p.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results" / f"pii_eval_accuracy-{dt.date.today()}.json"
    )
    p.add_argument("--tools", type=Path, default=ROOT / "tools", help="the tools/ folder whose ftkit is scored "
                   "(e.g. an older commit's, exported with git archive, for a before/after)")  # fmt: skip
    args = p.parse_args(argv)
    sys.path.insert(0, str(args.tools))
    from ftkit.pii import detect

    record: dict[str, Any] = {"benchmark": "pii_eval_accuracy", "n_per_entity": args.n, "entities": list(ENTITIES),
                              "provenance": provenance(), "tools": str(args.tools),
                              "ftkit": {}, "presidio": {}}  # fmt: skip
    ours = evaluate(detect, args.n, args.splits)
    # presidio's URL recognizer reports every domain (emails' too): not comparable, so not scored.
    theirs = evaluate(presidio_detect(), args.n, args.splits, ENTITIES) if args.presidio else {}
    for split in args.splits:
        print(table_lines(f"ftkit.pii.detect, {split}", ours[split]), "\n")
        record["ftkit"][split] = compact(ours[split])
        if split in theirs:
            print(table_lines(f"presidio pattern recognizers, {split}", theirs[split]), "\n")
            record["presidio"][split] = compact(theirs[split])
        if args.examples and split == "dev":
            print(format_kinds(ours[split]), "\n")
            print(format_negatives(ours[split]), "\n")
            print(format_examples(ours[split], args.examples), "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")
    missed = [(s, e) for s in ours for e, row in ours[s]["entities"].items() if row["target"] and not row["meets"]]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
