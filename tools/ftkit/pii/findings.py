"""What a detector returns: a span of text, the entity it is, and how sure the detector is."""

from __future__ import annotations

from dataclasses import dataclass

# The entity names every detector, report and threshold uses.
STRUCTURED = ("EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS", "URL", "SECRET")
NER_ENTITIES = ("PERSON", "ADDRESS")
ENTITIES = STRUCTURED + NER_ENTITIES


@dataclass(frozen=True, slots=True)
class Finding:
    """`text[start:end]` is the entity. `kind` names the detector that matched (e.g. 'aws_access_key_id')."""

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
