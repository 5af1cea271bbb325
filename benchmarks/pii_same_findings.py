"""Do two versions of `ftkit.pii.detect` return the same findings? For speed-only changes to the detector.

Builds one list of strings -- both eval splits (benchmarks/pii_eval) at three seeds, the Faker set
(pii_testset) at three seeds, the planted throughput corpus (pii_throughput, 8 MB at 3 % and 2 MB at 50 %)
and seeded random digit runs after phone, ID and street words -- runs each `tools/` folder's `detect` on it
in its own process, and prints per source how many strings got different findings (start, end, entity,
score, kind). Differences are shown only outside the held-out split (kept for reporting, not reading).
`--entities` passes the same `entities=` filter to both (e.g. presidio's set, as pii_throughput times it).

    git archive e0bed23 tools | tar -x -C /tmp/old
    PYTHONPATH= .venv/bin/python benchmarks/pii_same_findings.py --old /tmp/old/tools --new tools
"""

from __future__ import annotations

import argparse
import pickle
import random
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def random_runs(n: int, seed: int = 5) -> list[str]:
    """Digit groups joined by phone punctuation, after words that change a run's verdict."""
    rng = random.Random(seed)
    seps = [" ", "-", ".", "/", "", "", " ", ") ", "("]
    out = []
    for _ in range(n):
        s = rng.choice(["", "+", "00", "(", "+1 ", "tel ", "order ", "call ", "Street 5 "])
        for _ in range(rng.randint(1, 6)):
            s += "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 5))) + rng.choice(seps)
        s = s.strip() + (" ext 12" if rng.random() < 0.1 else "")
        out.append(rng.choice(["Phone: {}", "{}", "My number is {}.", "see {} now", "ID {}", "IBAN GB{} x"]).format(s))
    return out


def corpus(shared: Path) -> dict[str, list[str]]:
    import pii_throughput as tp
    from pii_eval.build import build
    from pii_testset import build_testset

    out = {f"{split}:{seed}": [t.text for t in build(split, 500, seed)] for split in ("dev", "heldout")
           for seed in (None, 1, 2)}  # fmt: skip
    out |= {f"faker:{seed}": [t.text for t in build_testset(300, seed)] for seed in (0, 7, 2026)}
    turns = tp.read_turns(shared)
    out["planted_8mb"] = tp.build_corpus(turns, int(8e6), 0.03, 0)[0]
    out["planted_dense"] = tp.build_corpus(turns, int(2e6), 0.5, 3)[0]
    out["random_runs"] = random_runs(30000)
    return out


_DUMP = """
import pickle, sys
sys.path.insert(0, sys.argv[1])
from ftkit.pii import detect
texts = pickle.load(open(sys.argv[2], "rb"))
wanted = sys.argv[4].split(",") if len(sys.argv) > 4 else None
res = {k: [[(f.start, f.end, f.entity, f.score, f.kind) for f in detect(t, wanted)] for t in v]
       for k, v in texts.items()}
pickle.dump(res, open(sys.argv[3], "wb"))
"""


def findings(tools: Path, texts_file: Path, out: Path, entities: str | None = None) -> dict[str, list[list[tuple]]]:  # type: ignore[type-arg]
    extra = [entities] if entities else []
    subprocess.run([sys.executable, "-c", _DUMP, str(tools.resolve()), str(texts_file), str(out), *extra], check=True)
    return pickle.loads(out.read_bytes())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--old", type=Path, required=True, help="a tools/ folder (the reference)")
    ap.add_argument("--new", type=Path, required=True, help="a tools/ folder (the change)")
    ap.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared" / "data")
    ap.add_argument("--show", type=int, default=3, help="differing strings printed per source")
    ap.add_argument("--entities", default=None, help="comma-separated entities= for both (default: all)")
    args = ap.parse_args()
    texts = corpus(args.shared)
    with tempfile.TemporaryDirectory() as tmp:
        texts_file = Path(tmp) / "texts.pkl"
        texts_file.write_bytes(pickle.dumps(texts))
        old = findings(args.old, texts_file, Path(tmp) / "old.pkl", args.entities)
        new = findings(args.new, texts_file, Path(tmp) / "new.pkl", args.entities)
    total = 0
    for source, strings in texts.items():
        differ = [i for i, (a, b) in enumerate(zip(old[source], new[source], strict=True)) if a != b]
        total += len(differ)
        print(f"{source:<14} {len(strings):>7} strings, {len(differ)} with different findings")
        for i in differ[: 0 if source.startswith("heldout") else args.show]:
            print(f"    {strings[i][:160]!r}\n      old {old[source][i]}\n      new {new[source][i]}")
    print(f"{sum(map(len, texts.values()))} strings, {total} with different findings")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
