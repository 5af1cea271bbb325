"""Phone numbers: a pattern finds runs of digits and phone punctuation, the `phonenumbers` library
decides which part of a run is a number of some country.

International numbers (+CC or 00CC) parse without a region. National numbers are tried against
`REGIONS`; a valid number for a region (its numbering plan knows the prefix) is a finding, and so is a
number of possible length written the way people write phones (+CC, a bracketed area code, or
groups joined by separators) — many numbers in real text, and every fictional one, are not
assigned but are still phone numbers to a reader. Bare digit strings must be valid to count, unless
a phone word leads them. The words before a run can also unmake it (ftkit.pii.rules: postcodes,
house numbers, order and licence numbers). phonenumbers runs only on runs whose length fits a plan.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import cache, lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumber, national_significant_number, re_util
from phonenumbers.phonenumberutil import (
    _MAX_LENGTH_FOR_NSN,
    _MIN_LENGTH_FOR_NSN,
    COUNTRY_CODE_TO_REGION_CODE,
    ValidationResult,
    _maybe_strip_national_prefix_carrier_code,
    _set_italian_leading_zeros_for_phone_number,
    _test_number_length,
    region_code_for_country_code,
)

from ftkit.pii import rules
from ftkit.pii.ascii_regex import ascii_twin
from ftkit.pii.findings import Finding
from ftkit.pii.phone_validity import NUMBER_TYPES, is_valid_reading

REGIONS = ("US", "GB", "DE", "FR", "IN", "BR", "IT", "ES", "NL", "CA", "AU", "MX", "JP", "CN", "RU", "PL")

# phonenumbers compiles its metadata patterns through re's cache (512 entries): numbers of many regions
# evict each other and are compiled again and again. Where the library offers it, keep them all.
if hasattr(re_util, "enable_pattern_cache"):
    re_util.enable_pattern_cache()


@cache
def _lengths(region: str) -> tuple[frozenset[int], str]:
    """The national number lengths `region` allows (local-only ones too) and its trunk prefix."""
    desc = PhoneMetadata.metadata_for_region(region).general_desc
    lengths = frozenset(desc.possible_length) | frozenset(desc.possible_length_local_only or ())
    return lengths, PhoneMetadata.metadata_for_region(region).national_prefix or ""


def _may_fit(region: str, digits: str) -> bool:
    """A length check before parsing: the digits, or the digits after the trunk prefix, have a length the
    region's plan allows (phonenumbers.parse is the expensive part of a phone check)."""
    lengths, trunk = _lengths(region)
    return len(digits) in lengths or (bool(trunk) and digits.startswith(trunk) and len(digits) - len(trunk) in lengths)


_TRUNK_MAX = max(len(_lengths(r)[1]) for r in REGIONS)


@lru_cache(maxsize=1024)
def _fitting(n_digits: int, lead: str) -> tuple[str, ...]:
    """The REGIONS whose plan fits a national number of `n_digits` digits starting with `lead` (_may_fit)."""
    return tuple(r for r in REGIONS if _may_fit(r, lead + "0" * (n_digits - len(lead))))


@cache
def _valid_shape(
    region: str,
) -> tuple[Callable[[str, int], object], tuple[int, ...], Callable[[str], object]] | None:
    """What a number parsed for `region` must look like to be valid: a tail of its digits (the national number),
    of a length the general description of some region of that country code allows, matches the pattern of a
    number type (fixed line, mobile, toll free...) of such a region; or it starts with the region's
    international prefix (then it is read as another country's). None when the region rewrites national
    numbers (no cheap screen)."""
    meta = PhoneMetadata.metadata_for_region(region)
    if meta.national_prefix_transform_rule:
        return None
    patterns, lengths = [], set()
    for other in COUNTRY_CODE_TO_REGION_CODE.get(meta.country_code, ()):
        other_meta = PhoneMetadata.metadata_for_region(other)
        if other_meta is None:
            return None
        lengths |= set(other_meta.general_desc.possible_length or range(1, _MAX_NSN + 1))  # none listed: any
        for kind in NUMBER_TYPES:
            desc = getattr(other_meta, kind, None)
            if desc is not None and desc.national_number_pattern:
                patterns.append(f"(?:{desc.national_number_pattern})")
    tail = re.compile("|".join(patterns) or "(?!)").fullmatch
    return tail, tuple(sorted(lengths)), _region_reading(region)[2]  # the region's international prefix


