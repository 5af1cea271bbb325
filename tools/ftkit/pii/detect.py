"""`detect(text)`: every structured PII and secret finding in a string, overlaps resolved.

Most strings hold nothing, so each detector sits behind a gate: one cheap test of the whole string
(an `@`, a run of 7+ digits, a secret's literal prefix...) shared by the detectors that need it and
evaluated at most once per string. Only strings that pass a gate pay for its detectors' patterns, and
only digit runs the phone pattern finds reach `phonenumbers`. An ASCII text (most of them) is read faster:
its number patterns from its first digit on, by their ASCII twins, and its digits counted once so that a
detector needing more digits than the text holds does not run. Speed and how it was measured: docs/pii.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from ftkit.pii.findings import STRUCTURED, Finding, resolve_overlaps
from ftkit.pii.patterns import AWS_PREFIXES, DETECTORS, Detector
from ftkit.pii.phone import find_phones


def _search(pattern: str) -> Callable[..., bool]:
    search = re.compile(pattern).search
    return lambda text, pos=0: search(text, pos) is not None


_DIGIT = re.compile(r"[0-9]").search
_ENOUGH = 1 << 30  # digits a text that is not ASCII counts as holding
# An ASCII text's characters as classes, one byte each: letter 'a', digit '0', '_' itself, anything else a space.
_CLASSES = bytes(97 if chr(c).isalpha() else 48 if chr(c).isdigit() else 95 if c == 95 else 32 for c in range(128))
_CLASSES += b" " * 128


def _classes(text: str) -> bytes:
    """`text` (ASCII) as one class byte per character (_CLASSES), translated in C."""
    return text.encode().translate(_CLASSES)


def _iban_word_in(classes: bytes) -> bool:
    """Whether a word starts with two letters and two digits (where an IBAN's check digits can be)."""
    return b" aa00" in classes or classes.startswith(b"aa00")


def _iban_word(text: str, pos: int = 0) -> bool:
    """_iban_word_in for any text: one with other than ASCII characters passes (its scan decides)."""
    return not text.isascii() or _iban_word_in(_classes(text))


_AWS = re.compile("|".join(AWS_PREFIXES)).search  # one literal prefix: a fast scan

# name -> test of the whole text. The digit gates run only when the text has an ASCII digit at all, and read it
# from a position (its first digit, or a little before) on.
GATES: dict[str, Callable[..., bool]] = {
    "at": lambda text: "@" in text,
    "scheme": lambda text: "://" in text,
    "long_digits": _search(r"[0-9](?:[ .()/-]{0,3}[0-9]){6}"),  # phones (7+ digits), SSNs, cards
    "dotted_digits": _search(r"\.(?<=[0-9]\.)[0-9]"),  # a digit, a dot, a digit: led by the dot (rarer than digits)
    "iban_word": _iban_word,
    "colon": _search(r":(?::|(?<=[0-9A-Fa-f]:)[0-9A-Fa-f])"),  # '::' or hex:hex; only when the text has a colon
    "aws_prefix": lambda text: _AWS(text) is not None,
    "token_punct": lambda text: "_" in text or "-" in text,
    "assign": lambda text: "=" in text or ":" in text,
    "jwt": lambda text: "eyJ" in text,
    "google": lambda text: "AIza" in text,
    "pem": lambda text: "PRIVATE KEY" in text,
}
_NEEDS_DIGIT = frozenset({"long_digits", "dotted_digits"})
_CLASS_GATES = {"iban_word": _iban_word_in}  # read from an ASCII text's classes (another text passes them)
_GATE_MIN_DIGITS = {"long_digits": 7, "dotted_digits": 2, "iban_word": 2}  # ASCII digits a passing text holds


def _grouped(detectors: Iterable[Detector]) -> tuple[tuple[str, tuple[Detector, ...]], ...]:
    groups: dict[str, list[Detector]] = {}
    for det in detectors:
        groups.setdefault(det.gate, []).append(det)
    return tuple((gate, tuple(dets)) for gate, dets in groups.items())


_GROUPS = _grouped(DETECTORS)
# What each gate needs somewhere in the text (one of these characters, or a literal): a plan's first scan looks
# for anything any of its gates needs, so most strings cost that one scan.
_GATE_CHARS = {"at": "@", "scheme": ":", "long_digits": "0123456789", "dotted_digits": "0123456789",
               "iban_word": "0123456789", "colon": ":", "token_punct": "_-", "assign": "=:"}  # fmt: skip
_GATE_LITERALS = {"aws_prefix": "A(?:" + "|".join(p[1:] for p in AWS_PREFIXES) + ")", "jwt": "eyJ", "google": "AIza",
                  "pem": "PRIVATE KEY"}  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """What `detect` runs for one set of wanted entities: the gates (in order) with their wanted detectors,
    whether the phone reader runs, and one scan for anything any of those gates needs."""

    groups: tuple[tuple[str, tuple[Detector, ...]], ...]
    phones: bool
    any_gate: Callable[[str], object]
    # `groups` as `_structured` reads them: the gate's test (None: no gate), what it reads (0: the text, 1: the
    # text from its first digit, once it has an ASCII digit, 2: the text, once it has a colon, 3: an ASCII
    # text's classes, once it has an ASCII digit), whether it is the phone reader's gate, how many ASCII digits
    # a text that passes it holds, and the detectors. Read from GATES when the plan is made.
    flow: tuple[tuple[Callable[..., bool] | None, int, bool, int, tuple[Detector, ...]], ...] = ()


@lru_cache(maxsize=64)
def plan(wanted: frozenset[str] | None) -> Plan:
    """The gates and detectors for `wanted` (None: every structured entity). A gate none of whose detectors
    is wanted is not evaluated (the phone reader needs the long_digits gate)."""
    phones = wanted is None or "PHONE" in wanted
    groups = []
    for gate, dets in _GROUPS:
        kept = tuple(d for d in dets if wanted is None or d.entity in wanted)
        if kept or (phones and gate == "long_digits"):
            groups.append((gate, kept))
    gates = [gate for gate, _ in groups]
    chars = "".join(sorted({c for g in gates for c in _GATE_CHARS.get(g, "")}))
    needs = ([f"[{re.escape(chars)}]"] if chars else []) + [_GATE_LITERALS[g] for g in gates if g in _GATE_LITERALS]
    any_gate = re.compile("|".join(needs)).search if needs else (lambda text: None)
    flow = tuple(
        (_CLASS_GATES.get(gate) or GATES[gate] if gate else None,
         1 if gate in _NEEDS_DIGIT else 2 if gate == "colon" else 3 if gate in _CLASS_GATES else 0,
         gate == "long_digits", _GATE_MIN_DIGITS.get(gate, 0), dets)
        for gate, dets in groups
    )  # fmt: skip
    return Plan(tuple(groups), phones, any_gate, flow)


def _run(det: Detector, text: str, found: list[Finding], pos: int = 0, ascii: bool = False) -> None:
    """Confirm each match of `det` in `text` from `pos` on (its look-behinds still see the text before it);
    `ascii`: the text is all ASCII (the pattern's ASCII twin reads it)."""
    for m in (det.ascii_pattern if ascii else det.pattern).finditer(text, pos):
        f = det.confirm(m)
        if f is not None:
            found.append(f)


def detect(text: str, entities: Iterable[str] | None = None, ner: object | None = None) -> list[Finding]:
    """Findings in `text`, sorted by start, non-overlapping (of two overlapping, the surer and then
    the longer wins). `entities` limits what is looked for (default: all structured entities, plus
    PERSON and ADDRESS when an available NER backend is passed as `ner`); unwanted detectors do not run."""
    wanted = frozenset(entities) if entities is not None else None
    found: list[Finding] = []
    steps = plan(wanted)
    if steps.any_gate(text) is not None:
        _structured(text, steps, found)
    if ner is not None and getattr(ner, "status", None) is not None and ner.status.available:  # type: ignore[attr-defined]
        found.extend(f for f in ner.detect(text) if wanted is None or f.entity in wanted)  # type: ignore[attr-defined]
    return resolve_overlaps(found) if len(found) > 1 else found


def _structured(text: str, steps: Plan, found: list[Finding]) -> None:
    folded: str | None = None
    digit = _DIGIT(text)
    has_digit = digit is not None
    # Where a number pattern can match: in an ASCII text, from two characters before its first digit on (the
    # phone pattern may start with '(+'). In other texts a digit of another script may come first.
    ascii = text.isascii()
    numbers_from = max(0, digit.start() - 2) if digit is not None and ascii else 0
    # An ASCII text's character classes, and its digits counted from them: a gate or detector that needs more
    # digits than the text holds is not run (another text counts as having enough).
    classes = _classes(text) if has_digit and ascii else None
    n_digits = classes.count(48) if classes is not None else _ENOUGH
    long_digits = False
    for test, needs, phone_gate, min_digits, dets in steps.flow:
        if needs:
            if min_digits > n_digits:
                continue
            if needs == 1:
                if not has_digit or not test(text, numbers_from):  # type: ignore[misc]
                    continue
            elif needs == 3:
                if not has_digit or (classes is not None and not test(classes)):  # type: ignore[misc]
                    continue
            elif ":" not in text or not test(text):  # type: ignore[misc]
                continue
        elif test is not None and not test(text):
            continue
        long_digits = long_digits or phone_gate
        for det in dets:
            if det.min_digits > n_digits:
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
            if (
                det.requires is not None
                and (det.ascii_requires if ascii else det.requires).search(  # type: ignore[union-attr]
                    text, numbers_from
                )
                is None
            ):
                continue
            _run(det, text, found, numbers_from if det.numeric else 0, ascii)
    if long_digits and steps.phones:
        # A phone (score <= 0.85) overlapping a surer finding, or inside an as sure one, would lose to it:
        # such runs are not parsed.
        if not found:
            found.extend(find_phones(text, pos=numbers_from))
            return
        taken = [(f.start, f.end) for f in found if f.score > 0.85]
        if classes is not None and taken and _digits_in(classes, taken) == n_digits:
            return  # every digit lies in a surer finding: each phone run overlaps one and would be skipped
        within = [(f.start, f.end) for f in found if f.score == 0.85]
        found.extend(find_phones(text, taken, within, numbers_from))


def _digits_in(classes: bytes, spans: list[tuple[int, int]]) -> int:
    """The digits of an ASCII text (its classes) inside the union of `spans`."""
    count = last = 0
    for start, end in sorted(spans):
        start = max(start, last)
        if end > start:
            count += classes.count(48, start, end)
            last = end
    return count


__all__ = ["STRUCTURED", "Finding", "detect"]
