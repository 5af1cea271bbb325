"""Accuracy of `ftkit.pii.detect` on a seeded labelled set (benchmarks/pii_testset.py), with the strict matcher
of benchmarks/pii_accuracy.py: per structured entity recall >= 0.95 and precision >= 0.90."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from pii_accuracy import TARGET_PRECISION, TARGET_RECALL, score, span_matches
from pii_testset import STRUCTURED, LabelledText, Span, build_testset

N_PER_ENTITY = 100
SEED = 1234


@dataclass(frozen=True)
class F:
    start: int
    end: int
    entity: str


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    from ftkit.pii import detect

    return score(build_testset(N_PER_ENTITY, SEED), detect)


def test_testset_is_seeded_and_spans_point_at_values() -> None:
    a, b = build_testset(5, 7), build_testset(5, 7)
    assert a == b
    assert build_testset(5, 8) != a
    for item in a:
        assert len(item.kinds) == len(item.spans)
        for s in item.spans:
            value = item.text[s.start : s.end]
            assert value and value == value.strip()
    assert sum(1 for item in a if not item.spans) == 10  # 2 * n hard negatives


def test_finding_that_does_not_cover_the_gold_span_is_not_a_match() -> None:
    gold = Span(10, 30, "EMAIL")
    assert span_matches(F(10, 30, "EMAIL"), gold)
    assert not span_matches(F(11, 30, "EMAIL"), gold)
    assert not span_matches(F(10, 29, "EMAIL"), gold)


def test_finding_that_swallows_much_more_is_not_a_match() -> None:
    gold = Span(10, 30, "EMAIL")  # 20 chars: 2 more are allowed
    assert span_matches(F(9, 31, "EMAIL"), gold)
    assert not span_matches(F(0, 30, "EMAIL"), gold)
    long_gold = Span(0, 200, "SECRET")  # 200 chars: 10% (20) more are allowed
    assert span_matches(F(0, 220, "SECRET"), long_gold)
    assert not span_matches(F(0, 221, "SECRET"), long_gold)


def test_finding_of_another_entity_is_not_a_match() -> None:
    assert not span_matches(F(10, 30, "URL"), Span(10, 30, "SECRET"))


def test_score_counts_precision_and_recall_per_entity() -> None:
    item = LabelledText("a@b.co and 10.0.0.1", [Span(0, 6, "EMAIL"), Span(11, 19, "IP_ADDRESS")], ["e", "i"], "t")
    neg = LabelledText("call 911", [], [], "neg:short")

    def detect(text: str) -> list[F]:
        if text.startswith("a@"):
            return [F(0, 6, "EMAIL"), F(0, 3, "PERSON")]  # PERSON is ignored
        return [F(5, 8, "PHONE")]

    r = score([item, neg], detect)
    email, ip, phone = (r["entities"][e] for e in ("EMAIL", "IP_ADDRESS", "PHONE"))
    assert (email["tp"], email["fp"], email["fn"], email["precision"], email["recall"]) == (1, 0, 0, 1.0, 1.0)
    assert (ip["found"], ip["fn"], ip["precision"], ip["recall"]) == (0, 1, None, 0.0)
    assert (phone["support"], phone["fp"], phone["precision"]) == (0, 1, 0.0)
    assert not ip["meets"] and not phone["meets"] and email["meets"]
    assert r["negatives"]["neg:short"] == {"texts": 1, "with_findings": 1}
    assert "PERSON" not in r["entities"]


@pytest.mark.parametrize("entity", STRUCTURED)
def test_detector_recall_meets_target(result: dict[str, Any], entity: str) -> None:
    row = result["entities"][entity]
    misses = [(ex["value"], ex["detector_found"]) for ex in result["false_negatives"].get(entity, [])[:5]]
    assert row["recall"] >= TARGET_RECALL, f"{entity} recall {row['recall']:.3f}; missed e.g. {misses}"


@pytest.mark.parametrize("entity", STRUCTURED)
def test_detector_precision_meets_target(result: dict[str, Any], entity: str) -> None:
    row = result["entities"][entity]
    wrong = [(ex["value"], ex["gold_here"]) for ex in result["false_positives"].get(entity, [])[:5]]
    precision = 1.0 if row["precision"] is None else row["precision"]
    assert precision >= TARGET_PRECISION, f"{entity} precision {precision:.3f}; false positives e.g. {wrong}"