def _may_be_valid(region: str, digits: str) -> bool:
    """False when phonenumbers cannot find `digits` (ASCII, national, no extension) valid for `region`: each
    tail of a length the plans allow is matched whole (a few anchored matches instead of a search)."""
    shape = _valid_shape(region)
    if shape is None:
        return True
    tail, lengths, international = shape
    n = len(digits)
    for length in lengths:
        if length <= n and tail(digits, n - length) is not None:
            return True
    return international(digits) is not None


_PLAIN = re.compile(r"[0-9 ().\-/]*")  # ASCII digits and phone punctuation
_PLUS_PLAIN = re.compile(r"\(?\+[0-9 ().\-/]*")  # +CC and ASCII digits and punctuation: no letters, no extension
_NOT_DIGITS = str.maketrans("", "", "+ ().-/")  # what is left of a _PLAIN or _PLUS_PLAIN run: its digits
_NOT_PHONE_DIGITS = str.maketrans({chr(c): None for c in range(128) if not chr(c).isdigit()})  # ASCII
_MIN_NSN, _MAX_NSN = _MIN_LENGTH_FOR_NSN, _MAX_LENGTH_FOR_NSN  # phonenumbers' shortest and longest national number


def _prefix_test(meta: PhoneMetadata) -> Callable[[str], object]:
    """Where `meta`'s national_prefix_for_parsing matches at the start of some digits (no match: phonenumbers
    strips nothing)."""
    prefix = meta.national_prefix_for_parsing
    return re.compile(prefix).match if prefix else (lambda digits: None)


@cache
def _metadata_for_code(country_code: int) -> tuple[PhoneMetadata, Callable[[str], object]] | None:
    """The metadata parse reads the national part of a +CC number with, and its national-prefix test."""
    meta = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region_code_for_country_code(country_code))
    return None if meta is None else (meta, _prefix_test(meta))


# Lengths after which parse keeps the national prefix it found (the digits without it are no number).
_KEEP_PREFIX = (ValidationResult.TOO_SHORT, ValidationResult.IS_POSSIBLE_LOCAL_ONLY, ValidationResult.INVALID_LENGTH)


def _significant(digits: str, meta: PhoneMetadata, prefix: Callable[[str], object]) -> str | None:
    """The national significant number parse makes of the national digits of a number of `meta`'s plan, by its
    own steps: the national prefix (and carrier code) stripped where its helper strips it and the rest has a
    length the plan allows; None where parse would raise (a length it rejects). `prefix`: _prefix_test(meta)."""
    if prefix(digits) is not None:  # else the helper returns the digits as they are
        _, stripped, _ = _maybe_strip_national_prefix_carrier_code(digits, meta)
        if _test_number_length(stripped, meta) not in _KEEP_PREFIX:
            digits = stripped
    return digits if _MIN_NSN <= len(digits) <= _MAX_NSN else None


Reading = tuple[int, str]  # a number as (country code, national significant number)


def _international_reading(text: str) -> Reading | None:
    """international_number's reading, without building the PhoneNumber."""
    if _PLUS_PLAIN.fullmatch(text) is None:
        return None
    digits = text.translate(_NOT_DIGITS)
    if len(digits) <= 2 or digits[0] == "0":
        return None
    for i in (1, 2, 3):
        if int(digits[:i]) in COUNTRY_CODE_TO_REGION_CODE:
            country_code, national = int(digits[:i]), digits[i:]
            break
    else:
        return None
    plan = _metadata_for_code(country_code)
    if plan is None or not _MIN_NSN <= len(national) <= _MAX_NSN:
        return None
    nsn = _significant(national, *plan)
    return None if nsn is None else (country_code, nsn)


@cache
def _region_reading(
    region: str,
) -> tuple[PhoneMetadata, str, Callable[[str], object], Callable[[str], object]]:
    """For national numbers of `region`: its metadata, its country code, and how phonenumbers looks for an
    international prefix and a national prefix at the start of the digits."""
    meta = PhoneMetadata.metadata_for_region(region)
    return meta, str(meta.country_code), re.compile(meta.international_prefix or "(?!)").match, _prefix_test(meta)


def _national_reading(text: str, region: str) -> Reading | None:
    """national_number's reading, without building the PhoneNumber."""
    if _PLAIN.fullmatch(text) is None:
        return None
    digits = text.translate(_NOT_DIGITS)
    if not 3 <= len(digits) <= _MAX_NSN:
        return None
    meta, code, international, prefix = _region_reading(region)
    if digits.startswith(code) or international(digits) is not None:
        return None
    nsn = _significant(digits, meta, prefix)
    return None if nsn is None else (meta.country_code, nsn)


