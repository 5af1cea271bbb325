"""A labelled PII evaluation set from sources the detector was not built from, in two disjoint splits.

`build(split, n)` returns `LabelledText`s (benchmarks/pii_testset.py's type, so pii_accuracy's strict
scorer reads them): sentences with the exact span of every EMAIL, PHONE, CREDIT_CARD, US_SSN, IBAN and
IP_ADDRESS value, and of the PERSON names and postal ADDRESSes around them (for the NER comparison).

Sources
  PHONE        libphonenumber's example number for every region x number type it has, written E164,
               INTERNATIONAL and NATIONAL; and Faker `phone_number()` in the split's locales (kept when
               phonenumbers calls it possible for the locale's country).
  CREDIT_CARD  every row of the public IIN table in `iin.py` (Wikipedia): a prefix in the range, a length
               of that network (12-19), random digits, Luhn check digit; plain, spaced or dashed.
  IBAN         one valid IBAN per country of the SWIFT registry (`iban.py`) in upper, lower and grouped
               upper/lower case.
  EMAIL, US_SSN, IP_ADDRESS, PERSON, ADDRESS   Faker in the split's locales (SSN: en_US).
  Hard negatives  postal addresses with house numbers and postal codes (Faker, many locales; labelled
               ADDRESS), Brazilian CEPs, dates, times, order/invoice/tracking numbers, version strings,
               valid ISBNs, coordinates, prices, driver's licence numbers, Luhn failures, bad IBAN checks.
Splits
  dev and heldout differ in seed, in sentence templates, in Faker locales and in phone regions (every
  region goes to exactly one split, by a hash of its code). Cards and IBANs use every IIN row and every
  country in both, with different random digits. The held-out split is for reporting, not for tuning.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import re
import string
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pii_testset import LabelledText, Span

from pii_eval.iban import BBAN_FORMATS, grouped, make_iban
from pii_eval.iin import IIN_TABLE

SPLITS = ("dev", "heldout")
SEEDS = {"dev": 11, "heldout": 20261207}
ENTITIES = ("EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS")

LOCALES = {
    "dev": ("en_US", "de_DE", "fr_FR", "pt_BR", "es_ES", "it_IT", "nl_NL", "ja_JP", "pl_PL", "en_IN", "sv_SE",
            "ko_KR", "es_MX", "cs_CZ", "fi_FI"),
    "heldout": ("en_GB", "en_AU", "en_CA", "de_AT", "fr_CH", "pt_PT", "ru_RU", "hu_HU", "ro_RO", "da_DK",
                "no_NO", "zh_CN", "id_ID", "el_GR", "uk_UA", "es_AR", "es_CO", "nl_BE", "he_IL", "en_NZ",
                "en_IE", "sk_SK", "hr_HR"),
}  # fmt: skip

PHONE_TYPES = tuple(
    (name, getattr(PhoneNumberType, name))
    for name in ("FIXED_LINE", "MOBILE", "TOLL_FREE", "PREMIUM_RATE", "SHARED_COST", "VOIP", "PERSONAL_NUMBER",
                 "PAGER", "UAN", "VOICEMAIL")
)  # fmt: skip
PHONE_FORMATS = (("E164", PhoneNumberFormat.E164), ("INTERNATIONAL", PhoneNumberFormat.INTERNATIONAL),
                 ("NATIONAL", PhoneNumberFormat.NATIONAL))  # fmt: skip


def split_of(key: str) -> str:
    """dev or heldout, fixed by a hash of `key` (a region code): the same key always lands in the same split."""
    return SPLITS[hashlib.sha256(key.encode()).digest()[0] % 2]


# --------------------------------------------------------------------------------------- templates

# ⟪SLOT⟫ is replaced by a value; PERSON and ADDRESS slots are labelled too. Dev and held-out share none.
TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "dev": {
        "EMAIL": ("You can email ⟪PERSON⟫ at ⟪EMAIL⟫ about the invoice.", "Contact: ⟪EMAIL⟫",
                  "Please cc ⟪EMAIL⟫ on the thread.", "⟪PERSON⟫ <⟪EMAIL⟫> wrote on Monday:"),
        "PHONE": ("Call ⟪PERSON⟫ on ⟪PHONE⟫ if the parcel is late.", "Phone: ⟪PHONE⟫",
                  "My mobile number is ⟪PHONE⟫, text me any time.", "Ship to ⟪ADDRESS⟫. Tel. ⟪PHONE⟫",
                  "reach me at ⟪PHONE⟫ tomorrow", "⟪PERSON⟫, ⟪ADDRESS⟫, ⟪PHONE⟫"),
        "CREDIT_CARD": ("Please charge my card ⟪CREDIT_CARD⟫, exp 09/28.", "Card number: ⟪CREDIT_CARD⟫",
                        "I paid with my visa ⟪CREDIT_CARD⟫ yesterday.", "CC ⟪CREDIT_CARD⟫ cvv 123",
                        "The card on file for ⟪PERSON⟫ is ⟪CREDIT_CARD⟫."),
        "US_SSN": ("My SSN is ⟪US_SSN⟫.", "Social security number: ⟪US_SSN⟫",
                   "⟪PERSON⟫ (SSN ⟪US_SSN⟫) applied in March."),
        "IBAN": ("Please wire the deposit to IBAN ⟪IBAN⟫.", "Account: ⟪IBAN⟫ (⟪PERSON⟫)",
                 "refund goes to ⟪IBAN⟫ by Friday", "Bank details for ⟪PERSON⟫: ⟪IBAN⟫"),
        "IP_ADDRESS": ("Login from ⟪IP_ADDRESS⟫ was blocked.", "The server at ⟪IP_ADDRESS⟫ is down.",
                       "client_ip=⟪IP_ADDRESS⟫ status=403"),
        "NEG": ("Ship it to ⟪ADDRESS⟫ please.", "⟪PERSON⟫ moved to ⟪ADDRESS⟫ last year.", "Note: ⟪NEG⟫.",
                "As discussed, ⟪NEG⟫ and nothing else.", "Deliver to ⟪ADDRESS⟫ (⟪NEG⟫)."),
    },
    "heldout": {
        "EMAIL": ("Drop a line to ⟪EMAIL⟫ when you land.", "From: ⟪PERSON⟫ (⟪EMAIL⟫)",
                  "Her work address is ⟪EMAIL⟫.", "send the draft over to ⟪EMAIL⟫, thanks ⟪PERSON⟫"),
        "PHONE": ("You can ring ⟪PERSON⟫ on ⟪PHONE⟫.", "Tel: ⟪PHONE⟫", "cell ⟪PHONE⟫",
                  "⟪PERSON⟫ lives at ⟪ADDRESS⟫ and her phone is ⟪PHONE⟫.", "Contact number ⟪PHONE⟫ (after 6pm)",
                  "Address: ⟪ADDRESS⟫ | Phone: ⟪PHONE⟫", "whatsapp me on ⟪PHONE⟫"),
        "CREDIT_CARD": ("Use the card ending in ⟪CREDIT_CARD⟫ for the deposit.", "credit card: ⟪CREDIT_CARD⟫",
                        "⟪PERSON⟫ paid by debit card ⟪CREDIT_CARD⟫, expiry 11/27.",
                        "Amex ⟪CREDIT_CARD⟫ was declined.", "payment card ⟪CREDIT_CARD⟫ (CVV on the back)"),
        "US_SSN": ("SSN: ⟪US_SSN⟫", "her social security number is ⟪US_SSN⟫",
                   "Employee ⟪PERSON⟫, SSN ⟪US_SSN⟫, starts Monday."),
        "IBAN": ("IBAN: ⟪IBAN⟫", "Transfer the rent to ⟪PERSON⟫, ⟪IBAN⟫.",
                 "my bank account is ⟪IBAN⟫", "Beneficiary ⟪PERSON⟫ — account ⟪IBAN⟫"),
        "IP_ADDRESS": ("ssh into ⟪IP_ADDRESS⟫ and restart it.", "Request from ⟪IP_ADDRESS⟫ timed out",
                       "my IP is ⟪IP_ADDRESS⟫"),
        "NEG": ("The office is at ⟪ADDRESS⟫.", "Return address: ⟪ADDRESS⟫", "For the record, ⟪NEG⟫.",
                "⟪PERSON⟫ said ⟪NEG⟫.", "Send to ⟪PERSON⟫, ⟪ADDRESS⟫ — ⟪NEG⟫"),
    },
}  # fmt: skip

SLOT = re.compile(r"⟪([A-Z_]+)⟫")


# --------------------------------------------------------------------------------------- values


class Sources:
    """Every value-maker of one split, driven by one seeded RNG and seeded Faker instances."""

    def __init__(self, split: str, seed: int) -> None:
        from faker import Faker

        self.split = split
        self.rng = random.Random(seed)
        self.fakers = {}
        for loc in LOCALES[split]:
            f = Faker(loc)
            f.seed_instance(self.rng.randrange(2**32))
            self.fakers[loc] = f
        self.us = Faker("en_US")
        self.us.seed_instance(self.rng.randrange(2**32))
        self.phone_examples = list(example_phones(split))

    def faker(self) -> tuple[str, object]:
        loc = self.rng.choice(LOCALES[self.split])
        return loc, self.fakers[loc]

    def person(self) -> tuple[str, str]:
        loc, f = self.faker()
        return f.name(), f"person:{loc}"  # type: ignore[attr-defined]

    def address(self) -> tuple[str, str]:
        loc, f = self.faker()
        return re.sub(r"\s*\n\s*", ", ", f.address().strip()), f"address:{loc}"  # type: ignore[attr-defined]

    def email(self) -> tuple[str, str]:
        loc, f = self.faker()
        maker = self.rng.choice(("email", "free_email", "company_email"))
        return getattr(f, maker)(), f"email:{maker}:{loc}"

    def phone(self) -> tuple[str, str]:
        if self.rng.random() < 0.6:
            return self.rng.choice(self.phone_examples)
        for _ in range(50):
            loc, f = self.faker()
            raw = f.phone_number()  # type: ignore[attr-defined]
            region = loc.split("_")[1]
            try:
                number = phonenumbers.parse(raw, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_possible_number(number):
                return raw, f"phone:faker:{loc}"
        raise RuntimeError("no possible Faker phone number in 50 draws")

    def card(self) -> tuple[str, str]:
        row = self.rng.choice(IIN_TABLE)
        length = self.rng.choice(row.lengths)
        prefix = str(self.rng.randint(int(row.first), int(row.last))).zfill(len(row.first))
        body = prefix + "".join(self.rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
        number = body + luhn_digit(body)
        style = self.rng.choice(("plain", "plain", "spaced", "dashed"))
        if style != "plain":
            sep = " " if style == "spaced" else "-"
            sizes = (4, 6, 5) if length == 15 else (4, 6, 4) if length == 14 else (4,) * 5
            number = group(number, sizes, sep)
        return number, f"card:{row.network}:{length}:{style}"

    def ssn(self) -> tuple[str, str]:
        raw = self.us.ssn()  # type: ignore[attr-defined]
        return (raw if self.rng.random() < 0.8 else raw.replace("-", " ")), "ssn:faker"

    def iban(self) -> tuple[str, str]:
        country = self.rng.choice(sorted(BBAN_FORMATS))
        value = make_iban(country, self.rng)
        case = self.rng.choice(("upper", "lower", "grouped", "grouped-lower"))
        if case.startswith("grouped"):
            value = grouped(value)
        if case.endswith("lower"):
            value = value.lower()
        return value, f"iban:{country}:{case}"

    def ip(self) -> tuple[str, str]:
        _, f = self.faker()
        kind = self.rng.choice(("ipv4_public", "ipv4_private", "ipv6"))
        return getattr(f, kind)(), f"ip:{kind}"

    def negative(self) -> tuple[str, str]:
        kind = self.rng.choice(sorted(NEGATIVES))
        return NEGATIVES[kind](self), f"neg:{kind}"


def luhn_digit(body: str) -> str:
    """The check digit that makes `body` + digit pass Luhn."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def group(number: str, sizes: tuple[int, ...], sep: str) -> str:
    out, i = [], 0
    for size in sizes:
        if i >= len(number):
            break
        out.append(number[i : i + size])
        i += size
    if i < len(number):
        out.append(number[i:])
    return sep.join(out)


