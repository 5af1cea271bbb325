"""`detect(text)`: every structured PII and secret finding in a string, overlaps resolved."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ftkit.pii.findings import STRUCTURED, Finding, resolve_overlaps
from ftkit.pii.patterns import DETECTORS
from ftkit.pii.phone import find_phones

_DIGITS_RUN = re.compile(r"\d{3}|\d[ .()/-]{1,3}\d")


def detect(text: str, entities: Iterable[str] | None = None, ner: object | None = None) -> list[Finding]:
    """Findings in `text`, sorted by start, non-overlapping (of two overlapping, the surer and then
    the longer wins). `entities` limits what is looked for (default: all structured entities, plus
    PERSON and ADDRESS when an available NER backend is passed as `ner`)."""
    wanted = set(entities) if entities is not None else None
    found: list[Finding] = []
    folded: str | None = None
    digits = _DIGITS_RUN.search(text) is not None
    for det in DETECTORS:
        if (det.needs_digits and not digits) or (wanted is not None and det.entity not in wanted):
            continue
        if det.triggers:
            if det.folded and folded is None:
                folded = text.lower()
            hay = folded if det.folded else text
            for t in det.triggers:
                if t in hay:  # type: ignore[operator]
                    break
            else:
                continue
        for m in det.pattern.finditer(text):
            f = det.confirm(m)
            if f is not None:
                found.append(f)
    if digits and (wanted is None or "PHONE" in wanted):
        found.extend(find_phones(text))
    if ner is not None and getattr(ner, "status", None) is not None and ner.status.available:  # type: ignore[attr-defined]
        found.extend(f for f in ner.detect(text) if wanted is None or f.entity in wanted)  # type: ignore[attr-defined]
    return resolve_overlaps(found) if len(found) > 1 else found


__all__ = ["STRUCTURED", "Finding", "detect"]
