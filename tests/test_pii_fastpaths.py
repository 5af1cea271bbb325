"""ftkit.pii's fast paths: the entity filter skips unwanted work, and the shortcuts read text as the slow way does."""

from __future__ import annotations

import re

import pytest
from ftkit.pii import detect as detect_fn
from ftkit.pii import rules
from ftkit.pii.patterns import DETECTORS

detect_module = __import__("ftkit.pii.detect", fromlist=["plan"])
PRESIDIO_SET = frozenset({"EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS", "URL"})
MIXED = (
    "mail bob@example.com, key AKIAIOSFODNN7EXAMPLE, token=ghp_" + "a1B2c3D4e5" * 4
    + ", card 4111 1111 1111 1111, call +1 415 555 2671"
)  # fmt: skip


def test_plan_for_presidio_entities_has_no_secret_detector_or_secret_gate():
    steps = detect_module.plan(PRESIDIO_SET)
    entities = {d.entity for _, dets in steps.groups for d in dets}
    gates = {gate for gate, _ in steps.groups}
    assert entities == PRESIDIO_SET - {"PHONE"} and steps.phones
    assert not gates & {"aws_prefix", "token_punct", "assign", "jwt", "google", "pem"}


def test_plan_for_phone_alone_keeps_only_the_long_digits_gate():
    steps = detect_module.plan(frozenset({"PHONE"}))
    assert [(gate, dets) for gate, dets in steps.groups] == [("long_digits", ())] and steps.phones


def test_plan_without_phone_does_not_read_phones():
    assert not detect_module.plan(frozenset({"EMAIL"})).phones


def test_detect_with_entities_runs_no_unwanted_detector_or_gate(monkeypatch: pytest.MonkeyPatch):
    ran: list[str] = []
    gates: list[str] = []
    real_run = detect_module._run

    def run(det, text, found, *where):  # type: ignore[no-untyped-def]
        ran.append(det.entity)
        real_run(det, text, found, *where)

    monkeypatch.setattr(detect_module, "_run", run)
    detect_module.plan.cache_clear()  # a plan reads the gates when it is made
    for name, test in list(detect_module.GATES.items()):
        monkeypatch.setitem(
            detect_module.GATES, name, lambda text, *pos, n=name, t=test: (gates.append(n), t(text, *pos))[1]
        )
    try:
        found = detect_fn(MIXED, entities=["EMAIL"])
    finally:
        detect_module.plan.cache_clear()  # no plan keeps the wrapped gates
    assert {f.entity for f in found} == {"EMAIL"}
    assert set(ran) == {"EMAIL"} and set(gates) == {"at"}


def test_detect_with_every_entity_named_finds_what_the_default_finds():
    assert detect_fn(MIXED, entities=[*PRESIDIO_SET, "SECRET"]) == detect_fn(MIXED)
    assert {f.entity for f in detect_fn(MIXED)} == {"EMAIL", "SECRET", "CREDIT_CARD", "PHONE"}


def test_presidio_entities_drop_only_the_secrets():
    same = detect_fn(MIXED, entities=PRESIDIO_SET)
    assert same == [f for f in detect_fn(MIXED) if f.entity != "SECRET"]


WINDOWS = [
    "Call me on", "my TEL.", "order no", "Ship to 12 Hauptstraße", "Ship to 12 Hauptstrasse", "Main St.",
    "the Ring", "Bahnhofstr", "h.no 12", "H.No.", "see unit 4, then phone", "phone. Then the order", "xring",
    "fax: ", "ORDER#", "ul. ", "Kungsgatan", "Nørregade", "Vej", "avenue\nthen", "id_card", "my_phone",
    "teléfono", "Tél", "☎", "call! ", "ZIP+4", "sector", "a sectors", "str", "astr", "Call ſt", "İd", "street 9",
    "Begoña, TELÉFONO", "Hauptſtr", "Praça da Sé,", "ул.", "Rua São João 12, São Paulo", "Müllerstraße 3 ORDER",
    "KUNGSVÄGEN", "call 📞", "a_b_c road_", "Ring_", "12th Ave", "H.NO. 5",
]  # fmt: skip


@pytest.mark.parametrize("left", WINDOWS)
def test_last_cue_reads_a_window_like_the_cue_pattern(left: str):
    last = None
    for last in rules._CUE.finditer(left):  # noqa: B007
        pass
    expected = None if last is None else ("address" if last.lastgroup == "suffix" else last.lastgroup, last.end())
    assert rules._last_cue(left) == expected