def _phone_number(reading: Reading) -> PhoneNumber:
    """The PhoneNumber parse returns for a reading (leading zeros of the national number kept as parse keeps
    them)."""
    country_code, nsn = reading
    number = PhoneNumber(country_code=country_code, national_number=int(nsn))
    _set_italian_leading_zeros_for_phone_number(nsn, number)
    return number


def international_number(text: str) -> PhoneNumber | None:
    """The number `phonenumbers.parse(text)` returns for a +CC run of ASCII digits and punctuation, read
    without parsing; None when parse could do more than split off the country code and a national prefix
    (an extension, letters, an unknown code, a length it rejects): then parse it."""
    reading = _international_reading(text)
    return None if reading is None else _phone_number(reading)


def national_number(text: str, region: str) -> PhoneNumber | None:
    """The number `phonenumbers.parse(text, region)` returns for a run of ASCII digits and punctuation, read
    without parsing; None when parse could do more than take the digits, less a national prefix, as the
    national number (the region's international prefix or its country code in front, letters, a length it
    rejects): then parse it."""
    reading = _national_reading(text, region)
    return None if reading is None else _phone_number(reading)


# A run: optional + prefix, digit groups joined by one separator (a space, dot, dash or slash, or a bracket
# with an optional space), an optional extension. Its first character (+, ( or a digit) comes before the
# look-behind, so the regex engine skips to candidates (see ftkit.pii.patterns.IPV4).
CANDIDATE = re.compile(
    r"(?:\+(?<![\w+/.-]\+)\d|\((?<![\w+/.-]\()\+?\d|\d(?<![\w+/.-]\d))"
    r"(?:\d|(?:[ .\-/]|\)[ -]?| ?\()(?=[\d(])){5,24}\d\)?"
    r"(?:\s{0,2}(?:x|ext\.?|extension|#)\s{0,2}\d{1,6})?(?![\w]|[.-]\w)"
)
_CANDIDATE_ASCII = ascii_twin(CANDIDATE)  # the same matches on ASCII text (ftkit.pii.ascii_regex)
_DIGIT = re.compile(r"\d")
_DATE_TIME = re.compile(
    r"^(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}|\d{1,2}:\d{2}(?::\d{2})?)(?:[ T].*)?$"
)
_GROUPED = re.compile(r"^(?:\+|00|\()|\d[ .-]\d{2,}[ .-]\d")
_SSN_SHAPE = re.compile(r"^\d{3}-\d{2}-\d{4}$")
_NOT_PHONE = re.compile(
    r"^(?:\(?[12]\d{3} ?[-/] ?[12]\d{3}\)?"  # a range of years: (1874-1936)
    r"|[-+]?\d+\.\d+"  # a decimal number: 37.3362725
    r"|\d{1,3}(?:\.\d{1,3}){3})$"  # a dotted quad (an IP address, valid or not)
)
_ISBN_SHAPE = re.compile(r"^(?:97[89]-)?\d{1,5}-\d{1,7}-\d{1,7}-[\dX]$")
# The three shapes in one pattern (a match of an alternation is a match of one branch): one call, not three.
_DATE_SSN_OR_NOT_PHONE = re.compile("|".join(f"(?:{p.pattern})" for p in (_DATE_TIME, _SSN_SHAPE, _NOT_PHONE)))


def isbn_ok(text: str) -> bool:
    """A hyphenated ISBN-10 or ISBN-13 whose check digit is right (books are not phones)."""
    if not _ISBN_SHAPE.match(text):
        return False
    chars = text.replace("-", "")
    if len(chars) == 10:
        total = sum((10 - i) * (10 if c == "X" else int(c)) for i, c in enumerate(chars))
        return total % 11 == 0
    if len(chars) == 13 and chars.isdigit():
        return sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(chars)) % 10 == 0
    return False


_EXTENSION = re.compile(r"\s{0,2}(?:x|ext\.?|extension|#)\s{0,2}\d{1,6}$")
_SHORT_LEAD = re.compile(r"^\d{1,2} ")
_STRAY_TAIL = re.compile(r"(?<=\d{3}) \d{1,2}$")  # '123456789 10': the next list number, not the phone's


def _looks_like_something_else(text: str) -> bool:
    """A date, time, SSN, year range, decimal, dotted quad or ISBN with phone-like digits."""
    return _DATE_SSN_OR_NOT_PHONE.match(text) is not None or isbn_ok(text)


