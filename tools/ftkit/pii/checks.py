"""Pure checks that turn a pattern match into a finding: checksums, number plans and entropy.

Each takes the matched text and answers whether it is a real instance of the entity; none does I/O.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter

_NOT_DIGIT = re.compile(r"\D")


def digits(text: str) -> str:
    return _NOT_DIGIT.sub("", text)


def luhn_ok(number: str) -> bool:
    """The Luhn (mod 10) checksum of a digit string: every card number passes it."""
    if not number.isdigit():
        return False
    if not number.isascii():  # other scripts' digits: read by code point, as before
        return sum((d * 2 - 9 if d > 4 else d * 2) if i % 2 else d
                   for i, d in enumerate(ord(ch) - 48 for ch in reversed(number))) % 10 == 0  # fmt: skip
    # The digits' bytes summed in C: every second digit from the right doubled (a table: doubled digits
    # stay single digits), less the code of '0' for each digit.
    total = sum(number.translate(_DOUBLED).encode()[-2::-2]) + sum(number.encode()[-1::-2])
    return (total - 48 * len(number)) % 10 == 0


_DOUBLED = str.maketrans({str(d): str(d * 2 - 9 if d > 4 else d * 2) for d in range(10)})


# Issuer prefixes (IIN ranges) and lengths of the card networks in use; a Luhn-valid number outside
# them is more likely an order id than a card.
_CARD_RANGES: tuple[tuple[int, int, tuple[int, ...]], ...] = (
    (4, 4, (13, 16, 19)),  # Visa
    (51, 55, (16,)),  # Mastercard
    (2221, 2720, (16,)),  # Mastercard 2-series
    (34, 34, (15,)),  # American Express
    (37, 37, (15,)),
    (6011, 6011, (16, 19)),  # Discover
    (644, 649, (16, 19)),
    (65, 65, (16, 19)),
    (3528, 3589, (16, 17, 18, 19)),  # JCB
    (300, 305, (14, 16, 19)),  # Diners Club
    (36, 36, (14, 16, 19)),
    (38, 39, (14, 16, 19)),
    (62, 62, (16, 17, 18, 19)),  # UnionPay
    (50, 50, (12, 13, 14, 15, 16, 17, 18, 19)),  # Maestro
    (56, 58, (12, 13, 14, 15, 16, 17, 18, 19)),
    (6759, 6759, (12, 13, 14, 15, 16, 17, 18, 19)),
    (6761, 6763, (12, 13, 14, 15, 16, 17, 18, 19)),
    (6304, 6304, (12, 13, 14, 15, 16, 17, 18, 19)),
    (6390, 6390, (12, 13, 14, 15, 16, 17, 18, 19)),
    (2200, 2204, (16, 17, 18, 19)),  # Mir
)


def _card_prefixes() -> dict[str, frozenset[int]]:
    """Each issuer prefix of _CARD_RANGES written out ('2221' ... '2720') -> the card lengths it allows."""
    table: dict[str, set[int]] = {}
    for lo, hi, lengths in _CARD_RANGES:
        for prefix in range(lo, hi + 1):
            table.setdefault(str(prefix), set()).update(lengths)
    return {prefix: frozenset(lengths) for prefix, lengths in table.items()}


_CARD_PREFIXES = _card_prefixes()
_PREFIX_WIDTHS = sorted({len(p) for p in _CARD_PREFIXES})


def card_ok(number: str) -> bool:
    """A card number: 12-19 digits in a known issuer range with that network's length, Luhn-valid."""
    return 12 <= len(number) <= 19 and luhn_ok(number) and issuer_ok(number)


def issuer_ok(number: str) -> bool:
    """12-19 digits in a known issuer range with that network's length (card_ok without the Luhn check)."""
    if not 12 <= len(number) <= 19 or not number.isdigit():
        return False
    n = len(number)
    if not number.isascii():
        return any(lo <= int(number[: len(str(lo))]) <= hi and n in lengths for lo, hi, lengths in _CARD_RANGES)
    for w in _PREFIX_WIDTHS:  # noqa: SIM110 -- a loop, not any(generator): it runs for every Luhn-valid number
        if n in _CARD_PREFIXES.get(number[:w], ()):
            return True
    return False


# Numbers the SSA never issues or published as examples (advertising, a wallet insert).
_SSN_EXAMPLES = {"078051120", "219099999", "123456789", "111111111", "222222222", "333333333", "444444444",
                 "555555555", "777777777", "888888888", "999999999"}  # fmt: skip


def ssn_ok(number: str) -> bool:
    """A US Social Security number: area not 000/666/9xx, group not 00, serial not 0000."""
    if len(number) != 9 or not number.isdigit() or number in _SSN_EXAMPLES:
        return False
    area, group, serial = number[:3], number[3:5], number[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


# Length of the IBAN of each country that issues them (SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_ok(iban: str) -> bool:
    """An IBAN without spaces: the country's length and the ISO 7064 mod-97 check digits."""
    if len(iban) < 15 or IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum() or not iban.isascii():
        return False
    moved = iban[4:] + iban[:4]
    return int(moved.upper().translate(_BASE36)) % 97 == 1


_BASE36 = str.maketrans({chr(ord("A") + i): str(10 + i) for i in range(26)})  # A=10 ... Z=35


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # 0-255, no leading zero
_IPV4_OK = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}").fullmatch


def ip_ok(text: str) -> bool:
    """A valid IPv4 (four octets 0-255, no leading zeros: ipaddress's rules) or IPv6 address."""
    if _IPV4_OK(text) is not None:
        return True
    if ":" not in text:  # ipaddress reads it as IPv4 and finds it invalid (its IPv6 parser wants a colon)
        return False
    try:
        ipaddress.IPv6Address(text)  # what ipaddress.ip_address tries once IPv4 fails
    except ValueError:
        return False
    return True


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def char_classes(text: str) -> int:
    """How many of lower case, upper case, digits and other characters the text uses."""
    return sum((any(c.islower() for c in text), any(c.isupper() for c in text), any(c.isdigit() for c in text),
                any(not c.isalnum() for c in text)))  # fmt: skip