def test_cue_before_finds_the_nearest_cue_and_stops_at_a_sentence_end():
    assert rules.cue_before("Order no 5, call 555 1234", 18) == "phone"
    assert rules.cue_before("Call me. Order 555 1234", 15) == "id"
    assert rules.cue_before("Lives on Hauptstrasse 12", 22) == "address"
    assert rules.cue_before("Call me. It is 555 1234", 15) is None


def test_issuer_ok_is_card_ok_without_the_luhn_check():
    from ftkit.pii.checks import card_ok, issuer_ok, luhn_ok

    assert issuer_ok("4111111111111112") and not card_ok("4111111111111112"), "a Visa prefix, Luhn broken"
    assert not issuer_ok("0000000000000000") and luhn_ok("0000000000000000")
    for number in ("4111111111111111", "378282246310005", "6011111111111117", "5555555555554444", "41111111111111"):
        assert card_ok(number) == (luhn_ok(number) and issuer_ok(number))


def test_phone_screen_never_rules_out_a_number_phonenumbers_finds_valid():
    import phonenumbers
    from ftkit.pii.phone import REGIONS, _may_be_valid

    checked = 0
    for region in REGIONS:
        for kind in range(12):  # every PhoneNumberType with an example: fixed line, mobile, toll free...
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            national = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)
            digits = "".join(c for c in national if c.isdigit())
            if phonenumbers.is_valid_number(phonenumbers.parse(national, region)):
                assert _may_be_valid(region, digits), (region, kind, national)
                checked += 1
    assert checked > 50
    assert not _may_be_valid("DE", "1234"), "no German number type is four digits starting with 1"


def _parsed(text: str, region: str | None):  # type: ignore[no-untyped-def]
    import phonenumbers

    try:
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None


def _runs(seed: int, lead: tuple[str, ...], n: int) -> list[str]:
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = rng.choice(lead)
        for _ in range(rng.randint(1, 6)):
            s += "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 5)))
            s += rng.choice([" ", "-", ".", "/", "", ") ", "(", ")"])
        out.append(s.rstrip())
    return out


def test_international_number_is_what_parse_returns_whenever_it_reads_one():
    from ftkit.pii.phone import international_number

    read = 0
    for text in _runs(11, ("+", "(+", "+ ", "+39 0", "+44 (0)"), 20000):
        number = international_number(text)
        if number is not None:
            assert number == _parsed(text, None), text
            read += 1
    assert read > 5000, "the fast reading applies to most +CC runs"


def test_international_number_reads_national_prefixes_and_leading_zeros_and_leaves_the_rest_to_parse():
    from ftkit.pii.phone import international_number

    for text in ("+44 20 7946 0958", "+44 (0)20 7946 0958", "+39 06 6988 4000", "+43 (0) 3194 07342991"):
        assert international_number(text) == _parsed(text, None), text
    assert international_number("+39 06 6988 4000").italian_leading_zero, "Rome's 0 is part of the number"
    assert international_number("+44 (0)20 7946 0958").national_number == 2079460958, "the trunk 0 is not"
    for text in ("+1 415 555 2671 ext 12", "+1 800 FLOWERS", "+0 123 4567"):
        assert international_number(text) is None, text


def test_national_number_is_what_parse_returns_whenever_it_reads_one():
    from ftkit.pii.phone import REGIONS, national_number

    read = 0
    for text in _runs(12, ("", "(", "0", "(0", "8 "), 3000):
        for region in REGIONS:
            number = national_number(text, region)
            if number is not None:
                assert number == _parsed(text, region), (text, region)
                read += 1
    assert read > 10000, "the fast reading applies to most national runs"


def test_national_number_reads_trunk_prefixes_and_leaves_international_prefixes_to_parse():
    from ftkit.pii.phone import national_number

    cases = (("(415) 555-2671", "US"), ("020 7946 0958", "GB"), ("(06)14/872-9106", "DE"), ("06 12 34 56 78", "FR"),
             ("06 6988 4000", "IT"), ("(011) 2345-6789", "BR"), ("8 (495) 123-45-67", "RU"))  # fmt: skip
    for text, region in cases:
        assert national_number(text, region) == _parsed(text, region), (text, region)
    assert national_number("020 7946 0958", "GB").national_number == 2079460958, "parse strips the trunk 0"
    assert national_number("1 415 555 2671", "US") is None, "the country code (and NANPA's trunk prefix) in front"
    assert national_number("011 44 20 7946 0958", "US") is None, "an international prefix"
    assert national_number("415 555 2671 x12", "US") is None, "an extension"


