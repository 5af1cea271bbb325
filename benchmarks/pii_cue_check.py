"""Does `rules.cue_before`'s word-by-word reading give the verdicts of the whole-window cue pattern? A check.

`ftkit.pii.rules._last_cue` reads a window word by word (bytes and dict lookups for ASCII, a per-word pattern
otherwise); `rules._CUE`, the pattern it replaced and still uses for windows with '☎', '📞' or 'h.no', is the
reference: its last match in the window gives the kind and end of the nearest cue. This compares both on the
40 characters before every digit, '+' and '(' of the strings `pii_same_findings.py` builds, and on seeded
random windows of cue words, other words (non-ASCII, case-folding oddities) and separators. Exit 1 on any
difference.

    PYTHONPATH=tools .venv/bin/python benchmarks/pii_cue_check.py --shared ../shared/data
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

OTHER_WORDS = ("hello", "the", "x", "Haupt", "a_b", "9", "ﬁle", "İd", "ſt", "\u212a", "Haupt\u017ftr", "\u0130D",
               "ÁVENIDA", "h.No", "Tel\u00e9", "\u0423\u041b", "\u260e", "n\u00famero", "Hauptſtraße")  # fmt: skip
SEPARATORS = (" ", ". ", ".", ", ", "\n", "-", "_", "", "! ", "? ", ":", "(", "/", "é")


def reference(left: str) -> tuple[str, int] | None:
    from ftkit.pii import rules

    last = None
    for last in rules._CUE.finditer(left):  # noqa: B007 -- the last match is the nearest
        pass
    if last is None:
        return None
    return ("address" if last.lastgroup == "suffix" else last.lastgroup), last.end()  # type: ignore[return-value]


def fuzzed(n: int, seed: int = 1) -> list[str]:
    from ftkit.pii import rules

    rng = random.Random(seed)
    words = [*rules.PHONE_WORDS, *rules.ID_WORDS, *rules.ADDRESS_WORDS, *rules.ADDRESS_SUFFIXES, *rules.CARD_WORDS,
             *OTHER_WORDS]  # fmt: skip

    def case(w: str) -> str:
        r = rng.random()
        return w.upper() if r < 0.2 else w.capitalize() if r < 0.4 else w

    return ["".join(case(rng.choice(words)) + rng.choice(SEPARATORS) for _ in range(rng.randint(1, 8)))
            for _ in range(n)]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared" / "data")
    ap.add_argument("--fuzz", type=int, default=300_000, help="random windows")
    args = ap.parse_args()
    import pii_same_findings
    from ftkit.pii import rules

    windows = [t[max(0, m.start() - 40) : m.start()] for texts in pii_same_findings.corpus(args.shared).values()
               for t in texts for m in re.finditer(r"[0-9+(]", t)]  # fmt: skip
    windows += fuzzed(args.fuzz)
    differ = [w for w in windows if rules._last_cue(w) != reference(w)]
    print(f"{len(windows)} windows, {len(differ)} where the word-by-word reading differs from the pattern")
    for w in differ[:5]:
        print(f"  {w!r}: {rules._last_cue(w)} vs {reference(w)}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