def example_phones(split: str) -> Iterator[tuple[str, str]]:
    """libphonenumber's example numbers of the split's regions, every type it has, three formats each."""
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        if split_of(region) != split:
            continue
        for type_name, number_type in PHONE_TYPES:
            number = phonenumbers.example_number_for_type(region, number_type)
            if number is None:
                continue
            for fmt_name, fmt in PHONE_FORMATS:
                yield phonenumbers.format_number(number, fmt), f"phone:example:{region}:{type_name}:{fmt_name}"


# --------------------------------------------------------------------------------------- hard negatives


def _digits(rng: random.Random, n: int) -> str:
    return str(rng.randint(1, 9)) + "".join(rng.choice(string.digits) for _ in range(n - 1))


def _date(s: Sources) -> str:
    d = dt.date(2000, 1, 1) + dt.timedelta(days=s.rng.randrange(12000))
    fmt = s.rng.choice(("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d %B %Y", "%Y%m%d", "%Y/%m/%d %H:%M"))
    return "the meeting on " + d.strftime(fmt).replace("%H:%M", "14:30")


def _order(s: Sources) -> str:
    r = s.rng
    return r.choice((
        f"order #{_digits(r, 8)}", f"invoice INV-{r.randint(2015, 2026)}-{_digits(r, 6)}",
        f"order no. {_digits(r, 3)}-{_digits(r, 7)}-{_digits(r, 7)}", f"PO {_digits(r, 10)}",
        f"ticket {_digits(r, 6)}", f"tracking number 1Z{_digits(r, 6)}A{_digits(r, 9)}",
        f"reference {_digits(r, 4)}/{_digits(r, 4)}", f"invoice no. {_digits(r, 5)}",
    ))  # fmt: skip