@pytest.mark.parametrize(
    ("gate", "plain"), [("dotted_digits", r"[0-9]\.[0-9]"), ("colon", r"::|[0-9A-Fa-f]:[0-9A-Fa-f]")]
)
def test_punctuation_led_gates_pass_the_strings_the_plain_patterns_find(gate: str, plain: str):
    import random
    import re

    rng = random.Random(3)
    search = re.compile(plain).search
    strings = ["".join(rng.choice("0123456789aF:.: x-") for _ in range(rng.randint(0, 12))) for _ in range(20000)]
    assert sum(search(s) is not None for s in strings) > 1000
    for s in strings:
        assert detect_module.GATES[gate](s) == (search(s) is not None), s


def test_luhn_ok_agrees_with_the_textbook_digit_by_digit_checksum():
    import random

    from ftkit.pii.checks import luhn_ok

    def textbook(number: str) -> bool:
        digits = [int(c) for c in reversed(number)]
        return sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits)) % 10 == 0

    rng = random.Random(4)
    numbers = ["".join(rng.choice("0123456789") for _ in range(rng.randint(1, 19))) for _ in range(20000)]
    assert sum(map(luhn_ok, numbers)) > 1000, "about one in ten passes"
    for number in numbers:
        assert luhn_ok(number) == textbook(number), number


def test_a_run_after_one_read_in_parts_is_still_skipped_when_it_overlaps_a_surer_finding():
    # The first run is no number whole, so its parts are read; the surer span must still hold for the runs after it.
    from ftkit.pii.phone import find_phones

    text = "Numbers: 415 555 2671 020 7946 0958 and later 212 555 0147."
    start = text.index("212")
    assert [(f.start, f.end) for f in find_phones(text)][-1] == (start, start + 12)
    assert all(f.end <= start for f in find_phones(text, taken=[(start, start + 12)]))


def _numbers_for_validity(seed: int, n: int):  # type: ignore[no-untyped-def]
    """Every region's example numbers of every type, then `n` seeded others: examples with a digit changed,
    added or dropped, and random national numbers (some with Italian leading zeros) of every country code."""
    import random

    import phonenumbers
    from phonenumbers import PhoneNumber
    from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE, SUPPORTED_REGIONS

    examples = [
        number
        for region in sorted(SUPPORTED_REGIONS)
        for kind in range(12)
        if (number := phonenumbers.example_number_for_type(region, kind)) is not None
    ]
    examples += [
        number
        for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
        if (number := phonenumbers.example_number_for_non_geo_entity(code)) is not None
    ]
    rng = random.Random(seed)
    codes = [*sorted(COUNTRY_CODE_TO_REGION_CODE), 0, 42, 999]
    others = []
    for _ in range(n):
        if rng.random() < 0.5:
            base = rng.choice(examples)
            digits = str(base.national_number)
            i = rng.randrange(len(digits))
            digits = digits[:i] + str(rng.randrange(10)) + digits[i + 1 :] + ("7" if rng.random() < 0.15 else "")
            number = PhoneNumber(country_code=base.country_code, national_number=int(digits))
            if base.italian_leading_zero:
                number.italian_leading_zero, number.number_of_leading_zeros = True, base.number_of_leading_zeros
        else:
            number = PhoneNumber(
                country_code=rng.choice(codes), national_number=rng.randrange(1, 10 ** rng.randint(1, 17))
            )
            if rng.random() < 0.1:
                number.italian_leading_zero, number.number_of_leading_zeros = True, rng.choice([None, 1, 2])
        others.append(number)
    return examples + others


def test_phone_validity_is_what_phonenumbers_says_for_examples_and_random_numbers():
    import phonenumbers
    from ftkit.pii.phone_validity import is_valid_number

    numbers = _numbers_for_validity(5, 30000)
    verdicts = [phonenumbers.is_valid_number(n) for n in numbers]
    assert 3000 < sum(verdicts) < len(numbers) - 3000, "both verdicts are well represented"
    assert [is_valid_number(n) for n in numbers] == verdicts


def test_phone_validity_places_a_shared_country_code_by_region_like_phonenumbers():
    import phonenumbers
    from ftkit.pii.phone_validity import is_valid_number

    for text in ("+1 268 464 1234", "+1 415 555 2671", "+1 204 555 0123", "+7 701 123 4567", "+44 1624 456789"):
        number = phonenumbers.parse(text)
        assert is_valid_number(number) == phonenumbers.is_valid_number(number), text
    assert is_valid_number(phonenumbers.parse("+1 268 464 1234")), "Antigua, told by its leading digits"
    assert not is_valid_number(phonenumbers.parse("+1 268 000 1234"))


