"""Where `ftkit.pii.detect` spends its CPU time on PII-dense text: per kind of text, and per stage.

Times `detect` (thread CPU time, best of `--repeat` passes, phone-verdict cache emptied before each) on the
eval set's dev split (benchmarks/pii_eval; the held-out split stays for reporting), per entity the text
was written around, then with stages switched off: the phone reader (find_phones), then every detector's
pattern scan too (gates and dispatch only), and the time inside phonenumbers. A profile for choosing what
to speed up next, not a headline figure (that is pii_throughput.py).

    PYTHONPATH=tools .venv/bin/python benchmarks/pii_profile.py --n 500
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def best_cpu(fn: Callable[[str], Any], texts: Sequence[str], repeat: int) -> float:
    """Fastest of `repeat` passes over `texts`, in CPU seconds of this thread."""
    from ftkit.pii.phone import _classify

    best = float("inf")
    for _ in range(repeat):
        _classify.cache_clear()
        start = time.thread_time()
        for t in texts:
            fn(t)
        best = min(best, time.thread_time() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=500, help="texts per entity (and 2n negatives)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--entities", default=None, help="comma-separated entities= for detect (default: all)")
    args = ap.parse_args()
    import ftkit.pii.detect  # noqa: F401 -- the module (ftkit.pii.detect is also the function's name)
    from pii_eval.build import build
    from pii_throughput import phonenumbers_share

    module = sys.modules["ftkit.pii.detect"]
    detect = module.detect
    items = build("dev", args.n)
    texts = [it.text for it in items]
    by_kind: dict[str, list[str]] = defaultdict(list)
    for it in items:
        by_kind[it.source.split(":")[1]].append(it.text)
    if args.entities:
        wanted = frozenset(args.entities.split(","))
        detect = functools.partial(module.detect, entities=wanted)
    for t in texts:  # warm up: phonenumbers loads each region's metadata on first use
        detect(t)
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    total = best_cpu(detect, texts, args.repeat)
    print(f"dev split, {len(texts)} texts, {mb:.3f} MB: {total * 1e3:.1f} ms CPU, {mb / total:.2f} MB/s")
    for kind, ts in by_kind.items():
        t = best_cpu(detect, ts, args.repeat)
        print(f"  {kind:<12} {len(ts):>5} texts {t * 1e3:7.1f} ms  {t / len(ts) * 1e6:6.1f} us/text")
    share = phonenumbers_share(lambda t: [(f.start, f.end, f.entity) for f in detect(t)], texts)
    print(
        f"reading runs against numbering plans (phone._parsed_score): {share['plan_reading_share']:.0%};"
        f" inside phonenumbers' parse / is_valid_number / is_possible_number: {share['phonenumbers_share']:.0%}"
        f" ({share['calls']}; one instrumented pass)"
    )
    find_phones, plan = module.find_phones, module._run
    try:
        module.find_phones = lambda *a, **k: []
        no_phones = best_cpu(detect, texts, args.repeat)
        module._run = lambda det, text, found, *where: None
        gates_only = best_cpu(detect, texts, args.repeat)
    finally:
        module.find_phones, module._run = find_phones, plan
    print(f"without the phone reader: {no_phones * 1e3:.1f} ms; gates and dispatch only: {gates_only * 1e3:.1f} ms")
    phones, others, gates = (total - no_phones) * 1e3, (no_phones - gates_only) * 1e3, gates_only * 1e3
    print(f"=> phone reader {phones:.1f} ms, other detectors {others:.1f} ms, gates and dispatch {gates:.1f} ms")


if __name__ == "__main__":
    main()