def _version(s: Sources) -> str:
    r = s.rng
    return r.choice(
        (
            f"v{r.randint(0, 9)}.{r.randint(0, 40)}.{r.randint(0, 200)}",
            f"Python 3.{r.randint(6, 13)}.{r.randint(0, 20)}",
            f"build {_digits(r, 8)}.{r.randint(1, 9)}",
            f"release {r.randint(1, 30)}.{r.randint(0, 12)}.{r.randint(0, 9)}-rc.{r.randint(1, 5)}",
        )
    )


def _isbn(s: Sources) -> str:
    body = "978" + "".join(s.rng.choice(string.digits) for _ in range(9))
    check = (10 - sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(body)) % 10) % 10
    isbn = body + str(check)
    if s.rng.random() < 0.5:
        isbn = f"{isbn[:3]}-{isbn[3]}-{isbn[4:7]}-{isbn[7:12]}-{isbn[12]}"
    return f"ISBN {isbn}"


def _coordinates(s: Sources) -> str:
    r = s.rng
    lat, lon = r.uniform(-80, 80), r.uniform(-179, 179)
    if r.random() < 0.5:
        return f"the coordinates {lat:.4f}, {lon:.4f}"
    return f"GPS {abs(int(lat))}°{r.randint(0, 59)}′{r.randint(0, 59)}″{'N' if lat > 0 else 'S'} {abs(int(lon))}°{r.randint(0, 59)}′{r.randint(0, 59)}″E"  # noqa: E501


