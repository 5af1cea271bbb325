"""PERSON and ADDRESS on the eval set: ftkit without NER (the CPU default), ftkit + spaCy, presidio default.

The eval set (benchmarks/pii_eval) labels every Faker name (PERSON) and postal address (ADDRESS) it puts in a
sentence. A spaCy model tags names and the named places inside an address (GPE/LOC/FAC), not the address as one
span, so matching here is by overlap: a finding of the entity that overlaps a gold span finds it (recall), and
a finding that overlaps a gold span of its entity is right (precision). presidio's LOCATION counts as ADDRESS.
Three sides on the same texts:

  default   ftkit.pii.detect(text): no NER, what `ftkit pii scan` does where no spaCy model is installed
  ftkit     ftkit.pii.detect(text, ner=load_ner(MODEL))
  presidio  presidio AnalyzerEngine, default registry, over the same spaCy model

Needs a spaCy model (the published images ship en_core_web_sm); without one it measures the default side and
says the rest was not measured.

    .venv/bin/python benchmarks/pii_ner_compare.py --model en_core_web_sm --n 200
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pii_accuracy import provenance
from pii_eval.build import build
from pii_testset import LabelledText

ROOT = Path(__file__).resolve().parents[1]
NER = ("PERSON", "ADDRESS")
Spans = Callable[[str], Iterable[tuple[int, int, str]]]


def overlap_scores(items: Sequence[LabelledText], find: Spans) -> dict[str, dict[str, float | int | None]]:
    """Per NER entity: gold spans, findings, recall and precision by overlap."""
    counts = {e: {"support": 0, "found": 0, "gold_hit": 0, "right": 0} for e in NER}
    for item in items:
        got = [(s, e, ent) for s, e, ent in find(item.text) if ent in NER]
        gold = [g for g in item.spans if g.entity in NER]
        for g in gold:
            counts[g.entity]["support"] += 1
            counts[g.entity]["gold_hit"] += any(ent == g.entity and s < g.end and g.start < e for s, e, ent in got)
        for s, e, ent in got:
            counts[ent]["found"] += 1
            counts[ent]["right"] += any(g.entity == ent and s < g.end and g.start < e for g in gold)
    return {
        e: {
            "support": c["support"],
            "found": c["found"],
            "recall": c["gold_hit"] / c["support"] if c["support"] else None,
            "precision": c["right"] / c["found"] if c["found"] else None,
        }
        for e, c in counts.items()
    }


def ftkit_side(model: str | None) -> Spans:
    from ftkit.pii import detect
    from ftkit.pii.ner import load_ner

    ner = load_ner(model) if model else None
    return lambda text: [(f.start, f.end, f.entity) for f in detect(text, ner=ner)]


def presidio_side(model: str) -> Spans:
    from ftkit.pii.offline import use_bundled_public_suffix_list
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    use_bundled_public_suffix_list()
    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
    engine.load()
    analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    rename = {"PERSON": "PERSON", "LOCATION": "ADDRESS"}

    def find(text: str) -> list[tuple[int, int, str]]:
        results = analyzer.analyze(text, language="en", entities=list(rename))
        return [(r.start, r.end, rename[r.entity_type]) for r in results]

    return find


def fmt(rows: dict[str, dict[str, Any]]) -> str:
    def f(v: float | None) -> str:
        return "—" if v is None else f"{v:.3f}"

    return "  ".join(f"{e} recall {f(r['recall'])} precision {f(r['precision'])}" for e, r in rows.items())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", default="en_core_web_sm", help="spaCy model name or path")
    p.add_argument("--n", type=int, default=200, help="texts per structured entity of the split (names ride along)")
    p.add_argument("--split", default="heldout", choices=("dev", "heldout"))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results" / f"pii_ner_compare-{dt.date.today()}.json")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tools"))
    from ftkit.errors import FtkitError
    from ftkit.pii.ner import load_ner

    items = build(args.split, args.n)
    record: dict[str, Any] = {"benchmark": "pii_ner_compare", "split": args.split, "n_per_entity": args.n,
                              "model": args.model, "provenance": provenance(), "sides": {}}  # fmt: skip
    record["sides"]["default"] = overlap_scores(items, ftkit_side(None))
    print(f"default (no NER)       {fmt(record['sides']['default'])}")
    try:
        reason = None if load_ner(args.model).status.available else load_ner(args.model).status.reason
    except FtkitError as e:  # an explicitly named model that does not load
        reason = str(e)
    if reason:
        record["not_measured"] = reason
        print(f"ftkit+NER and presidio not measured: {record['not_measured']}")
    else:
        meta = Path(args.model) / "meta.json"
        if meta.is_file():  # a pipeline folder: say which model it is
            m = json.loads(meta.read_text())
            record["model_meta"] = {k: m.get(k) for k in ("lang", "name", "version", "spacy_version", "description")}
        record["sides"]["ftkit_ner"] = overlap_scores(items, ftkit_side(args.model))
        print(f"ftkit + {args.model:<14} {fmt(record['sides']['ftkit_ner'])}")
        record["sides"]["presidio"] = overlap_scores(items, presidio_side(args.model))
        print(f"presidio default       {fmt(record['sides']['presidio'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
