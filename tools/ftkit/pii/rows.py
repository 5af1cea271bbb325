"""PII in one dataset row: find it in the row's text fields, replace it, summarise it.

Everything here is per row and picklable, so worker processes can run it (`ftkit.data.parallel`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ftkit.pii.detect import detect
from ftkit.pii.fields import Path, path_str, set_path, text_fields
from ftkit.pii.findings import Finding
from ftkit.pii.redact import Placeholders, hint, pseudonymizer, replace, snippet

MODES = ("mask", "pseudonymize", "drop-row")


@dataclass(frozen=True)
class ScanSettings:
    """What to look for and where. `ner` is 'off', 'auto' (a spaCy model if one is installed) or a model."""

    patterns: tuple[tuple[str, ...], ...] | None = None
    entities: tuple[str, ...] | None = None
    ner: str = "auto"


@dataclass(frozen=True)
class FieldHits:
    path: Path
    text: str
    findings: tuple[Finding, ...]


def ner_backend(settings: ScanSettings) -> Any:
    """The NER backend for these settings (cached per process), or None when NER is off."""
    if settings.ner == "off":
        return None
    from ftkit.pii.ner import load_ner

    return load_ner(None if settings.ner == "auto" else settings.ner)


def row_hits(row: Any, settings: ScanSettings) -> list[FieldHits]:
    """The text fields of `row` that hold PII, with their findings."""
    ner = ner_backend(settings)
    patterns = list(settings.patterns) if settings.patterns is not None else None
    hits = []
    for path, text in text_fields(row, patterns):
        found = detect(text, settings.entities, ner)
        if found:
            hits.append(FieldHits(path, text, tuple(found)))
    return hits


def example(hit: FieldHits, f: Finding) -> dict[str, Any]:
    """A masked example of a finding: where it is and the text around it, the value itself hidden."""
    return {"field": path_str(hit.path), "kind": f.kind, "value_hint": hint(hit.text[f.start : f.end]),
            "snippet": snippet(hit.text, list(hit.findings), f)}  # fmt: skip


def cleaned_row(row: Any, hits: list[FieldHits], mode: str, salt: str | None = None) -> Any:
    """A copy of `row` with every finding replaced: numbered placeholders shared by all fields of the row
    (mask), or salted-hash pseudonyms consistent across the dataset (pseudonymize)."""
    if mode == "pseudonymize":
        if not salt:
            raise ValueError("pseudonymize needs a salt")
        label = pseudonymizer(salt)
    else:
        label = Placeholders()
    out = copy.deepcopy(row)
    for hit in hits:
        set_path(out, hit.path, replace(hit.text, hit.findings, label))
    return out
