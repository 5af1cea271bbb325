"""The estimator against published, measured peak GPU memory (benchmarks/vram_reference.yaml).

For every entry: rebuild the setting, estimate, compare the matching quantity (allocated/active ->
PyTorch's peak allocated; reserved -> reserved; nvidia-smi -> reserved + CUDA context), print the
relative error per entry and the summary. `--all` includes the entries marked `in_test: false`.

    python benchmarks/vram_reference_check.py [--all] [--json] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "benchmarks" / "vram_reference.yaml"
PARALLELISM = {"fsdp": "fsdp", "ddp": "ddp", "deepspeed-zero3": "zero3", "deepspeed-zero2": "zero2"}
# Frameworks that keep LoRA weights (and so their saved inputs, gradients and optimizer states) in bf16
# (benchmarks/vram_reference.yaml header); the HF stack (PEFT) up-casts adapters to fp32.
BF16_ADAPTERS = ("litgpt", "torchtune")
KIND_TO_QUANTITY = {"max_memory_allocated": "allocated", "active": "allocated", "reserved": "reserved",
                    "nvidia-smi": "device", "unknown": "reserved"}  # fmt: skip


def load_entries(include_all: bool = False) -> list[dict[str, Any]]:
    entries = yaml.safe_load(REFERENCE.read_text())["entries"]
    return [e for e in entries if include_all or e.get("in_test")]


def entry_architecture(e: dict[str, Any]) -> Any:
    from dataclasses import replace

    from ftkit.estimate.from_recipe import architecture_from_config, resolve_architecture

    if e.get("architecture"):
        cfg = {**e["architecture"], "model_type": e["architecture"].get("family", "llama")}
        arch = architecture_from_config(cfg, e["model"], e["architecture"].get("source", ""))
    else:
        arch = resolve_architecture(e["model"])
    if str(e.get("framework", "")).startswith("litgpt") and arch.tie_word_embeddings:
        # litgpt's checkpoint converter copies the embedding into a separate lm_head (tie_embeddings unset).
        arch = replace(arch, tie_word_embeddings=False)
    return arch


def entry_setting(e: dict[str, Any]) -> Any:
    from ftkit.estimate.inputs import Setting

    lora = e.get("lora") or {}
    optimizer = str(e.get("optimizer") or "adamw")
    par = str(e.get("parallelism") or "none").split(" ")[0]
    fields: dict[str, Any] = {
        "method": e["method"],
        "stage": e.get("stage") or "sft",
        "seq_len": int(e["seq_len"]),
        "micro_batch": int(e["micro_batch"]),
        "grad_accum": int(e.get("grad_accum") or 1),
        "gradient_checkpointing": bool(e.get("gradient_checkpointing")),
        "optimizer": "paged_adamw_8bit" if "8bit" in optimizer and "paged" in optimizer
        else "adamw_8bit" if "8bit" in optimizer else "adamw",
        "gpus": int(e.get("gpus") or 1),
        "parallelism": PARALLELISM.get(par, "none") if int(e.get("gpus") or 1) > 1 else "none",
        "cpu_offload": "offload" in str(e.get("parallelism") or ""),
        "master_weights": par.startswith("deepspeed"),  # ZeRO keeps fp32 masters of a bf16 model
        "adamw_kernel": e.get("adamw_kernel") or "fused",
        "max_completion_len": e.get("max_completion_len"),  # GRPO
        "attention": e.get("attention") or "sdpa",
        "autocast": bool(e.get("autocast", True)),
        "loss": e.get("loss") or "standard",
        # Every figure is a training peak (measured after a reset, or by a framework that never upcasts the
        # embeddings while preparing a 4-bit model): the preparation peak before training is not in it.
        "embedding_upcast": False,
        "adapter_dtype": e.get("adapter_dtype")
        or ("bf16" if str(e.get("framework", "")).startswith(BF16_ADAPTERS) else "fp32"),
    }  # fmt: skip
    if e["method"] == "qlora":
        # These runs' loaders quantized weight by weight and kept the result off the GPU until sharding (Answer.AI's
        # low_memory loader; transformers 4.x under FSDP or ZeRO-3 moved each quantized weight to the CPU, or to meta
        # off rank 0), unless the entry says the whole model was loaded on each GPU first, as transformers 5 does.
        fields["load_whole_model"] = bool(e.get("whole_model_load", False))
        fields["legacy_bitsandbytes"] = _version(e.get("bitsandbytes")) < (0, 43, 3)
        fields["double_quant"] = bool(e.get("double_quant", True))
        # litgpt's BitsandbytesPrecision has no ignore_modules: every nn.Linear, lm_head included, is NF4.
        fields["quantize_lm_head"] = str(e.get("framework", "")).startswith("litgpt")
    if e["method"] != "full" and lora:
        fields["lora_rank"] = int(lora.get("rank") or 8)
        fields["lora_dropout"] = float(lora.get("dropout") or 0.0)
        targets = lora.get("targets")
        if targets and targets != "all-linear":
            fields["lora_targets"] = tuple(targets)
    return Setting(**fields)


def _version(text: Any) -> tuple[int, ...]:
    """A version as numbers; an unknown version counts as current (no legacy behaviour)."""
    if not text:
        return (999,)
    return tuple(int(part) for part in str(text).split(".")[:3] if part.isdigit())


def measured_gib(e: dict[str, Any]) -> float:
    value = float(e["measured_gb"])
    return value * 1e9 / 2**30 if str(e.get("measured_unit", "GB")).upper() == "GB" else value


def check(e: dict[str, Any]) -> dict[str, Any]:
    from ftkit.estimate.memory import GIB, estimate_memory

    try:
        memory = estimate_memory(entry_architecture(e), entry_setting(e))
    except (ValueError, KeyError) as exc:
        return {"id": e["id"], "error": f"{type(exc).__name__}: {exc}"}
    quantity = KIND_TO_QUANTITY.get(e.get("measured_kind", "unknown"), "reserved")
    estimate = {"allocated": memory.peak_allocated, "reserved": memory.reserved, "device": memory.device_total}[
        quantity
    ] / GIB
    measured = measured_gib(e)
    return {
        "id": e["id"],
        "source": "measured" if e.get("source") == "measured" else "published",
        "framework": e.get("framework"),
        "quantity": quantity,
        "measured_gib": round(measured, 2),
        "estimate_gib": round(estimate, 2),
        "error": round((estimate - measured) / measured, 3),
        "tolerance": float(e.get("tolerance") or 0.10),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if isinstance(r.get("error"), float)]
    errors = sorted(abs(r["error"]) for r in ok)
    return {
        "entries": len(rows),
        "estimable": len(ok),
        "within_tolerance": sum(abs(r["error"]) <= r["tolerance"] for r in ok),
        "max_abs_error": errors[-1] if errors else None,
        "median_abs_error": errors[len(errors) // 2] if errors else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--all", action="store_true", help="also the entries marked in_test: false")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tools"))
    rows = [check(e) for e in load_entries(args.all)]
    summary = {kind: summarise([r for r in rows if r.get("source", "published") == kind])
               for kind in ("published", "measured")}  # fmt: skip
    summary["all"] = summarise(rows)
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    if args.json:
        print(json.dumps({"summary": summary, "rows": rows}, indent=1))
        return 0
    print(f"{'id':58s} {'framework':22s} {'kind':9s} {'measured':>9s} {'estimate':>9s} {'error':>7s}")
    for r in rows:
        if not isinstance(r.get("error"), float):
            print(f"{r['id']:58s} could not estimate: {r['error']}")
            continue
        flag = "" if abs(r["error"]) <= r["tolerance"] else "  OUT"
        print(f"{r['id'][:58]:58s} {str(r['framework'])[:22]:22s} {r['quantity']:9s} {r['measured_gib']:8.2f}G "
              f"{r['estimate_gib']:8.2f}G {r['error']:+7.1%}{flag}")  # fmt: skip
    for kind, part in summary.items():
        print(f"{kind:9s}: {part['within_tolerance']} of {part['estimable']} within tolerance; "
              f"max |error| {part['max_abs_error']}, median |error| {part['median_abs_error']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
