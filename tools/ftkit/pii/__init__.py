"""PII and secrets: detect them in text, scan and clean datasets, gate recipe runs on them."""

from ftkit.pii.detect import detect
from ftkit.pii.findings import ENTITIES, NER_ENTITIES, STRUCTURED, Finding

__all__ = ["ENTITIES", "NER_ENTITIES", "STRUCTURED", "Finding", "detect"]