@pytest.mark.parametrize("det", [d for d in DETECTORS if d.numeric], ids=lambda d: d.kind)
def test_a_number_pattern_matches_nothing_before_two_characters_ahead_of_the_first_digit(det):  # type: ignore[no-untyped-def]
    import random

    rng = random.Random(7)
    pieces = ["4111", "1111", "123", "45", "6789", "10", "0", "255", "123-45-6789", "10.0.0.1", "192.168.", " ",
              "-", ".", "+", "(", ")", "/", ":", "GB", "de", "x", "Tel ", "card ", "ip ", "\n"]  # fmt: skip
    checked = 0
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        matches = [m.span() for m in det.pattern.finditer(text)]
        first = next((i for i, c in enumerate(text) if c.isdigit()), None)
        if first is None:
            assert not matches
            continue
        assert all(s >= first for s, _ in matches), text
        assert [m.span() for m in det.pattern.finditer(text, max(0, first - 2))] == matches, text
        checked += bool(matches)
    assert checked > 200, "the strings give the pattern matches to compare"


def test_the_phone_pattern_starts_at_most_two_characters_ahead_of_the_first_digit():
    from ftkit.pii.phone import CANDIDATE

    assert CANDIDATE.search("call (+44 20 7946 0958)").start() == 5
    assert CANDIDATE.search("call (+44 20 7946 0958)", 5) is not None


def test_a_number_in_another_script_before_the_ascii_digits_is_still_read():
    # An SSN in Arabic-Indic digits, then ASCII digits: the scan of a non-ASCII text starts at 0, not at the
    # first ASCII digit (which would skip the SSN).
    ssn = "١٢٣-٤٥-٦٧٨٩"
    found = detect_fn(f"SSN {ssn}, call 415 555 2671", entities=["US_SSN"])
    assert [(f.start, f.end) for f in found] == [(4, 4 + len(ssn))]


def test_ssn_words_without_nine_bare_digits_skip_the_bare_ssn_pattern():
    from ftkit.pii.patterns import NINE_DIGITS, SSN_BARE

    assert detect_fn("SSN 123456780 on file", entities=["US_SSN"])[0].kind == "ssn_with_context"
    assert detect_fn("my SSN is 636-61-2682", entities=["US_SSN"])[0].kind == "ssn"
    import random

    rng = random.Random(9)
    words = [
        "ssn",
        "SSN",
        "social security",
        "is",
        "number",
        "123456789",
        "636612682",
        "12345678",
        "1234567890",
        ",",
        " ",
    ]
    for _ in range(20000):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))
        if SSN_BARE.search(text):
            assert NINE_DIGITS.search(text), text


def test_iban_start_matches_where_two_digits_follow_two_letters_that_start_a_word():
    import random
    import re

    from ftkit.pii.patterns import IBAN_START

    plain = re.compile(r"(?<=\b[A-Za-z]{2})[0-9]{2}(?=[ -]?[A-Za-z0-9])")
    rng = random.Random(4)
    pieces = ["GB", "de", "x", "12", "3", "45", " ", "-", "é", "_", "KZ9", "a1"]
    strings = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 10))) for _ in range(20000)]
    assert sum(plain.search(s) is not None for s in strings) > 1000
    for s in strings:
        assert [m.span() for m in IBAN_START.finditer(s)] == [m.span() for m in plain.finditer(s)], s


def _ascii_strings(seed: int, n: int) -> list[str]:
    """Seeded ASCII strings built from pieces of the things the detectors look for, and every ASCII character."""
    import random

    rng = random.Random(seed)
    pieces = ["4111 1111 1111 1111", "123-45-6789", "SSN", "10.0.0.1", "fe80::1", "GB82 WEST 1234 5698 7654 32",
              "+44 20 7946 0958", "(415) 555-2671", " ext 12", "x12", "bob@example.com", "https://u:p@h.io/a?token=",
              "AKIA", "ghp_", "api_key=", "-----BEGIN RSA PRIVATE KEY-----", "\x1c", "\x1f", "\t", "\n", " ", "_",
              "é"[:0], "a", "Z", "9", "0", ".", "-", ":", "/", "(", ")", "'", '"', "="]  # fmt: skip
    every = [chr(c) for c in range(128)]
    return ["".join(rng.choice(pieces if rng.random() < 0.8 else every) for _ in range(rng.randint(1, 14)))
            for _ in range(n)]  # fmt: skip


