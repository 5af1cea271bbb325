"""ftkit.pii.detect: every structured entity found with exact offsets, look-alikes left alone."""

from __future__ import annotations

import itertools

import pytest
from ftkit.pii import STRUCTURED, detect
from ftkit.pii.checks import card_ok, entropy, iban_ok, ip_ok, luhn_ok, ssn_ok
from ftkit.pii.findings import Finding, resolve_overlaps
from hypothesis import given, settings
from hypothesis import strategies as st


def found(text: str) -> list[tuple[str, str]]:
    return [(f.entity, text[f.start : f.end]) for f in detect(text)]


# ------------------------------------------------------------------ pure checks


def test_luhn_accepts_test_card_numbers_and_rejects_a_changed_digit():
    assert luhn_ok("4111111111111111") and luhn_ok("378282246310005") and luhn_ok("5555555555554444")
    assert not luhn_ok("4111111111111112") and not luhn_ok("37828224631000a")


def test_card_ok_needs_a_known_issuer_prefix_and_length():
    assert card_ok("6011111111111117") and card_ok("3530111333300000")
    assert not card_ok("0000000000000000"), "Luhn-valid but no issuer starts with 0"
    assert not card_ok("41111111111111"), "Visa numbers are 13, 16 or 19 digits"


@pytest.mark.parametrize("ssn", ["000123456", "666123456", "912345678", "123004567", "123450000", "078051120"])
def test_ssn_ok_rejects_numbers_the_ssa_never_issues(ssn: str):
    assert not ssn_ok(ssn)


def test_iban_ok_checks_country_length_and_mod97():
    assert iban_ok("GB82WEST12345698765432") and iban_ok("DE89370400440532013000")
    assert not iban_ok("GB82WEST12345698765433"), "one digit changed breaks mod 97"
    assert not iban_ok("DE8937040044053201300"), "German IBANs have 22 characters"


def test_ip_ok_validates_octets_and_v6_groups():
    assert ip_ok("192.168.0.1") and ip_ok("2001:db8::8a2e:370:7334") and ip_ok("::1")
    assert not ip_ok("999.1.1.1") and not ip_ok("12:30:45") and not ip_ok("1.2.3")


def test_entropy_separates_keys_from_words():
    assert entropy("aaaaaaaa") == 0
    assert entropy("wJalrXUtnFEMI/K7MDENG") > 4 > entropy("password")


# ------------------------------------------------------------------ each entity, exact span