def _price(s: Sources) -> str:
    r = s.rng
    v = r.uniform(1, 99999)
    return r.choice(
        (
            f"${v:,.2f}",
            f"€ {v:,.2f}".replace(",", " ").replace(".", ","),
            f"{int(v):,} JPY",
            f"R$ {v:,.2f}",
            f"£{v:.2f} incl. VAT",
        )
    )


def _cep(s: Sources) -> str:
    return f"CEP {_digits(s.rng, 5)}-{''.join(s.rng.choice(string.digits) for _ in range(3))}"


def _licence(s: Sources) -> str:
    r = s.rng
    number = r.choice((
        f"{r.choice(string.ascii_uppercase)}{_digits(r, 7)}",  # California
        f"{r.choice(string.ascii_uppercase)}{_digits(r, 3)}-{_digits(r, 3)}-{_digits(r, 2)}-{_digits(r, 3)}-{r.randint(0, 9)}",  # noqa: E501 -- Florida
        f"{_digits(r, 3)} {_digits(r, 3)} {_digits(r, 3)}",  # New York
        f"{r.choice(string.ascii_uppercase)}{_digits(r, 12)}",  # Illinois
        f"{r.choice(string.ascii_uppercase)}{_digits(r, 4)}-{_digits(r, 5)}-{_digits(r, 5)}",  # Wisconsin
    ))  # fmt: skip
    return f"driver's license {number}"


