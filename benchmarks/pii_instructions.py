"""Instructions per string that `ftkit.pii.detect` executes on the eval set: an A/B of two `tools/` folders that
a shared, noisy machine cannot blur.

Wall-clock and CPU timings of a 20 µs call move by 10-30 % from minute to minute on a shared 2-core machine;
valgrind's callgrind counts instructions, which repeat exactly for the same code and input. Each tools folder
is run under callgrind twice, with one and with three timed-style passes over the split (after a warm-up pass
and gc.freeze(), phone-verdict cache emptied before each pass, as pii_throughput.py times them); the difference
divided by two passes and the number of strings is what one pass costs per string, without start-up and
imports. Instructions are not time (a cache miss costs more than an add), so a speed claim still comes from
pii_throughput.py; this is for choosing between two versions. Needs valgrind (Debian's package).

    git archive HEAD~3 tools | tar -x -C /tmp/old
    PYTHONPATH=tools .venv/bin/python benchmarks/pii_instructions.py --old /tmp/old/tools --new tools
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
PRESIDIO_ENTITIES = "EMAIL,PHONE,CREDIT_CARD,US_SSN,IBAN,IP_ADDRESS,URL"

# What runs under callgrind: read the strings, warm up, then `passes` passes as the throughput benchmark times them.
_LOOP = """
import gc, pickle, sys
from ftkit.pii import detect
from ftkit.pii.phone import _classify
texts, entities, passes = pickle.load(open(sys.argv[1], "rb")), sys.argv[2], int(sys.argv[3])
wanted = frozenset(entities.split(",")) if entities else None
for t in texts:
    detect(t, wanted)
gc.collect()
gc.freeze()
for _ in range(passes):
    _classify.cache_clear()
    for t in texts:
        [(f.start, f.end, f.entity) for f in detect(t, wanted)]
"""


def instructions(tools: Path, strings: Path, entities: str, passes: int) -> int:
    """Instructions callgrind counts for the whole loop script with `passes` passes, `tools` on the path."""
    env = {**os.environ, "PYTHONPATH": str(tools), "PYTHONHASHSEED": "0"}
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c", _LOOP,
         str(strings), entities, str(passes)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.search(r"Collected : ([\d,]+)", out.stderr)
    if found is None:
        raise SystemExit(f"no instruction count from callgrind for {tools}:\n{out.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_string(tools: Path, strings: Path, entities: str, n: int) -> float:
    with ThreadPoolExecutor(2) as pool:  # the two runs of one folder side by side: counts do not depend on load
        one, three = pool.map(lambda passes: instructions(tools, strings, entities, passes), (1, 3))
    return (three - one) / 2 / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--old", type=Path, required=True, help="a tools/ folder (e.g. from git archive)")
    ap.add_argument("--new", type=Path, default=HERE.parent / "tools")
    ap.add_argument("--split", default="heldout", choices=("dev", "heldout"))
    ap.add_argument("--n", type=int, default=500, help="strings per entity of the split (and 2n negatives)")
    ap.add_argument("--entities", default=PRESIDIO_ENTITIES, help="entities= for detect ('' for every entity)")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from pii_eval.build import build

    texts = [item.text for item in build(args.split, args.n)]
    with tempfile.TemporaryDirectory() as tmp:
        strings = Path(tmp) / "strings.pkl"
        strings.write_bytes(pickle.dumps(texts))
        old = per_string(args.old.resolve(), strings, args.entities, len(texts))
        new = per_string(args.new.resolve(), strings, args.entities, len(texts))
    print(f"{args.split} split, {len(texts)} strings, entities={args.entities or 'all'}: instructions per string")
    print(f"  old {args.old}: {old:,.0f}")
    print(f"  new {args.new}: {new:,.0f}  ({new / old - 1:+.1%})")


if __name__ == "__main__":
    main()
