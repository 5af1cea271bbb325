"""Would one scan for number-like candidates make `ftkit.pii.detect` faster on PII-dense text? An experiment.

The alternative: one regex pass finds every run of ASCII digits joined by at most three of ` .()/-` (the
shape every card, SSN, IPv4 address and phone body lies inside), and from those runs alone decides the digit
gates (7+ digits, d.d, dd), which number detectors cannot match (a card needs 12 digits in one run, an SSN 9,
an IPv4 address 3 dots) and where an IBAN's check digits can start (two digits right after two letters),
so the card, SSN and IPv4 patterns run only where they can match and the IBAN pattern only at those starts.
This script swaps that in for `ftkit.pii.detect`'s gate loop, checks that the findings stay the same on both
eval splits, and times both (thread CPU time, best of `--repeat` interleaved passes, phone-verdict cache
emptied before each) on the dev split with presidio's entities. The verdict is in docs/pii.md.

    PYTHONPATH=tools .venv/bin/python benchmarks/pii_one_scan.py --n 500
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

SAME_ENTITIES = frozenset({"EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS", "URL"})
MIN_DIGITS = {"card": 12, "ssn": 9, "ssn_with_context": 9}  # digits in one run
MIN_DOTS = {"ipv4": 3}  # dots in one run
_RUN = re.compile(r"[0-9](?:[ .()/-]{0,3}[0-9])*")
_NOT_DIGITS = str.maketrans("", "", " .()/-")
_DOTTED = re.compile(r"[0-9]\.[0-9]").search
_PAIR = re.compile(r"[0-9][0-9]").search


@dataclass(frozen=True, slots=True)
class NumberRuns:
    most_digits: int = 0
    most_dots: int = 0
    long_digits: bool = False
    dotted: bool = False
    pair: bool = False
    iban_starts: tuple[int, ...] = ()


def number_runs(text: str) -> NumberRuns:
    """The number-like runs of `text`, summed up (all zero when it has no ASCII digit)."""
    most_digits = most_dots = 0
    dotted = pair = False
    starts: list[int] = []
    for m in _RUN.finditer(text):
        run = m.group()
        n = len(run)
        digits = n if run.isdigit() else len(run.translate(_NOT_DIGITS))
        most_digits = max(most_digits, digits)
        if "." in run:
            most_dots = max(most_dots, run.count("."))
            dotted = dotted or _DOTTED(run) is not None
        pair = pair or n < 2 * digits - 1 or (digits > 1 and _PAIR(run) is not None)
        start = m.start()
        if start >= 2 and n >= 2 and run[1] in "0123456789" and (pre := text[start - 2 : start]).isalpha():
            starts += [start] if pre.isascii() else []
    if not most_digits:
        return NumberRuns()
    return NumberRuns(most_digits, most_dots, most_digits >= 7, dotted, pair, tuple(starts))


def one_scan_structured(module: Any) -> Callable[..., None]:
    """`_structured` of ftkit.pii.detect with the digit gates and number detectors driven by number_runs."""
    gates, run, find_phones = module.GATES, module._run, module.find_phones
    digit_gates = {"long_digits": "long_digits", "dotted_digits": "dotted", "iban_word": "pair"}

    def structured(text: str, steps: Any, found: list[Any]) -> None:
        folded = None
        runs = number_runs(text)
        screen = text.isascii()  # other scripts' digits also match \d and are not counted by the runs
        long_digits = False
        for gate, dets in steps.groups:
            if gate:
                if gate in digit_gates:
                    if not getattr(runs, digit_gates[gate]):
                        continue
                    long_digits = long_digits or gate == "long_digits"
                elif (gate == "colon" and ":" not in text) or not gates[gate](text):
                    continue
            for det in dets:
                kind = det.kind
                if kind == "iban":
                    for start in runs.iban_starts:
                        m = det.pattern.match(text, start)
                        if m is not None and (f := det.confirm(m)) is not None:
                            found.append(f)
                    continue
                if screen and (runs.most_digits < MIN_DIGITS.get(kind, 0) or runs.most_dots < MIN_DOTS.get(kind, 0)):
                    continue
                if det.triggers:
                    if det.folded and folded is None:
                        folded = text.lower()
                    if not any(t in (folded if det.folded else text) for t in det.triggers):
                        continue
                run(det, text, found)
        if long_digits and steps.phones:
            taken = [(f.start, f.end) for f in found if f.score > 0.85]
            within = [(f.start, f.end) for f in found if f.score == 0.85]
            found.extend(find_phones(text, taken, within))

    return structured


def best_cpu(fn: Callable[[str], Any], texts: Sequence[str]) -> float:
    from ftkit.pii.phone import _classify

    _classify.cache_clear()
    start = time.thread_time()
    for t in texts:
        fn(t)
    return time.thread_time() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=500, help="texts per entity of each eval split")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    import ftkit.pii.detect  # noqa: F401 -- the module (ftkit.pii.detect is also the function's name)
    from pii_eval.build import build

    module = sys.modules["ftkit.pii.detect"]
    current, alternative = module._structured, one_scan_structured(module)
    detect = module.detect

    def with_(structured: Callable[..., None], wanted: frozenset[str] | None) -> Callable[[str], Any]:
        def scan(text: str) -> Any:
            module._structured = structured
            return detect(text, wanted)

        return scan

    checked = [it.text for split in ("dev", "heldout") for it in build(split, args.n)]
    differ = 0
    for wanted in (SAME_ENTITIES, None):
        a, b = with_(current, wanted), with_(alternative, wanted)
        differ += sum(a(t) != b(t) for t in checked)
    print(f"findings: {differ} of {2 * len(checked)} detect calls differ (both eval splits, both entity sets)")
    texts = [it.text for it in build("dev", args.n)]
    sides = {"gate loop (current)": with_(current, SAME_ENTITIES), "one scan": with_(alternative, SAME_ENTITIES)}
    for scan in sides.values():
        for t in texts:
            scan(t)
    best = {name: float("inf") for name in sides}
    for _ in range(args.repeat):
        for name, scan in sides.items():
            best[name] = min(best[name], best_cpu(scan, texts))
    module._structured = current
    for name, seconds in best.items():
        each = seconds / len(texts) * 1e6
        print(f"{name:<20} {seconds * 1e3:7.1f} ms CPU for {len(texts)} dev strings, {each:5.1f} us each")
    digit_gates = [module.GATES[k] for k in ("long_digits", "dotted_digits", "iban_word")]
    scan_only = min(best_cpu(number_runs, texts) for _ in range(args.repeat))
    gate_only = min(best_cpu(lambda t: [g(t) for g in digit_gates], texts) for _ in range(args.repeat))
    print(f"number_runs alone {scan_only / len(texts) * 1e6:.2f} us/string; the three digit gates it replaces "
          f"{gate_only / len(texts) * 1e6:.2f} us/string")  # fmt: skip
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
