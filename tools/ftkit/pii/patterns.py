"""The structured PII and secret detectors: a pattern finds a candidate, a pure check confirms it.

Each `Detector` has cheap literal triggers (a substring test before any regex runs), a compiled
pattern, and a `confirm` function that turns a match into a `Finding` or rejects it. `detect` in
`ftkit.pii.detect` runs them and resolves overlaps. Scores: 0.99 for provider-formatted secrets,
0.95 for checksummed numbers (cards, IBANs), 0.9 for validated formats, lower for the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

from ftkit.pii import checks, rules
from ftkit.pii.ascii_regex import ascii_twin
from ftkit.pii.findings import Finding

Confirm = Callable[[re.Match[str]], Finding | None]


@dataclass(frozen=True)
class Detector:
    entity: str
    kind: str
    pattern: re.Pattern[str]
    confirm: Confirm
    triggers: tuple[str, ...] = ()  # run only when one of these occurs in the text (lower-cased if `folded`)
    folded: bool = False
    gate: str = ""  # a cheap test of the whole text, shared by detectors (ftkit.pii.detect.GATES)
    # Every match starts at a digit (a number pattern): the scan of an ASCII text starts at its first digit.
    numeric: bool = False
    requires: re.Pattern[str] | None = None  # a number pattern in every match: the detector runs only where it is
    min_digits: int = 0  # ASCII digits every match holds: an ASCII text with fewer is not scanned
    # The two patterns for ASCII text (ftkit.pii.ascii_regex): the same matches, cheaper.
    ascii_pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)
    ascii_requires: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ascii_pattern", ascii_twin(self.pattern))
        object.__setattr__(self, "ascii_requires", None if self.requires is None else ascii_twin(self.requires))


def _span(m: re.Match[str], entity: str, score: float, kind: str, group: int = 0) -> Finding:
    return Finding(m.start(group), m.end(group), entity, score, kind)


def _plain(entity: str, score: float, kind: str, group: int = 0) -> Confirm:
    return lambda m: _span(m, entity, score, kind, group)


# ------------------------------------------------------------------ email, URL with credentials, IP

EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![\w-])"
)

URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s\"'<>`]+")
_URL_USERINFO = re.compile(r"^[^:/?#]+://([^/?#@\s]*):([^/?#@\s]+)@")
_URL_CRED_PARAM = re.compile(
    r"[?&#;]([\w.-]*(?:token|key|secret|passw|pwd|pass|sig|signature|auth|credential|session)[\w.-]*)=([^&#;\s]{6,})",
    re.I,
)
_TRAILING = ".,;:!?)]}'\""


def _placeholder(value: str) -> bool:
    """A value that stands for a secret instead of being one: <your-key>, ${TOKEN}, ****, xxxx, {{ key }}."""
    v = value.strip("'\"")
    if not v or v[0] in "<${[*" or v.startswith(("os.", "process.env", "env.", "ENV[", "getenv")):
        return True
    if v[0] == "%" and v.endswith("%"):  # %API_KEY% (a Windows variable; %2B... is URL encoding)
        return True
    if len(set(v.lower())) <= 2:  # xxxxxxxx, ********, 00000000
        return True
    low = v.lower()
    return any(w in low for w in ("your", "example", "placeholder", "redacted", "changeme", "dummy", "xxxx"))


def random_looking(value: str) -> bool:
    """A generated credential rather than a word: mixed characters with a digit, or long and high-entropy."""
    h = checks.entropy(value)
    if checks.char_classes(value) < 2:
        return False
    return (h >= 3.0 and any(c.isdigit() for c in value)) or (len(value) >= 16 and h >= 3.5)


def _url(m: re.Match[str]) -> Finding | None:
    text = m.group(0)
    end = m.end()
    while text and text[-1] in _TRAILING:
        text, end = text[:-1], end - 1
    info = _URL_USERINFO.match(text)
    if info and not _placeholder(info.group(2)):
        return Finding(m.start(), end, "URL", 0.9, "url_userinfo")
    for param in _URL_CRED_PARAM.finditer(text):
        value = param.group(2)
        if not _placeholder(value) and random_looking(value):
            return Finding(m.start(), end, "URL", 0.85, "url_credential_param")
    return None


# The number patterns start with the digit and look behind it (`\d(?<![\w.]\d)`, not `(?<![\w.])\d`): a pattern
# that starts with a character class lets the regex engine skip to the next digit instead of trying the
# look-behind at every position (a third faster over real text; the same matches).
IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?![\w]|\.\d)")
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})(?![\w:])")


def _ip(m: re.Match[str]) -> Finding | None:
    text = m.group(0)
    if not checks.ip_ok(text) or (text.count(":") and not any(c.isalnum() for c in text)):
        return None
    return Finding(m.start(), m.end(), "IP_ADDRESS", 0.9, "ipv6" if ":" in text else "ipv4")


# ------------------------------------------------------------------ numbers: cards, SSNs, IBANs

CARD = re.compile(r"\d(?<![\w.+-]\d)(?:[ -]?\d){11,18}(?![\w-]|\.\d)")


def _card(m: re.Match[str]) -> Finding | None:
    """rules.RULES CREDIT_CARD: Luhn and a known issuer, or Luhn and a card word nearby."""
    number = m.group(0).replace(" ", "").replace("-", "")  # the pattern's only separators
    if not checks.luhn_ok(number):
        return None
    if checks.issuer_ok(number):  # card_ok, Luhn already checked
        return _span(m, "CREDIT_CARD", 0.95, "card_luhn")
    if rules.card_word_near(m.string, m.start(), m.end()):
        return _span(m, "CREDIT_CARD", 0.9, "card_luhn_context")
    return None


SSN = re.compile(r"(\d(?<![\w.-]\d)\d{2})([- ])(\d{2})\2(\d{4})(?![\w-]|\.\d)")
SSN_BARE = re.compile(
    r"(?i)\b(?:ssn|social security)(?:\W+\w+){0,3}?\W+(\d{9})\b"  # SSN is 123456789
    r"|\b(\d{9})\b(?=(?:\W+\w+){0,4}?\W+(?:ssn|social security))"  # 123456789 is the social security number
)

NINE_DIGITS = re.compile(r"\d(?<!\w\d)\d{8}\b")  # SSN_BARE's `\b(\d{9})\b`, as a number pattern


def _ssn(m: re.Match[str]) -> Finding | None:
    return _span(m, "US_SSN", 0.85, "ssn") if checks.ssn_ok(m.group(1) + m.group(3) + m.group(4)) else None


def _ssn_bare(m: re.Match[str]) -> Finding | None:
    group = 1 if m.group(1) else 2
    return _span(m, "US_SSN", 0.9, "ssn_with_context", group) if checks.ssn_ok(m.group(group)) else None


# The check digits, after a word's first two letters (any case): a digit-led pattern, so the regex engine
# skips ahead to digits instead of trying every letter, and its first look-behind (a letter right before the
# digit) rules out most digits at once (a third fewer instructions than matching two digits first).
IBAN_START = re.compile(r"[0-9](?<=[A-Za-z][0-9])(?<=\b[A-Za-z]{2}[0-9])[0-9](?=[ -]?[A-Za-z0-9])")


@cache
def _iban_rest(n: int) -> re.Pattern[str]:
    """`n` ASCII letters or digits, one space or dash allowed before each, and no letter or digit after."""
    return re.compile(rf"(?:[ -]?[A-Za-z0-9]){{{n}}}(?![A-Za-z0-9])")


def _iban(m: re.Match[str]) -> Finding | None:
    """Read the country's IBAN length of letters and digits after the check digits, allowing one space
    or dash between groups; confirm by mod 97."""
    text, start = m.string, m.start() - 2
    country = text[start : m.start()].upper()
    length = checks.IBAN_LENGTHS.get(country)
    if length is None:
        return None
    rest = _iban_rest(length - 4).match(text, m.end())
    if rest is None:
        return None
    if not checks.iban_ok(country + m.group(0) + rest.group(0).replace(" ", "").replace("-", "").upper()):
        return None
    return Finding(start, rest.end(), "IBAN", 0.95, "iban_mod97")


# ------------------------------------------------------------------ secrets

_SECRET_FORMATS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("aws_access_key_id", r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}\b",
     ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "APKA")),
    ("github_token", r"\bgh[pousr]_[A-Za-z0-9]{36,251}\b", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    ("github_pat", r"\bgithub_pat_[A-Za-z0-9_]{50,255}\b", ("github_pat_",)),
    ("gitlab_token", r"\bgl(?:pat|dt|rt|ptt|cbt|imt|soat|ft|agent)-[A-Za-z0-9_-]{20,}",
     ("glpat-", "gldt-", "glrt-", "glptt-", "glcbt-", "glimt-", "glsoat-", "glft-", "glagent-")),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}", ("xox",)),
    ("slack_webhook", r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{20,}",
     ("hooks.slack.com",)),
    ("huggingface_token", r"\b(?:hf_|api_org_)[A-Za-z0-9]{30,}\b", ("hf_", "api_org_")),
    ("anthropic_key", r"\bsk-ant-(?:api|admin|oat|ort)\d{2}-[A-Za-z0-9_-]{32,}", ("sk-ant-",)),
    ("openai_key", r"\bsk-(?!ant-)(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{32,}", ("sk-",)),
    ("stripe_key", r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}", ("sk_live_", "sk_test_", "rk_live_", "rk_test_")),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", ("AIza",)),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", ("eyJ",)),
    ("private_key", r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
     r"(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)", ("PRIVATE KEY",)),
)  # fmt: skip


def _secret(kind: str) -> Confirm:
    def confirm(m: re.Match[str]) -> Finding | None:
        if kind == "openai_key" and checks.char_classes(m.group(0)) < 3:  # sk-followed-by-a-long-slug
            return None
        return _span(m, "SECRET", 0.99, kind)

    return confirm


AWS_SECRET = re.compile(
    r"(?i)aws.{0,20}?(?:secret|private).{0,20}?[\"']?\s*(?:[:=]|=>)\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
)

# A secret-like name, an assignment, then a value: name = "value", "name": "value", name: value, NAME=value.
_SECRET_NAME = (
    r"[A-Za-z0-9_.-]*(?:api[_-]?key|apikey|secret|passw(?:or)?d|pwd|token|access[_-]?key|auth[_-]?key|"
    r"credentials?|private[_-]?key)[A-Za-z0-9_-]*"
)
ASSIGNED = re.compile(
    rf"(?i)(?<![\w-])[\"']?({_SECRET_NAME})[\"']?\s*(?::=|=>|=|:)\s*"
    r"(?:\"([^\"\s]{6,256})\"|'([^'\s]{6,256})'|([^\s\"',;<>`]{6,256}))"
)
_CALL = re.compile(r"^[A-Za-z_][\w.]*\(.*\)$|^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")  # get_key(...), settings.API_KEY


def _assigned(m: re.Match[str]) -> Finding | None:
    group = next(g for g in (2, 3, 4) if m.group(g) is not None)
    value = m.group(group)
    end = m.end(group)
    if group == 4:
        if m.start() > 0 and m.string[m.start() - 1] in "?&;":  # a URL query parameter: the value ends at &
            value = value.split("&")[0]
            end = m.start(group) + len(value)
        while value and value[-1] in _TRAILING and value.count("(") <= value.count(")") - (value[-1] == ")"):
            value, end = value[:-1], end - 1
    if len(value) < 8 or _placeholder(value) or "://" in value or _CALL.match(value):
        return None
    if not random_looking(value):
        return None
    return Finding(m.start(group), end, "SECRET", 0.7, "assigned_secret")


# ------------------------------------------------------------------ the list

# Gates (ftkit.pii.detect.GATES): "at" an @; "scheme" ://; "long_digits" 7+ digits in a run; "dotted_digits"
# d.d; "iban_word" a word starting with two letters and two digits; "colon" a colon; "aws_prefix" AKIA/ASIA/...;
# "token_punct" _ or -; "assign" = or :; "jwt" eyJ; "google" AIza; "pem" PRIVATE KEY.
_SECRET_GATES = {"aws_access_key_id": "aws_prefix", "slack_webhook": "scheme", "google_api_key": "google",
                 "jwt": "jwt", "private_key": "pem"}  # fmt: skip

DETECTORS: tuple[Detector, ...] = (
    Detector("EMAIL", "email", EMAIL, _plain("EMAIL", 0.9, "email"), gate="at"),
    Detector("URL", "url", URL, _url, gate="scheme"),
    Detector("IP_ADDRESS", "ipv4", IPV4, _ip, gate="dotted_digits", numeric=True, min_digits=4),
    Detector("IP_ADDRESS", "ipv6", IPV6, _ip, gate="colon"),
    Detector("CREDIT_CARD", "card", CARD, _card, gate="long_digits", numeric=True, min_digits=12),
    Detector("US_SSN", "ssn", SSN, _ssn, gate="long_digits", numeric=True, min_digits=9),
    Detector("US_SSN", "ssn_with_context", SSN_BARE, _ssn_bare, ("ssn", "social security"), folded=True,
             gate="long_digits", requires=NINE_DIGITS, min_digits=9),
    Detector("IBAN", "iban", IBAN_START, _iban, gate="iban_word", numeric=True),
    *(Detector("SECRET", kind, re.compile(rx), _secret(kind), trig, gate=_SECRET_GATES.get(kind, "token_punct"))
      for kind, rx, trig in _SECRET_FORMATS),
    Detector("SECRET", "aws_secret_access_key", AWS_SECRET,
             lambda m: _span(m, "SECRET", 0.95, "aws_secret_access_key", 1), ("aws",), folded=True, gate="assign"),
    Detector("SECRET", "assigned_secret", ASSIGNED, _assigned,
             ("key", "secret", "pass", "pwd", "token", "credential"), folded=True, gate="assign"),
)  # fmt: skip

AWS_PREFIXES = _SECRET_FORMATS[0][2]