POSITIVES = [
    ("Write to john.doe+test@example.co.uk, thanks", "EMAIL", "john.doe+test@example.co.uk"),
    ("Call +1 (415) 555-2671 ext. 12 today", "PHONE", "+1 (415) 555-2671 ext. 12"),
    ("Ring 020 7946 0018 after five", "PHONE", "020 7946 0018"),
    ("mobile: +49 151 23456789.", "PHONE", "+49 151 23456789"),
    ("card 4111 1111 1111 1111 exp 12/27", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("amex 3782-822463-10005.", "CREDIT_CARD", "3782-822463-10005"),
    ("my SSN is 123-45-6788.", "US_SSN", "123-45-6788"),
    ("SSN: 123456788", "US_SSN", "123456788"),
    ("pay to GB82 WEST 1234 5698 7654 32.", "IBAN", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN DE89370400440532013000 please", "IBAN", "DE89370400440532013000"),
    ("from 192.168.0.1, then", "IP_ADDRESS", "192.168.0.1"),
    ("host 2001:db8::8a2e:370:7334 is up", "IP_ADDRESS", "2001:db8::8a2e:370:7334"),
    ("db: postgres://admin:s3cr3tPa55@db.example.com:5432/app.", "URL",
     "postgres://admin:s3cr3tPa55@db.example.com:5432/app"),
    ("see https://x.io/a?token=abcDEF123456&x=1 now", "URL", "https://x.io/a?token=abcDEF123456&x=1"),
    ("export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "SECRET", "AKIAIOSFODNN7EXAMPLE"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "SECRET",
     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("token ghp_" + "a1B2c3D4e5" * 3 + "a1B2c3 in CI", "SECRET", "ghp_" + "a1B2c3D4e5" * 3 + "a1B2c3"),
    ("GITLAB=glpat-xK9mQ2vR7tL4pW8nZ3sY", "SECRET", "glpat-xK9mQ2vR7tL4pW8nZ3sY"),
    ("slack xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp", "SECRET", "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp"),
    ("HF_TOKEN=hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh", "SECRET", "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh"),
    ("key sk-proj-" + "Ab3dEf6hIj9kLm2nOp5q" * 2, "SECRET", "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5q" * 2),
    ("sk-ant-api03-" + "Zx9_Yw8-Vu7Ts6" * 4 + "AA", "SECRET", "sk-ant-api03-" + "Zx9_Yw8-Vu7Ts6" * 4 + "AA"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r",
     "SECRET", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r"),
    ('{"api_key": "a8f5f167f44f4964e6c998dee827110c"}', "SECRET", "a8f5f167f44f4964e6c998dee827110c"),
    ("password: Tr0ub4dor&3xK", "SECRET", "Tr0ub4dor&3xK"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "entity", "value"), POSITIVES, ids=[p[1] + "-" + p[2][:12] for p in POSITIVES])
def test_each_entity_is_found_with_its_exact_span(text: str, entity: str, value: str):
    assert (entity, value) in found(text)


def test_a_private_key_block_is_one_secret_from_begin_to_end():
    block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq\nx9Y2Zq==\n-----END RSA PRIVATE KEY-----"
    assert found(f"key:\n{block}\nthanks") == [("SECRET", block)]


def test_an_assigned_secret_covers_the_value_not_the_name():
    text = "DB_PASSWORD='Xk29#mQ!vL0p'"
    [(entity, value)] = found(text)
    assert entity == "SECRET" and value == "Xk29#mQ!vL0p"


# ------------------------------------------------------------------ look-alikes

NEGATIVES = [
    "order 4111 1111 1111 1112 shipped",  # fails Luhn
    "SSN 000-12-3456 and 666-12-3456 and 123-00-4567 are not issued",
    "GB82 WEST 1234 5698 7654 33 has a bad check digit",
    "version 999.1.1.1 and 1.2.3 and v2.3.1",
    "meet at 12:30:45 on 2024-03-15, $1,234.56 each",
    "Karl Kraus (1874-1936) wrote 6000000 words",
    "I forgot my password yesterday, the token expired",
    "api_key = '<your-api-key>' token=${TOKEN} password: '********' secret=os.environ['SECRET']",
    "commit 3f2a9c1d4e5b6a7980c1d2e3f4a5b6c7d8e9f0a1 fixed it, request 123e4567-e89b-12d3-a456-426614174000",
    "docs at https://example.com/path?page=2&lang=en and user@ nothing",
    "call 911 or go to room 101",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_look_alikes_are_not_findings(text: str):
    assert found(text) == []


def test_credentials_in_a_url_are_one_url_finding_not_an_email():
    assert found("https://bob:pa55w0rdX@mail.example.com/inbox") == [
        ("URL", "https://bob:pa55w0rdX@mail.example.com/inbox")
    ]


def test_entities_argument_limits_what_is_looked_for():
    text = "mail a@b.io or call +1 415 555 2671"
    assert [f.entity for f in detect(text, ["PHONE"])] == ["PHONE"]
    assert {f.entity for f in detect(text)} == {"EMAIL", "PHONE"}


def test_without_a_ner_backend_no_person_or_address_is_reported():
    assert all(f.entity in STRUCTURED for f in detect("Barack Obama lives at 1600 Pennsylvania Avenue, Washington"))


def test_resolve_overlaps_keeps_the_surer_then_the_longer_span():
    a, b, c = Finding(0, 10, "URL", 0.9), Finding(5, 12, "EMAIL", 0.8), Finding(20, 25, "PHONE", 0.6)
    assert resolve_overlaps([b, c, a]) == [a, c]
    long, short = Finding(0, 10, "PHONE", 0.6), Finding(2, 6, "PHONE", 0.6)
    assert resolve_overlaps([short, long]) == [long]


# ------------------------------------------------------------------ properties


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_findings_are_sorted_disjoint_and_inside_the_text(text: str):
    result = detect(text)
    for f in result:
        assert 0 <= f.start < f.end <= len(text) and f.entity in STRUCTURED
    for a, b in itertools.pairwise(result):
        assert a.end <= b.start


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(categories=["L", "Zs"]), max_size=80),
       st.text(alphabet=st.characters(categories=["L", "Zs"]), max_size=80))  # fmt: skip
def test_a_planted_email_is_found_whatever_words_surround_it(before: str, after: str):
    email = "jane.roe@example.org"
    text = f"{before} {email} {after}"
    start = len(before) + 1
    assert any(f.entity == "EMAIL" and f.start == start and f.end == start + len(email) for f in detect(text))


# ------------------------------------------------------------------ context rules (ftkit.pii.rules)


def _luhn_complete(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


@pytest.mark.parametrize(
    "text",
    [
        "Ship to Largo de Machado, 380, Cenaculo, 75534-030 Goiânia / GO",  # a Brazilian CEP
        "Ship to Hauptstraße 339 21510 Wedel please",  # house number glued to the postcode
        "Apt. 986, Brownburgh, ME 35042-1234",  # ZIP+4
        "driver's license 514 275 736",
        "order no. 112-4567890-1234567 shipped",
        "As discussed, PO 9733433854 and nothing else.",
    ],
)
def test_digit_groups_of_addresses_and_ids_are_not_phones(text: str):
    assert [e for e, _ in found(text) if e == "PHONE"] == []


def test_a_phone_after_an_address_is_still_found_when_a_phone_word_leads_it():
    text = "Ship to Hauptstraße 5, 10115 Berlin. Tel. 030 1234567"
    assert found(text) == [("PHONE", "030 1234567")]


def test_a_phone_word_nearer_than_an_id_word_keeps_the_phone():
    assert found("Ticket #95122: caller (0131 496 0928) asked for a refund.") == [("PHONE", "0131 496 0928")]


def test_a_phone_word_keeps_a_number_of_a_plan_we_do_not_parse():
    assert found("Phone: 90 12 34 56") == [("PHONE", "90 12 34 56")]
    assert found("Tel. 1801 234") == [("PHONE", "1801 234")]
    assert found("ticket 90 12 34 56") == []


def test_luhn_valid_number_of_unknown_issuer_is_a_card_only_near_card_words():
    uatp = _luhn_complete("21491475331255")  # 15 digits, Diners enRoute: not in the detector's issuer table
    troy = _luhn_complete("979203679170250")  # 16 digits, Troy
    assert not card_ok(uatp) and not card_ok(troy)
    assert found(f"I paid with my card {uatp} yesterday.") == [("CREDIT_CARD", uatp)]
    assert found(f"Card number: {troy[:4]} {troy[4:8]} {troy[8:12]} {troy[12:]}") == [
        ("CREDIT_CARD", f"{troy[:4]} {troy[4:8]} {troy[8:12]} {troy[12:]}")
    ]
    assert [e for e, _ in found(f"shipment {troy} arrived")] == []


def test_a_card_word_far_before_the_number_does_not_count():
    number = _luhn_complete("979203679170250")
    text = "card " + "x" * 80 + f" {number}"
    assert [e for e, _ in found(text) if e == "CREDIT_CARD"] == []


@pytest.mark.parametrize(
    "value",
    [
        "gb82west12345698765432",
        "de89 3704 0044 0532 0130 00",
        "Gb82 West 1234 5698 7654 32",
        "MT84MALT011000012345MTLCAST001S",
    ],
)
def test_an_iban_is_found_in_any_case(value: str):
    assert found(f"wire it to {value}, thanks") == [("IBAN", value)]


def test_a_lower_case_iban_with_a_wrong_check_is_not_one():
    assert found("wire it to gb82west12345698765433, thanks") == []


@pytest.mark.parametrize(
    "text",
    [
        "ISBN 978-0-306-40615-7 is on the shelf",
        "the coordinates 48.8566, 2.3522 and 40°26′46″N",
        "it costs € 1 234,56 or $1,234.56",
        "build 20240315.1 of release 2.13.4-rc.1",
        "the meeting on 15/03/2024 14:30",
        "CEP 75534-030",
    ],
)
def test_hard_negatives_have_no_findings(text: str):
    assert found(text) == []