@lru_cache(maxsize=4096)
def _classify(candidate: str) -> float:
    """0 when `candidate` is not a phone number, else the finding's score."""
    main = _EXTENSION.sub("", candidate) if "x" in candidate or "#" in candidate else candidate  # its markers
    # A run of an ASCII text holds ASCII digits and phone punctuation once its extension is cut: translated.
    digits = main.translate(_NOT_PHONE_DIGITS) if main.isascii() else "".join(_DIGIT.findall(main))
    n_digits = len(digits)  # E.164: at most 15 digits
    if not 7 <= n_digits <= 15 or _looks_like_something_else(main):
        return 0.0
    international = candidate.startswith(("+", "(+")) or candidate.startswith("00")
    if not international and n_digits > 13:  # a card, account or order number: no national format is longer
        return 0.0
    text = "+" + candidate[2:] if candidate.startswith("00") else candidate
    formatted = bool(_GROUPED.search(candidate))
    if main.isdigit() and n_digits < 9:  # 6000000 is a number, not a phone
        return 0.0
    if international:
        return _parsed_score(text, digits, (None,), formatted, screen=False)
    fits = _fitting(len(digits), digits[:_TRUNK_MAX])
    # The screen reads the digits as the number: only for a run of ASCII digits and punctuation (phonenumbers
    # reads letters as keypad digits, 'ext' as 398, and an extension is not part of the number).
    screen = _PLAIN.fullmatch(candidate) is not None
    return _parsed_score(text, digits, fits, formatted and n_digits <= 12, screen)


def _parsed_score(text: str, digits: str, regions: Sequence[str | None], formatted: bool, screen: bool) -> float:
    """0.85 when phonenumbers finds `text` valid for one of `regions`; else 0.6 when `formatted` and possible
    for one; else 0. With `screen`, regions where the digits cannot be valid are parsed only if needed to
    learn whether the number is possible."""
    possible = False
    skipped: list[str | None] = []
    for region in regions:
        if screen and not _may_be_valid(region, digits):  # type: ignore[arg-type]
            skipped.append(region)
            continue
        number = None
        reading = _international_reading(text) if region is None else _national_reading(text, region)
        if reading is None:
            try:
                number = phonenumbers.parse(text, region)
            except NumberParseException:
                continue
            reading = (number.country_code, national_significant_number(number))
        if is_valid_reading(*reading):
            return 0.85
        if formatted and not possible:
            possible = phonenumbers.is_possible_number(number or _phone_number(reading))
    for region in skipped if formatted and not possible else ():
        try:
            if phonenumbers.is_possible_number(phonenumbers.parse(text, region)):
                return 0.6
        except NumberParseException:
            continue
    return 0.6 if possible else 0.0


def _sub_runs(text: str, start: int) -> list[tuple[int, int]]:
    """The run without a stray short figure (three characters at most) at either end, for runs that glued
    a number to a neighbouring one ('room 12 555-123-4567', '555-123-4567 2'); longest first."""
    groups = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", text)]
    short = [e - s <= 3 for s, e in groups]
    firsts = [0, 1] if len(groups) > 1 and short[0] else [0]
    lasts = [len(groups) - 1, len(groups) - 2] if len(groups) > 1 and short[-1] else [len(groups) - 1]
    spans = [(groups[i][0], groups[j][1]) for i in firsts for j in lasts if i <= j]
    return sorted(spans, key=lambda s: s[0] - s[1])


def _rank(piece: str, score: float) -> tuple[float, bool, int]:
    """Surer first; of equally sure readings, one that does not start with a stray short figure; then longer."""
    return (score, not (score < 0.85 and _SHORT_LEAD.match(piece)), len(piece))


# Postal codes written like digit groups: Brazil's CEP 75534-030, US ZIP+4 12345-6789, Japan's 〒123-4567.
_POSTAL = re.compile(r"^(?:\d{5}-\d{3}|\d{5}-\d{4}|\d{3}-\d{4}(?<=〒\d{3}-\d{4}))$")
# A house number glued to a postcode: '339 21510', '906 3625', '606 437 35'.
_HOUSE_POSTCODE = re.compile(r"^[1-9]\d{0,3}[a-z]? (?:\d{4,6}|\d{3} \d{2}|\d{2}-\d{3})$")


_PAIRS = re.compile(r"^\d{2,3}(?:[ .-]\d{2,3})+$")  # 21 12 34, 05.00.12


def _by_phone_word(run: str, cue: str | None) -> float:
    """A run of 7-15 digits (6 in groups of two or three) after a phone word (`cue`) is a phone even where no
    region we parse for knows it (the numbering plans of 230 other regions): score 0.5."""
    if cue != "phone":
        return 0.0
    n_digits = len(_DIGIT.findall(run))
    if not 6 <= n_digits <= 15 or (n_digits == 6 and not _PAIRS.match(run)) or _looks_like_something_else(run):
        return 0.0
    return 0.5


