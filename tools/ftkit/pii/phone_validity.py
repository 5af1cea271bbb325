"""`is_valid_number`: phonenumbers' own validity test, read from its own metadata with fewer regex calls.

phonenumbers decides validity by trying a region's number types one by one (premium rate, toll free, ...,
fixed line, mobile), each a length check and a regex, and for a country code shared by several regions
(+1: 25 of them) it first finds the region the same way. That is most of the phone reader's time on
PII-dense text. Here each region's types are joined, per number length, into one pattern (a full match of
an alternation is a full match of one of its branches), so a region costs two regex calls; the answer is
the library's (tests compare them on every region's example numbers and on random numbers).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

from phonenumbers import PhoneMetadata, PhoneNumber, national_significant_number
from phonenumbers.phonenumberutil import (
    _MAX_LENGTH_FOR_NSN,
    COUNTRY_CODE_TO_REGION_CODE,
    REGION_CODE_FOR_NON_GEO_ENTITY,
    country_code_for_valid_region,
)

# The number types phonenumbers tries in turn (its _number_type_helper): a valid number matches one of them.
# Mobile (last) counts only where its pattern differs from fixed line's (else phonenumbers never reads it).
NUMBER_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
                "fixed_line", "mobile")  # fmt: skip


def _fits(desc: object, length: int) -> str | None:
    """The pattern of a number description that a national number of `length` digits may match, or None
    (phonenumbers' _is_number_matching_desc: no description, a length it does not allow, no pattern)."""
    if desc is None:
        return None
    lengths = desc.possible_length  # type: ignore[attr-defined]
    if len(lengths) > 0 and length not in lengths:
        return None
    return desc.national_number_pattern or None  # type: ignore[attr-defined]


def _type_test(meta: PhoneMetadata) -> tuple[Callable[[str], object] | None, ...]:
    """For each national number length: a test that a number of that length is of some type of `meta`
    (None: none can be), phonenumbers' `_number_type_helper(...) != UNKNOWN`."""
    kinds = [getattr(meta, k, None) for k in NUMBER_TYPES[:-1]]
    kinds += [] if meta.same_mobile_and_fixed_line_pattern else [meta.mobile]
    tests: list[Callable[[str], object] | None] = []
    for length in range(_MAX_LENGTH_FOR_NSN + 1):
        general = _fits(meta.general_desc, length)
        types = [p for p in (_fits(d, length) for d in kinds) if p is not None]
        if general is None or not types:
            tests.append(None)
            continue
        general_match = re.compile(general).fullmatch
        types_match = re.compile("|".join(f"(?:{p})" for p in types)).fullmatch
        tests.append(lambda nsn, g=general_match, t=types_match: g(nsn) is not None and t(nsn) is not None)
    return tuple(tests)


TypeTests = tuple[Callable[[str], object] | None, ...]  # _type_test's answer: one test per number length


def _of_some_type(tests: TypeTests, nsn: str) -> bool:
    """phonenumbers' `_number_type_helper(nsn, meta) != UNKNOWN`, with `tests` = _type_test(meta)."""
    test = tests[len(nsn)] if len(nsn) < len(tests) else None
    return test is not None and bool(test(nsn))


@cache
def _placed(country_code: int, region: str) -> TypeTests | None:
    """The type tests of the metadata phonenumbers validates a number of `country_code` against once it is
    placed in `region` (None: it calls such a number invalid). Metadata objects are not hashable: the tests
    are kept under the (country code, region) they come from."""
    meta = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region.upper())
    if meta is None or (
        region != REGION_CODE_FOR_NON_GEO_ENTITY and country_code != country_code_for_valid_region(region)
    ):
        return None
    return _type_test(meta)


@cache
def _regions(country_code: int) -> tuple[tuple[str, Callable[[str], object] | None, TypeTests | None], ...]:
    """The regions of a shared country code in phonenumbers' order, each with its leading-digits test (None:
    the region is told by validity) and type tests (phonenumbers' _region_code_for_number_from_list; a
    region of the code's own list is placed with its own metadata, so _placed's tests are those)."""
    out = []
    for region in COUNTRY_CODE_TO_REGION_CODE.get(country_code, ()):
        meta = PhoneMetadata.metadata_for_region(region.upper(), None)
        if meta is not None:
            leading = None if meta.leading_digits is None else re.compile(meta.leading_digits).match
            out.append((region, leading, _placed(country_code, region)))
    return tuple(out)


def is_valid_number(number: PhoneNumber) -> bool:
    """phonenumbers.is_valid_number(number)."""
    return is_valid_reading(number.country_code, national_significant_number(number))


def is_valid_reading(country_code: int, nsn: str) -> bool:
    """phonenumbers.is_valid_number of the number with `country_code` and national significant number `nsn`
    (its national_significant_number: digits, leading zeros included)."""
    regions = COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    if regions is None:
        return False
    region: str | None = regions[0]
    if len(regions) > 1:
        region = None
        for name, leading, tests in _regions(country_code):
            if (leading(nsn) is not None) if leading is not None else tests is not None and _of_some_type(tests, nsn):
                region = name
                break
        if region is None:
            return False
    tests = _placed(country_code, region)
    return tests is not None and _of_some_type(tests, nsn)
