"""The memory model is frozen (docs/estimate.md, "Changing the model"): its terms and a few reference estimates.

A new memory term, or a change to one, needs a measured miss above 0.5 GiB on the current stack, recorded in
benchmarks/vram_reference.md. These pins fail on any such change so that it is made on purpose, with the
measurement, in the same commit that updates them.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from ftkit.estimate.from_recipe import resolve_architecture
from ftkit.estimate.inputs import Setting
from ftkit.estimate.memory import estimate_memory
from vram_reference_check import check, load_entries

RULE = (
    "the memory model is frozen: a new or changed term needs a measured miss above 0.5 GiB on the current stack, "
    "recorded in benchmarks/vram_reference.md (docs/estimate.md, 'Changing the model'); update this pin with it"
)

# Every term name estimate_memory can return (over the grid below, which reaches every branch that adds a term).
TERMS = {
    "activations",
    "activations (4-bit lm_head input)",
    "activations (checkpoints)",
    "activations (lm_head adapter)",
    "activations (one layer recomputed)",
    "adapter (fp32)",
    "adapter (bf16)",
    "adapter bf16 copies (autocast cache)",
    "dequantized weight (transient)",
    "fp32 master weights",
    "gathered layer (zero3/fsdp)",
    "generation (KV cache and prefill)",
    "gradients",
    "logits",
    "nf4 block scales (every GPU)",
    "optimizer states",
    "optimizer step (transient)",
    "reference model",
    "weights (bf16)",
    "weights (fp32)",
    "weights (nf4)",
}

# Reference estimates (GiB, the quantity each entry measured) of benchmarks/vram_reference.yaml entries: the H200
# runs of the recipes (QLoRA SFT, full fine-tuning, DPO, DoRA) and two sharded published figures (FSDP, ZeRO-3).
REFERENCE_GIB = {
    "h200-sft-recipe-4096x1": 12.92,
    "h200-full-recipe-4096x1": 60.60,
    "h200-dpo-recipe-2048x1": 12.62,
    "h200-dora-recipe-4096x1": 23.43,
    "answerai-llama-2-7b-qlora-fsdp2-ctx2048-bs1-3090": 5.09,
    "peft-docs-llama-2-70b-lora-zero3-8xh100": 58.38,
}


def _grid() -> list[Setting]:
    extras = [
        {},
        {"gradient_checkpointing": False, "adapter_dtype": "bf16"},
        {"lora_targets": ("q_proj", "lm_head"), "quantize_lm_head": True, "legacy_bitsandbytes": True},
        {"adamw_kernel": "foreach", "master_weights": True, "fp32_embeddings": True},
    ]
    methods, stages = ("full", "lora", "qlora", "dora"), ("sft", "dpo", "orpo", "kto", "reward", "grpo")
    out = []
    for method, stage, par, extra in itertools.product(methods, stages, ("none", "fsdp", "zero3"), extras):
        out.append(Setting(method=method, stage=stage, gpus=1 if par == "none" else 4, parallelism=par, **extra))
    return out


def test_the_memory_terms_are_the_frozen_list():
    arch = resolve_architecture("llama-3.1-8b")
    seen = {t.name for s in _grid() for t in estimate_memory(arch, s).terms}
    assert seen == TERMS, f"terms added: {sorted(seen - TERMS)}, gone: {sorted(TERMS - seen)}; {RULE}"


@pytest.mark.parametrize("entry_id", sorted(REFERENCE_GIB))
def test_the_reference_estimate_is_the_frozen_value(entry_id):
    entry = next(e for e in load_entries(include_all=True) if e["id"] == entry_id)
    got = check(entry)["estimate_gib"]
    assert got == pytest.approx(REFERENCE_GIB[entry_id], abs=0.005), f"{entry_id}: {got} GiB; {RULE}"