def in_context(text: str, start: int, end: int, score: float, cue: str | bool | None = False) -> bool:
    """rules.RULES PHONE: the nearest cue word before a national number can make it something else.
    `cue`: rules.cue_before(text, start) when the caller has it already."""
    run = text[start:end]
    if run.startswith(("+", "(+", "00")):
        return True
    if cue is False:
        cue = rules.cue_before(text, start)
    if cue == "phone":
        return True
    if cue == "id":
        return False
    if _POSTAL.match(run) or _HOUSE_POSTCODE.match(run):
        return False
    return not (cue == "address" and score < 0.85)


_CODE_BEFORE = re.compile(r"[A-Z]{2}\d{2}(?: [A-Z0-9]{4})* $")  # 'GB38 XWJM ' before digits: an IBAN-like code


def _dropped_whole(text: str, start: int, run: str, cue: str | None) -> bool:
    """The words before `run` make it no phone whatever phonenumbers says (in_context), and it has no part
    that _sub_runs would read on its own: nothing to parse."""
    if run.startswith(("+", "(+", "00")) or cue == "phone":
        return False
    if cue != "id" and not (_POSTAL.match(run) or _HOUSE_POSTCODE.match(run)):
        return False
    groups = run.split()
    return len(groups) == 1 or (len(groups[0]) > 3 and len(groups[-1]) > 3)


def find_phones(
    text: str,
    taken: Sequence[tuple[int, int]] = (),
    within: Sequence[tuple[int, int]] = (),
    pos: int = 0,
) -> list[Finding]:
    """Each run is read whole when it is a number; otherwise its sub-runs that are valid numbers, longest first.
    A run that starts with +CC keeps its start (a national number is not read out of an international one).
    Runs that overlap a `taken` span (a surer finding: a card, an IBAN, an IP address) are skipped, and so are
    runs inside a `within` span (a finding at least as sure as a valid phone and as long: an SSN). Runs are
    looked for from `pos` on (the caller knows none starts before it)."""
    found: list[Finding] = []
    for m in (_CANDIDATE_ASCII if text.isascii() else CANDIDATE).finditer(text, pos):
        run, start, end = m.group(0), m.start(), m.end()
        if (taken and any(s < end and start < e for s, e in taken)) or (
            within and any(s <= start and end <= e for s, e in within)
        ):
            continue
        # The code pattern ends with a space (or the newline `$` can stand before) right before the run.
        if start and text[start - 1] in " \n" and _CODE_BEFORE.search(text, max(0, start - 40), start):
            continue
        if (tail := _STRAY_TAIL.search(run)) and not _classify(run) and _classify(run[: tail.start()]):
            run = run[: tail.start()]
        if run.count(")") > run.count("("):
            run = run.rstrip(")")
        elif run.startswith("(") and run.endswith(")") and run.count("(") == 1:  # (555-3476): the brackets are prose
            run, start = run[1:-1], start + 1
        international = run.startswith(("+", "(+", "00"))
        # The words before an international run matter only when it is no number or starts with a short figure.
        cue: str | bool | None = False if international else rules.cue_before(text, start)
        if not international and _dropped_whole(text, start, run, cue):  # type: ignore[arg-type]
            continue
        score = _classify(run)
        if not score:
            score = _by_phone_word(run, rules.cue_before(text, start) if cue is False else cue)  # type: ignore[arg-type]
        elif not _rank(run, score)[1]:
            if cue is False:
                cue = rules.cue_before(text, start)
            # '90 12 34 56' after 'Phone:': the short lead is the number's own
            score = max(score, 0.5) if cue == "phone" else 0.0
        if score:
            if in_context(text, start, start + len(run), score, cue):
                found.append(Finding(start, start + len(run), "PHONE", score, "phone"))
            continue
        scored = []
        for s, e in _sub_runs(run, start):
            if (international and s != start) or e - s == len(run):
                continue
            piece = text[s:e]
            if piece.count(")") > piece.count("("):
                piece = piece.rstrip(")")
            if (score := _classify(piece)) >= 0.85:  # a part of a run must be a valid number on its own
                scored.append((_rank(piece, score), s, s + len(piece), score))
        picked: list[tuple[int, int]] = []  # not `taken`: that is the surer findings, for the runs after this one
        for _, s, e, score in sorted(scored, reverse=True):
            if not any(s < te and e > ts for ts, te in picked) and in_context(text, s, e, score):
                found.append(Finding(s, e, "PHONE", score, "phone"))
                picked.append((s, e))
    return found