def test_every_detector_pattern_has_an_ascii_twin_with_the_same_matches_on_ascii_text():
    from ftkit.pii.phone import _CANDIDATE_ASCII, CANDIDATE

    pairs = [(d.pattern, d.ascii_pattern) for d in DETECTORS] + [(CANDIDATE, _CANDIDATE_ASCII)]
    pairs += [(d.requires, d.ascii_requires) for d in DETECTORS if d.requires is not None]
    strings = _ascii_strings(6, 4000)
    matched = 0
    for plain, twin in pairs:
        assert twin.flags & re.ASCII and not plain.flags & re.ASCII
        for s in strings:
            expected = [(m.span(), m.groups()) for m in plain.finditer(s)]
            assert [(m.span(), m.groups()) for m in twin.finditer(s)] == expected, (plain.pattern, s)
            matched += bool(expected)
    assert matched > 2000, "the strings give the patterns matches to compare"


@pytest.mark.parametrize(
    ("source", "text"),
    [(r"a\sb", "a\x1cb"), (r"a[\s]b", "a\x1fb"), (r"a[^\s]b", "a\x1db"), (r"a\Sb", "a\x1eb"), (r"[\s\S]", "\x1c"),
     (r"[]\s]", "\x1c"), (r"[^]\s]", "x"), (r"\\s", "\\s"), (r"a\Wb", "a\x1cb")],
)  # fmt: skip
def test_ascii_twin_reads_the_unicode_separators_as_unicode_does(source: str, text: str):
    from ftkit.pii.ascii_regex import ascii_twin

    plain = re.compile(source)
    assert [m.span() for m in ascii_twin(plain).finditer(text)] == [m.span() for m in plain.finditer(text)]


def test_ip_ok_is_what_the_ipaddress_module_accepts():
    import ipaddress
    import random

    from ftkit.pii.checks import ip_ok

    def accepted(text: str) -> bool:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            return False
        return True

    rng = random.Random(8)
    pieces = ["1", "0", "25", "255", "256", "01", "192", "168", ".", ":", "::", "fe80", "db8", "a", "%eth0", "٣", " "]
    strings = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(30000)]
    strings += [
        "192.168.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "1.2.3.04",
        "::1",
        "2001:db8::8a2e:370:7334",
        "::ffff:1.2.3.4",
    ]
    assert sum(map(accepted, strings)) > 500
    assert [ip_ok(s) for s in strings] == [accepted(s) for s in strings]


def test_the_iban_gate_passes_every_string_where_the_iban_pattern_matches():
    from ftkit.pii.patterns import IBAN_START

    gate = detect_module.GATES["iban_word"]
    strings = [*_ascii_strings(10, 20000), "GB82 WEST", "x gb82", "_GB82", "aGB82", "GB8", "é GB82 x", "(DE89"]
    hits = [s for s in strings if IBAN_START.search(s)]
    assert len(hits) > 300
    assert all(gate(s) for s in hits)
    assert not gate("order 12345, call 555 1234") and not gate("_GB82") and not gate("aGB82")
    assert gate("pay to (DE89 3704 0044") and gate("é GB82"), "other characters: the pattern decides"


def test_no_match_or_passing_gate_holds_fewer_ascii_digits_than_its_minimum():
    strings = _ascii_strings(12, 20000)
    checked = 0
    for det in DETECTORS:
        for s in strings if det.min_digits else ():
            for m in det.pattern.finditer(s):
                assert sum(c.isdigit() for c in m.group()) >= det.min_digits, (det.kind, s)
                checked += 1
    for gate, least in detect_module._GATE_MIN_DIGITS.items():
        for s in strings:
            if detect_module.GATES[gate](s):
                assert sum(c.isdigit() for c in s) >= least, (gate, s)
    assert checked > 500


def test_digits_in_counts_each_digit_of_overlapping_spans_once():
    classes = detect_module._classes("ab 1234 5678 x9")
    assert detect_module._digits_in(classes, [(3, 7), (5, 12)]) == 8
    assert detect_module._digits_in(classes, [(5, 12), (3, 7), (13, 15)]) == 9
    assert detect_module._digits_in(classes, []) == 0


def test_the_phone_reader_is_skipped_only_when_surer_findings_hold_every_digit():
    card_only = detect_fn("card 4111 1111 1111 1111 thanks", entities=PRESIDIO_SET)
    assert [f.entity for f in card_only] == ["CREDIT_CARD"]
    both = detect_fn("card 4111 1111 1111 1111, call +1 415 555 2671", entities=PRESIDIO_SET)
    assert [f.entity for f in both] == ["CREDIT_CARD", "PHONE"]
