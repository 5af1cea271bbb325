"""The independent eval set (benchmarks/pii_eval): seeded, disjoint splits, values that are what they claim;
and a committed held-out-style sample the detector must keep scoring on (recall >= 0.95, precision >= 0.90)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import phonenumbers
import pytest
from ftkit.pii import detect
from ftkit.pii.checks import IBAN_LENGTHS, iban_ok, luhn_ok

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from pii_accuracy import TARGET_PRECISION, TARGET_RECALL, score
from pii_eval.build import ENTITIES, LOCALES, SPLITS, TEMPLATES, Sources, build, example_phones, from_json
from pii_eval.iban import BBAN_FORMATS, bban_length, make_iban
from pii_eval.iin import IIN_TABLE

FIXTURE = Path(__file__).parent / "fixtures" / "pii_eval_heldout_sample.jsonl"


def test_the_same_split_and_size_give_the_same_texts():
    assert build("dev", 5) == build("dev", 5)
    assert build("heldout", 5) == build("heldout", 5)
    assert build("heldout", 5, seed=1) != build("heldout", 5)


def test_splits_share_no_text_template_locale_or_phone_region():
    dev, held = build("dev", 30), build("heldout", 30)
    assert not {x.text for x in dev} & {x.text for x in held}
    for group in ("NEG", *ENTITIES):
        assert not set(TEMPLATES["dev"][group]) & set(TEMPLATES["heldout"][group])
    assert not set(LOCALES["dev"]) & set(LOCALES["heldout"])
    regions = {split: {kind.split(":")[2] for _, kind in example_phones(split)} for split in SPLITS}
    assert regions["dev"] and regions["heldout"] and not regions["dev"] & regions["heldout"]
    assert len(regions["dev"] | regions["heldout"]) > 200  # libphonenumber's regions, not a hand-picked few


def test_every_span_points_at_a_value_of_its_entity():
    for item in build("heldout", 20):
        assert len(item.spans) == len(item.kinds)
        for span in item.spans:
            value = item.text[span.start : span.end]
            assert value and value == value.strip(), (item.text, span)
            if span.entity == "IBAN":
                assert iban_ok(value.replace(" ", "").upper())
            if span.entity == "CREDIT_CARD":
                digits = value.replace(" ", "").replace("-", "")
                assert luhn_ok(digits) and 12 <= len(digits) <= 19


def test_iban_registry_table_covers_every_country_the_detector_knows_with_its_length():
    assert set(BBAN_FORMATS) == set(IBAN_LENGTHS)
    rng = random.Random(0)
    for country, fmt in BBAN_FORMATS.items():
        assert bban_length(fmt) + 4 == IBAN_LENGTHS[country], country
        assert iban_ok(make_iban(country, rng)), country


def test_card_numbers_come_from_every_iin_row_with_its_lengths():
    s = Sources("dev", 3)
    kinds = {s.card()[1] for _ in range(3000)}
    networks = {k.split(":")[1] for k in kinds}
    assert networks == {row.network for row in IIN_TABLE}
    lengths = {int(k.split(":")[2]) for k in kinds}
    assert min(lengths) == 12 and max(lengths) == 19


def test_example_phones_are_what_libphonenumber_calls_valid():
    for value, kind in list(example_phones("heldout"))[:60]:
        region = kind.split(":")[2]
        assert phonenumbers.is_valid_number(phonenumbers.parse(value, region)), (value, kind)


def test_build_refuses_an_unknown_split():
    with pytest.raises(ValueError, match="split must be one of"):
        build("test", 1)


# ------------------------------------------------------------------ regression floor on a committed sample


@pytest.fixture(scope="module")
def sample_result() -> dict:
    items = [from_json(json.loads(line)) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    assert len(items) == 320  # 40 per entity, 80 negatives: built by pii_eval/build.py heldout --n 40 --seed 7
    return score(items, detect)


@pytest.mark.parametrize("entity", ENTITIES)
def test_held_out_style_sample_keeps_recall_and_precision_floors(sample_result: dict, entity: str):
    row = sample_result["entities"][entity]
    misses = [ex["value"] for ex in sample_result["false_negatives"].get(entity, [])[:5]]
    wrong = [ex["value"] for ex in sample_result["false_positives"].get(entity, [])[:5]]
    assert row["recall"] >= TARGET_RECALL, f"{entity} recall {row['recall']:.3f}, missed {misses}"
    assert (row["precision"] or 0.0) >= TARGET_PRECISION, f"{entity} precision {row['precision']}, wrong {wrong}"
