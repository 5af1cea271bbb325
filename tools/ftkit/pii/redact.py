"""Replace findings in text: per-row numbered placeholders, salted-hash pseudonyms, masked hints.

Pure functions; the salt is passed in (the CLI reads it from the environment).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable

from ftkit.pii.findings import Finding

SALT_ENV = "FTKIT_PII_SALT"
_NOT_ALNUM = re.compile(r"[^0-9a-z+]")


def canonical(entity: str, value: str) -> str:
    """The form two spellings of one value share: emails and URLs case-folded, numbers as their digits
    (a phone keeps a leading +), IBANs without spaces, secrets as written."""
    if entity in ("EMAIL", "URL", "PERSON", "ADDRESS"):
        return " ".join(value.casefold().split())
    if entity in ("PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS"):
        return _NOT_ALNUM.sub("", value.casefold()) if entity != "IP_ADDRESS" else value.casefold()
    return value


class Placeholders:
    """`[EMAIL_1]`, `[EMAIL_2]`, …: one number per distinct value and entity, within one scope (a row)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}

    def __call__(self, entity: str, value: str) -> str:
        key = (entity, canonical(entity, value))
        if key not in self._seen:
            self._counts[entity] = self._counts.get(entity, 0) + 1
            self._seen[key] = f"[{entity}_{self._counts[entity]}]"
        return self._seen[key]


def pseudonymizer(salt: str) -> Callable[[str, str], str]:
    """`[EMAIL_3fa2b1c9]`: HMAC-SHA256 of the canonical value under a secret salt, so the same value gets
    the same pseudonym in every row and every run with that salt, and nobody without it can brute-force
    the value back from the pseudonym."""
    key = salt.encode()

    def label(entity: str, value: str) -> str:
        digest = hmac.new(key, f"{entity}\x00{canonical(entity, value)}".encode(), hashlib.sha256).hexdigest()
        return f"[{entity}_{digest[:10]}]"

    return label


def replace(text: str, findings: Iterable[Finding], label: Callable[[str, str], str]) -> str:
    """`text` with every finding replaced by `label(entity, value)`; findings must not overlap."""
    parts, pos = [], 0
    for f in sorted(findings, key=lambda f: f.start):
        parts += [text[pos : f.start], label(f.entity, text[f.start : f.end])]
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts)


def hint(value: str) -> str:
    """Enough of a value to recognise it, not to use it: 'jo*************om' (short values fully masked)."""
    value = " ".join(value.split())
    if len(value) < 10:
        return "*" * len(value)
    return value[:2] + "*" * min(len(value) - 4, 24) + value[-2:]


def snippet(text: str, findings: list[Finding], target: Finding, width: int = 40) -> str:
    """The text around `target`, every finding in it masked, the target shown as [ENTITY: hint]."""

    def label_for(f: Finding) -> str:
        return f"[{f.entity}: {hint(text[f.start : f.end])}]" if f is target else f"[{f.entity}]"

    lo, hi = max(0, target.start - width), min(len(text), target.end + width)
    inside = [f for f in findings if f.end > lo and f.start < hi]
    lo = min([lo, *(f.start for f in inside)])
    hi = max([hi, *(f.end for f in inside)])
    parts, pos = [], lo
    for f in sorted(inside, key=lambda f: f.start):
        parts += [text[pos : f.start], label_for(f)]
        pos = f.end
    parts.append(text[pos:hi])
    body = " ".join("".join(parts).split())
    return ("…" if lo > 0 else "") + body + ("…" if hi < len(text) else "")