def _bad_luhn(s: Sources) -> str:
    r = s.rng
    body = r.choice(("4", "51", "37", "6011")) + "".join(r.choice(string.digits) for _ in range(12))
    bad = str((int(luhn_digit(body[:15].ljust(15, "0"))) + r.randint(1, 9)) % 10)
    number = (body[:15].ljust(15, "0")) + bad
    return f"card {group(number, (4, 4, 4, 4), ' ')} was rejected as invalid"


def _bad_iban(s: Sources) -> str:
    iban = make_iban(s.rng.choice(sorted(BBAN_FORMATS)), s.rng)
    wrong = f"{(int(iban[2:4]) + s.rng.randint(1, 50)) % 97 + 2:02d}"
    return f"the string {iban[:2]}{wrong}{iban[4:]} is not an IBAN"


def _street_number(s: Sources) -> str:
    _, f = s.faker()
    return f"parcel for {f.street_address()} {f.postcode()}"  # type: ignore[attr-defined]


NEGATIVES: dict[str, Callable[[Sources], str]] = {
    "date": _date, "order": _order, "version": _version, "isbn": _isbn, "coordinates": _coordinates,
    "price": _price, "cep": _cep, "licence": _licence, "bad_luhn": _bad_luhn, "bad_iban": _bad_iban,
    "street": _street_number,
}  # fmt: skip


# --------------------------------------------------------------------------------------- texts


def render(template: str, values: dict[str, Callable[[], tuple[str, str]]], source: str) -> LabelledText:
    text, spans, kinds, pos = "", [], [], 0
    for m in SLOT.finditer(template):
        text += template[pos : m.start()]
        value, kind = values[m.group(1)]()
        if m.group(1) == "NEG":
            source += ":" + kind.removeprefix("neg:")
        else:
            entity = m.group(1)
            spans.append(Span(len(text), len(text) + len(value), entity))
            kinds.append(kind)
        text += value
        pos = m.end()
    text += template[pos:]
    return LabelledText(text, spans, kinds, source)


def build(split: str, n: int, seed: int | None = None) -> list[LabelledText]:
    """`n` texts per structured entity and `2 * n` hard-negative texts of `split` (its templates, locales
    and phone regions), seeded by the split's seed unless `seed` is given: the same arguments give the
    same texts."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    s = Sources(split, SEEDS[split] if seed is None else seed)
    values = {"EMAIL": s.email, "PHONE": s.phone, "CREDIT_CARD": s.card, "US_SSN": s.ssn, "IBAN": s.iban,
              "IP_ADDRESS": s.ip, "PERSON": s.person, "ADDRESS": s.address, "NEG": s.negative}  # fmt: skip
    templates = TEMPLATES[split]
    out: list[LabelledText] = []
    for entity in ENTITIES:
        for _ in range(n):
            out.append(render(s.rng.choice(templates[entity]), values, f"{split}:{entity}"))
    for _ in range(2 * n):
        out.append(render(s.rng.choice(templates["NEG"]), values, f"{split}:NEG"))
    return out


def to_json(item: LabelledText) -> dict[str, object]:
    return {"text": item.text, "spans": [list(sp) for sp in item.spans], "kinds": item.kinds, "source": item.source}


def from_json(row: dict[str, object]) -> LabelledText:
    spans = [Span(int(s), int(e), str(ent)) for s, e, ent in row["spans"]]  # type: ignore[union-attr]
    return LabelledText(str(row["text"]), spans, list(row["kinds"]), str(row["source"]))  # type: ignore[call-overload]


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description="write a split of the eval set as JSONL (text, spans, kinds, source)")
    ap.add_argument("split", choices=SPLITS)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rows = [json.dumps(to_json(item), ensure_ascii=False) for item in build(args.split, args.n, args.seed)]
    args.out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} texts to {args.out}")
