"""What a detector returns: a span of text, the entity it is, and how sure the detector is."""

from __future__ import annotations

from typing import NamedTuple

# The entity names every detector, report and threshold uses.
STRUCTURED = ("EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS", "URL", "SECRET")
NER_ENTITIES = ("PERSON", "ADDRESS")
ENTITIES = STRUCTURED + NER_ENTITIES


class Finding(NamedTuple):
    """`text[start:end]` is the entity. `kind` names the detector that matched (e.g. 'aws_access_key_id').
    Immutable; a named tuple rather than a frozen dataclass because a detector builds one per match and a
    frozen dataclass takes about three times as long to build (every field set through object.__setattr__)."""

    start: int
    end: int
    entity: str
    score: float
    kind: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"start": self.start, "end": self.end, "entity": self.entity, "score": self.score, "kind": self.kind}


def resolve_overlaps(findings: list[Finding]) -> list[Finding]:
    """Keep non-overlapping findings: of two that overlap, the higher score wins, then the longer span.

    The result is sorted by start, so replacements can be applied left to right.
    """
    ranked = sorted(findings, key=lambda f: (-f.score, -(f.end - f.start), f.start))
    kept: list[Finding] = []
    for f in ranked:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)
