"""Memory of the causal-LM loss per logit: transformers' cross-entropy against the chunked losses, in one run.

The estimator's `logits` term counts bytes per logit (tokens x vocabulary) at the peak. This measures what each
loss implementation keeps, on the CPU, as the process's resident high-water mark around one forward + backward
of an lm_head and its loss (the kernel's peak RSS, reset through /proc/self/clear_refs after two warm-up steps),
divided by tokens x vocabulary. Each implementation runs in its own process:

  standard          transformers.loss.loss_utils.ForCausalLMLoss (upcast to fp32, one cross-entropy): the baseline
  chunked-compiled  Axolotl's `chunked_cross_entropy: true` (axolotl.monkeypatch.loss.chunked, 8 chunks, each chunk's
                    cross-entropy compiled by inductor, as Axolotl does)
  chunked-eager     the same chunked loss without torch.compile (torchtune's CEWithChunkedOutputLoss with compile off)
  litgpt            LitGPT's fine-tuning loss: lm_head over 128-token chunks, bf16 cross-entropy per chunk

As the HF Trainer does, the logits go out of scope before backward (LitGPT's loop keeps them). The lm_head is
bf16 with a small hidden size so the logits dominate; vocabulary 128,256 (Llama 3). Linux only (clear_refs).

    python benchmarks/loss_memory.py [--tokens 4096] [--out benchmarks/results/loss_memory-cpu-DATE.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 128256
HIDDEN = 64

CHILD = r"""
import ctypes, json, sys, torch
from transformers.loss.loss_utils import ForCausalLMLoss
name, T, V, H, chunks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.manual_seed(0)
head = torch.nn.Linear(H, V, bias=False).to(torch.bfloat16)
x = torch.randn(1, T, H, dtype=torch.bfloat16, requires_grad=True)
labels = torch.randint(0, V, (1, T))

def standard():
    return ForCausalLMLoss(head(x), labels, vocab_size=V), None

def chunked(compiled):
    from axolotl.monkeypatch.loss import chunked as ax
    if compiled:
        fn = ax.get_causal_lm_loss(chunks)
    else:
        ce = ax.CEWithChunkedOutputLoss(chunks)
        def fn(logits, labels, vocab_size=None):
            shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
            return ce(list(logits.chunk(chunks, dim=1)), shifted, reduction="mean")
    return lambda: (fn(head(x), labels, vocab_size=V), None)

def litgpt():
    logits = [head(c) for c in x.split(128, dim=1)]
    logits[-1] = logits[-1][..., :-1, :]
    targets = labels[..., 1:]
    parts = [torch.nn.functional.cross_entropy(lg.reshape(-1, V), t.reshape(-1), reduction="none")
             for lg, t in zip(logits, targets.split(128, dim=1))]
    return torch.cat(parts).sum() / targets.numel(), logits

step = {"standard": standard, "chunked-compiled": chunked(True), "chunked-eager": chunked(False),
        "litgpt": litgpt}[name]
libc = ctypes.CDLL("libc.so.6")

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

for _ in range(2):  # warm up: compile, allocator
    loss, keep = step(); loss.backward(); del keep; x.grad = None
libc.malloc_trim(0)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
base = status("VmRSS:")
loss, keep = step(); loss.backward()
peak = status("VmHWM:") - base - x.numel() * 2  # x.grad is the one result that outlives the step
print(json.dumps({"peak_bytes": peak, "bytes_per_logit": peak / (T * V)}))
"""

IMPLEMENTATIONS = ("standard", "chunked-compiled", "chunked-eager", "litgpt")


def measure(name: str, tokens: int, chunks: int) -> dict[str, float]:
    args = [sys.executable, "-c", CHILD, name, str(tokens), str(VOCAB), str(HIDDEN), str(chunks)]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "tools"))
    from ftkit import envinfo

    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--chunks", type=int, default=8, help="chunks of the chunked losses (Axolotl's default 8)")
    ap.add_argument("--out", type=Path, default=ROOT / f"benchmarks/results/loss_memory-cpu-{dt.date.today()}.json")
    args = ap.parse_args(argv)
    rows = {name: measure(name, args.tokens, args.chunks) for name in IMPLEMENTATIONS}
    base = rows["standard"]["bytes_per_logit"]
    print(f"{args.tokens} tokens x {VOCAB} vocab, {args.chunks} chunks")
    for name, r in rows.items():
        r["ratio_to_standard"] = round(r["bytes_per_logit"] / base, 3)
        print(f"  {name:17s} {r['bytes_per_logit']:6.2f} bytes per logit  ({r['ratio_to_standard']:.2f}x standard)")
    record = {
        "benchmark": "loss_memory",
        "date": str(dt.date.today()),
        "commit": envinfo.git_commit(ROOT),
        "hardware": envinfo.hardware_label(envinfo.hardware()),
        "versions": envinfo.versions(),
        "setting": {
            "tokens": args.tokens,
            "vocab": VOCAB,
            "hidden": HIDDEN,
            "chunks": args.chunks,
            "dtype": "bfloat16",
            "measure": "peak RSS over one forward+backward (CPU)",
        },
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
