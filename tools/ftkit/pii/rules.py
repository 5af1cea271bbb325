"""The decision rules for numbers, in one table: entity -> shape, validator, context words.

A shape alone is ambiguous: a Luhn-valid 15-digit number is a card to a reader only next to card words,
and `12 12345` after a street name is a house number and a postcode, not a phone. `RULES` says, per
entity, what the pattern looks for, what confirms it, and which words nearby change the verdict;
`patterns.py` and `phone.py` implement them and `cue_before` reads the words. Measurements: docs/pii.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    entity: str
    shape: str
    validator: str
    context: str  # what the words around the value decide


RULES: tuple[Rule, ...] = (
    Rule("CREDIT_CARD", "12-19 digits, one space or dash between groups",
         "Luhn checksum, and an issuer prefix + length of a major network (checks.card_ok)",
         "Luhn-valid with an unknown issuer: a card only when a CARD word is within 60 characters before "
         "or 20 after"),
    Rule("IBAN", "2 letters, 2 check digits, then the country's length of letters and digits (any case, "
         "one space or dash between groups)", "SWIFT registry length, ISO 7064 mod 97", "none needed"),
    Rule("PHONE", "7-15 digits in groups (+CC / 00CC, brackets, dots, dashes, extension)",
         "phonenumbers: valid for a region, or possible and written like a phone (+CC, brackets, groups)",
         "the nearest cue before it decides: a PHONE word keeps it; an ID word (order, invoice, licence, "
         "PO, CEP, ZIP...) or an ADDRESS word (street, Straße, rua, suite...) drops a national number; a "
         "postal-code shape (75534-030, 12345-6789) or a house number glued to a postcode is dropped "
         "unless a PHONE word is the nearest cue; +CC numbers are always phones"),
    Rule("US_SSN", "ddd-dd-dddd or ddd dd dddd; 9 bare digits next to 'SSN' / 'social security'",
         "SSA rules: area not 000/666/9xx, group not 00, serial not 0000; published examples excluded",
         "bare 9 digits need the words"),
)  # fmt: skip

CARD_WORDS = (
    "card", "visa", "mastercard", "master card", "amex", "american express", "discover", "maestro", "jcb",
    "diners", "unionpay", "rupay", "mir", "troy", "verve", "elo", "uatp", "cc", "cvv", "cvc", "cvv2", "exp",
    "expiry", "expires", "expiration", "debit", "credit", "payment", "pay", "paid", "charge", "charged",
    "billing", "pan",
)  # fmt: skip
PHONE_WORDS = (
    "phone", "telephone", "tel", "tél", "telefon", "telefone", "teléfono", "telefono", "mobile", "mobil", "cell",
    "cellphone", "call", "calls", "called", "caller", "calling", "phoned", "ring", "fax", "sms", "text", "whatsapp",
    "signal", "viber", "contact", "hotline", "dial", "reach", "ph", "mob", "handy", "celular", "☎", "📞",
)  # fmt: skip
ID_WORDS = (
    "order", "invoice", "inv", "po", "ref", "reference", "tracking", "ticket", "licence", "license", "passport",
    "id", "account", "acct", "cep", "zip", "zipcode", "postcode", "postal", "plz", "isbn", "issn", "serial",
    "sku", "case", "claim", "policy", "iban", "card", "build", "version", "patent", "vin", "parcel",
)  # fmt: skip
# Street types and address parts; the second group also matches as the end of a compound (Hauptstraße).
ADDRESS_WORDS = (
    "street", "st", "road", "rd", "avenue", "ave", "av", "avenida", "avda", "boulevard", "blvd", "bd", "lane",
    "ln", "drive", "dr", "court", "ct", "place", "pl", "plaza", "square", "sq", "way", "highway", "hwy",
    "parkway", "pkwy", "terrace", "crescent", "close", "circle", "route", "rte", "rue", "allée", "chemin",
    "impasse", "quai", "calle", "carrera", "camino", "paseo", "ronda", "via", "viale", "vicolo", "piazza",
    "corso", "contrada", "stretto", "largo", "rua", "travessa", "praça", "estrada", "alameda", "rodovia",
    "ladeira", "ulica", "ul", "aleja", "al", "utca", "út", "tér", "ulitsa", "ул", "пр", "вул", "ulice",
    "náměstí", "nám", "jalan", "jl", "apt", "apartment", "suite", "ste", "unit", "floor", "flat", "building",
    "bldg", "interior", "depto", "piso", "edif", "box", "house", "h.no", "marg", "nagar", "sector",
)  # fmt: skip
ADDRESS_SUFFIXES = (
    "straße", "strasse", "str", "weg", "gasse", "platz", "allee", "ring", "damm", "ufer", "vägen", "gatan",
    "gata", "gade", "vej", "katu", "tie", "laan", "straat", "dreef", "plein", "gracht", "kade", "steeg",
)  # fmt: skip


def _alternation(words: tuple[str, ...]) -> str:
    """A pattern matching exactly `words`, written as a trie ('p(?:h(?:one|)|o)'): the regex engine follows
    one branch per character instead of trying every word at every position. Longer words are tried first."""
    trie: dict[str, dict] = {}  # type: ignore[type-arg]
    for word in words:
        node = trie
        for ch in word.lower():
            node = node.setdefault(ch, {})
        node[""] = {}

    def pattern(node: dict) -> str:  # type: ignore[type-arg]
        branches = [re.escape(ch) + pattern(child) for ch, child in sorted(node.items()) if ch]
        branches += [""] if "" in node else []
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return pattern(trie)


_CUE = re.compile(
    rf"(?<!\w)(?:(?P<phone>{_alternation(PHONE_WORDS)})|(?P<id>{_alternation(ID_WORDS)})"
    rf"|(?P<address>{_alternation(ADDRESS_WORDS)}))(?!\w)"
    rf"|\w(?P<suffix>{_alternation(ADDRESS_SUFFIXES)})(?!\w)",
    re.I,
)
_CARD_CUE = re.compile(rf"(?<!\w)(?:{_alternation(CARD_WORDS)})(?!\w)", re.I)


# The same cues, read word by word (a dict lookup per word instead of the pattern tried at every position:
# several times faster, same verdicts). A cue is a whole word (`\w+`) or a word ending in an address suffix
# after at least one more character; a word with other than ASCII letters is matched by _CUE_WORD under re.I,
# as _CUE matches it. '☎', '📞' and 'h.no' are not single words: a window with one of them takes _CUE.
_WORD = re.compile(r"\w+")
# ASCII cue words and address suffixes as lower-case bytes: a word of an ASCII window is read from bytes.
_BYTE_CUES = {w.encode(): kind for kind, words in (("address", ADDRESS_WORDS), ("id", ID_WORDS), ("phone", PHONE_WORDS))
              for w in words if w.isascii() and _WORD.fullmatch(w)}  # fmt: skip
_BYTE_SUFFIXES = frozenset(s.encode() for s in ADDRESS_SUFFIXES if s.isascii())
_BYTE_TAILS = frozenset(s[-3:] for s in _BYTE_SUFFIXES)  # every suffix has 3 letters or more
_SUFFIX_LENGTHS = tuple(sorted({len(s) for s in _BYTE_SUFFIXES}))
_CUE_WORD = re.compile(
    rf"(?P<phone>{_alternation(PHONE_WORDS)})|(?P<id>{_alternation(ID_WORDS)})"
    rf"|(?P<address>{_alternation(ADDRESS_WORDS)})|\w+(?P<suffix>{_alternation(ADDRESS_SUFFIXES)})",
    re.I,
)
_NOT_WORDS = ("☎", "📞")  # and h.no, in any case


def _ascii_word_cue(low: bytes) -> str | None:
    """The kind of cue an ASCII word (lower-cased bytes) is: a cue word, or a word ending in an address suffix
    after at least one more character."""
    kind = _BYTE_CUES.get(low)
    if kind is None and (n := len(low)) > 3 and low[-3:] in _BYTE_TAILS:
        kind = next(("address" for k in _SUFFIX_LENGTHS if k < n and low[n - k :] in _BYTE_SUFFIXES), None)
    return kind


def _word_cue(word: str) -> str | None:
    r"""The kind of cue `word` (a whole `\w+` run) is, as _CUE reads it, or None."""
    if word.isascii():
        return _ascii_word_cue(word.lower().encode())
    m = _CUE_WORD.fullmatch(word)
    return None if m is None else "address" if m.lastgroup == "suffix" else m.lastgroup


# An ASCII window is read as bytes: its non-`\w` characters turned to spaces, lower-cased, split.
_ASCII_NON_WORD = bytes(c if _WORD.fullmatch(chr(c)) else 32 for c in range(256))


def _last_cue(left: str) -> tuple[str, int] | None:
    """The kind and end of the last cue in `left`, as the last match of _CUE would give them."""
    if "☎" in left or "📞" in left or "h.no" in left.lower():  # _NOT_WORDS
        last = None
        for last in _CUE.finditer(left):  # noqa: B007 -- the last match is the nearest
            pass
        if last is None:
            return None
        return ("address" if last.lastgroup == "suffix" else last.lastgroup), last.end()  # type: ignore[return-value]
    if left.isascii():
        low = left.encode().lower()
        end = len(low)
        for word in reversed(low.translate(_ASCII_NON_WORD).split()):
            end = low.rfind(word, 0, end)  # the rightmost word left of the last one read is this one
            if (kind := _ascii_word_cue(word)) is not None:
                return kind, end + len(word)
        return None
    for m in reversed(list(_WORD.finditer(left))):
        kind = _word_cue(m.group())
        if kind is not None:
            return kind, m.end()
    return None


def cue_before(text: str, start: int, window: int = 40) -> str | None:
    """The kind of the nearest cue word in the `window` characters before `start`: 'phone', 'id',
    'address' (a street type or compound ending) or None. A sentence end in between cuts the window."""
    left = text[max(0, start - window) : start]
    cue = _last_cue(left)
    if cue is None:
        return None
    between = left[cue[1] :].removeprefix(".")  # 'Tel. 555 1234': the cue's own abbreviation dot
    if ". " in between or "\n" in between or "! " in between or "? " in between:
        return None
    return cue[0]


def card_word_near(text: str, start: int, end: int, before: int = 60, after: int = 20) -> bool:
    """A card word within `before` characters before the number or `after` characters after it."""
    return _CARD_CUE.search(text, max(0, start - before), start) is not None or (
        _CARD_CUE.search(text, end, min(len(text), end + after)) is not None
    )
