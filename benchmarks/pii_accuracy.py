"""Per-entity precision and recall of `ftkit.pii.detect` on the labelled set of `pii_testset.py`.

Matching rule (strict): a finding matches a gold span when the entity is the same, the finding covers the
span (finding.start <= gold.start and finding.end >= gold.end), and it is not much longer
(finding length <= gold length + max(2, 10% of the gold length)). Precision = findings that match some gold
span / findings of that entity; recall = gold spans matched by some finding / gold spans of that entity.
PERSON and ADDRESS findings are ignored (NER entities, not labelled here). Target for the structured entities:
recall >= 0.95 and precision >= 0.90.

Prints a table per entity, the recall of each kind of value that the detector missed at least once, the
negative categories that drew findings, and the first false positives and false negatives of each entity
with the text around them. Writes the raw result with provenance (commit, date, versions, machine) as JSON.

    .venv/bin/python benchmarks/pii_accuracy.py --n 300 --seed 0
    .venv/bin/python benchmarks/pii_accuracy.py --json --out /tmp/pii.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from pii_testset import STRUCTURED, LabelledText, Span, build_testset

ROOT = Path(__file__).resolve().parents[1]
IGNORED = frozenset({"PERSON", "ADDRESS"})
TARGET_RECALL = 0.95
TARGET_PRECISION = 0.90
SNIPPET_CONTEXT = 40


class FindingLike(Protocol):
    start: int
    end: int
    entity: str


DetectFn = Callable[[str], Iterable[FindingLike]]


def length_slack(gold_length: int) -> float:
    """How many characters longer than the gold span a matching finding may be."""
    return max(2.0, 0.1 * gold_length)


def span_matches(finding: FindingLike, gold: Span) -> bool:
    """The strict rule: same entity, covers the gold span, and not much longer than it."""
    gold_length = gold.end - gold.start
    return (
        finding.entity == gold.entity
        and finding.start <= gold.start
        and finding.end >= gold.end
        and (finding.end - finding.start) <= gold_length + length_slack(gold_length)
    )


def overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    return a_start < b_end and b_start < a_end


def match_text(gold: Sequence[Span], findings: Sequence[FindingLike]) -> tuple[list[bool], list[bool]]:
    """Which gold spans some finding matches, and which findings match some gold span."""
    gold_hit = [any(span_matches(f, g) for f in findings) for g in gold]
    found_hit = [any(span_matches(f, g) for g in gold) for f in findings]
    return gold_hit, found_hit


def snippet(text: str, start: int, end: int, context: int = SNIPPET_CONTEXT) -> str:
    """The text around [start, end) on one line, the span itself marked with ⟦ ⟧."""
    left = max(0, start - context)
    right = min(len(text), end + context)
    body = f"{text[left:start]}⟦{text[start:end]}⟧{text[end:right]}"
    body = body.replace("\n", "\\n")
    return ("…" if left else "") + body + ("…" if right < len(text) else "")


def describe(text: str, start: int, end: int, entity: str) -> str:
    return f"{entity} {start}-{end} {text[start:end][:60]!r}"


def fn_example(item: LabelledText, i: int, findings: Sequence[FindingLike]) -> dict[str, Any]:
    gold = item.spans[i]
    near = [
        describe(item.text, f.start, f.end, f.entity)
        for f in findings
        if overlaps(f.start, f.end, gold.start, gold.end)
    ]
    return {
        "entity": gold.entity,
        "start": gold.start,
        "end": gold.end,
        "value": item.text[gold.start : gold.end],
        "kind": item.kinds[i],
        "source": item.source,
        "detector_found": near or "nothing overlapping",
        "snippet": snippet(item.text, gold.start, gold.end),
    }


def fp_example(item: LabelledText, finding: FindingLike) -> dict[str, Any]:
    near = [
        describe(item.text, g.start, g.end, g.entity)
        for g in item.spans
        if overlaps(finding.start, finding.end, g.start, g.end)
    ]
    return {
        "entity": finding.entity,
        "start": finding.start,
        "end": finding.end,
        "value": item.text[finding.start : finding.end],
        "kind": getattr(finding, "kind", ""),
        "source": item.source,
        "gold_here": near or ("negative text" if not item.spans else "no gold span overlaps"),
        "snippet": snippet(item.text, finding.start, finding.end),
    }


def ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def entity_row(entity: str, support: int, found: int, tp: int, gold_hit: int) -> dict[str, Any]:
    precision, recall = ratio(tp, found), ratio(gold_hit, support)
    targeted = entity in STRUCTURED
    meets = None
    if targeted:
        meets = (recall if recall is not None else 1.0) >= TARGET_RECALL and (
            precision if precision is not None else 1.0
        ) >= TARGET_PRECISION
    return {
        "support": support,
        "found": found,
        "tp": tp,
        "fp": found - tp,
        "fn": support - gold_hit,
        "precision": precision,
        "recall": recall,
        "target": targeted,
        "meets": meets,
    }


def score(testset: Sequence[LabelledText], detect_fn: DetectFn, max_examples: int = 20) -> dict[str, Any]:
    """Run `detect_fn` on every text and count, per entity, what the strict matching rule accepts."""
    support: Counter[str] = Counter()
    gold_hits: Counter[str] = Counter()
    found: Counter[str] = Counter()
    tps: Counter[str] = Counter()
    kind_support: Counter[str] = Counter()
    kind_hits: Counter[str] = Counter()
    neg_texts: Counter[str] = Counter()
    neg_flagged: Counter[str] = Counter()
    fps: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    fns: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    seconds = 0.0
    for item in testset:
        t0 = time.perf_counter()
        findings = [f for f in detect_fn(item.text) if f.entity not in IGNORED]
        seconds += time.perf_counter() - t0
        gold_hit, found_hit = match_text(item.spans, findings)
        for i, (gold, hit) in enumerate(zip(item.spans, gold_hit, strict=True)):
            support[gold.entity] += 1
            gold_hits[gold.entity] += hit
            kind_support[item.kinds[i]] += 1
            kind_hits[item.kinds[i]] += hit
            if not hit and len(fns[gold.entity]) < max_examples:
                fns[gold.entity].append(fn_example(item, i, findings))
        for f, hit in zip(findings, found_hit, strict=True):
            found[f.entity] += 1
            tps[f.entity] += hit
            if not hit and len(fps[f.entity]) < max_examples:
                fps[f.entity].append(fp_example(item, f))
        if not item.spans:
            neg_texts[item.source] += 1
            neg_flagged[item.source] += bool(findings)
    entities = [*STRUCTURED, *sorted((set(found) | set(support)) - set(STRUCTURED))]
    return {
        "texts": len(testset),
        "negative_texts": sum(neg_texts.values()),
        "detect_seconds": seconds,
        "entities": {e: entity_row(e, support[e], found[e], tps[e], gold_hits[e]) for e in entities},
        "kinds": {
            k: {"support": kind_support[k], "matched": kind_hits[k], "recall": kind_hits[k] / kind_support[k]}
            for k in sorted(kind_support)
        },
        "negatives": {s: {"texts": neg_texts[s], "with_findings": neg_flagged[s]} for s in sorted(neg_texts)},
        "false_positives": dict(fps),
        "false_negatives": dict(fns),
    }


# ---------------------------------------------------------------------------------------------------------------
# Report


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def format_table(result: dict[str, Any]) -> str:
    columns = ("support", 7), ("found", 6), ("TP", 6), ("FP", 5), ("FN", 5), ("precision", 9), ("recall", 7)
    header = f"{'entity':<12} " + " ".join(f"{name:>{width}}" for name, width in columns) + "  target"
    lines = [header, "-" * len(header)]
    for entity, row in result["entities"].items():
        verdict = "" if not row["target"] else ("meets" if row["meets"] else "MISSES")
        lines.append(
            f"{entity:<12} {row['support']:>7} {row['found']:>6} {row['tp']:>6} {row['fp']:>5} {row['fn']:>5} "
            f"{fmt_ratio(row['precision']):>9} {fmt_ratio(row['recall']):>7}  {verdict}"
        )
    return "\n".join(lines)


def format_kinds(result: dict[str, Any]) -> str:
    missed = {k: v for k, v in result["kinds"].items() if v["matched"] < v["support"]}
    if not missed:
        return "every kind of value was found in full"
    rows = [f"  {k:<40} {v['matched']:>4}/{v['support']:<4} recall {v['recall']:.2f}" for k, v in missed.items()]
    return "kinds of value with misses:\n" + "\n".join(rows)


def format_negatives(result: dict[str, Any]) -> str:
    flagged = {s: v for s, v in result["negatives"].items() if v["with_findings"]}
    total = sum(v["with_findings"] for v in result["negatives"].values())
    head = f"hard negatives with any finding: {total}/{result['negative_texts']}"
    return "\n".join([head, *(f"  {s:<28} {v['with_findings']:>4}/{v['texts']}" for s, v in flagged.items())])


def format_examples(result: dict[str, Any], per_entity: int) -> str:
    out: list[str] = []
    for title, key, note in (
        ("false negatives", "false_negatives", "detector_found"),
        ("false positives", "false_positives", "gold_here"),
    ):
        for entity, examples in result[key].items():
            out.append(f"{title} — {entity}:")
            for ex in examples[:per_entity]:
                out.append(f"  [{ex['start']}:{ex['end']}] {ex['kind'] or '-'} ({ex['source']}) {note}: {ex[note]}")
                out.append(f"      {ex['snippet']}")
    return "\n".join(out) if out else "no false positives or false negatives"


# ---------------------------------------------------------------------------------------------------------------
# Provenance


def provenance() -> dict[str, Any]:
    from ftkit import envinfo

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "commit": envinfo.git_commit(ROOT),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": envinfo.versions(("faker", "phonenumbers", "presidio-analyzer", "ftkit")),
        "python": platform.python_version(),
        "machine": {
            "cpu": envinfo.hardware()["cpu"],
            "cpu_count": os.cpu_count(),
            "usable_cores": usable,
            "platform": platform.platform(),
        },
    }


# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--n", type=int, default=300, help="texts per structured entity (negatives: twice that)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of the tables")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the JSON (default benchmarks/results/pii_accuracy-<date>.json)",
    )
    p.add_argument("--examples", type=int, default=5, help="false positives/negatives printed per entity")
    p.add_argument("--check", action="store_true", help="exit 1 when a structured entity misses its target")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from ftkit.pii import detect

    t0 = time.perf_counter()
    testset = build_testset(args.n, args.seed)
    build_seconds = time.perf_counter() - t0
    result = score(testset, detect)
    report = {
        "benchmark": "pii_accuracy",
        "params": {"n_per_entity": args.n, "seed": args.seed},
        "matching": "same entity, covers gold, length <= gold + max(2, 10% of gold)",
        "targets": {"recall": TARGET_RECALL, "precision": TARGET_PRECISION, "entities": list(STRUCTURED)},
        "provenance": provenance(),
        "build_seconds": build_seconds,
        "chars": sum(len(x.text) for x in testset),
        **result,
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"pii_accuracy-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        rate = report["chars"] / result["detect_seconds"] / 1e3 if result["detect_seconds"] else float("inf")
        print(f"{len(testset)} texts ({args.n} per entity, seed {args.seed}), built in {build_seconds:.1f} s; "
              f"detect took {result['detect_seconds']:.1f} s ({rate:.0f} k chars/s)\n")  # fmt: skip
        print(format_table(result), "\n")
        print(format_kinds(result), "\n")
        print(format_negatives(result), "\n")
        print(format_examples(result, args.examples), "\n")
        print(f"wrote {out}")
    missed = [e for e, row in result["entities"].items() if row["target"] and not row["meets"]]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
