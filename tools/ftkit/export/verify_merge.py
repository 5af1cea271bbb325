"""Proof that a merged model is the model trained: its logits against base + adapter, both in fp32.

The reference is the base loaded unquantized at the merge dtype with the adapter applied by PEFT (not
merged); the candidate is the merged checkpoint as written. Both run in float32 on a few chat prompts,
so the only legitimate difference is the rounding of (W + delta) to the merge dtype. Two conditions:

1. max |logit difference| <= the merge dtype's tolerance;
2. the merged model holds the adapter's change: its mean |difference| from base + adapter is at most
   half the adapter's own effect (mean |base + adapter - base|), so a merge that lost the adapter fails.

Measured on CPU with the SmolLM2-135M smoke adapters (SFT; DPO on the merged SFT model), max / mean
|diff| and top-1 agreement over 159 positions:
  float32 merge    7.7e-5 / 1.0e-5, 100 %       1.0e-4 / 1.2e-5, 100 %
  bfloat16 merge   2.36 / 0.30, 89 %            0.76 / 0.073, 97 %
  merged into NF4  27.2 / 4.5, 55 %             29.3 / 3.5, 58 %      (the trap: peft #2321)
  adapter effect   9.9 / 1.5                    1.8 / 0.20
SmolLM2-135M's logits are large and bf16 keeps 8 bits of mantissa, hence bf16's tolerance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_PROMPTS = (
    "Who are you?",
    "Explain in two sentences why the sky is blue.",
    "Write a Python function that returns the sum of a list.",
    "What should I pack for a weekend of hiking in the mountains?",
)
# Max |logit difference| allowed per merge dtype (measured values are ~3-10x below these).
TOLERANCE = {"float32": 1e-3, "float16": 1.0, "bfloat16": 5.0}
HOLDS_ADAPTER = 0.5  # mean |merged - (base + adapter)| <= this x the adapter's mean effect


def _encode(tokenizer: Any, prompts: tuple[str, ...] | list[str]) -> list[Any]:
    batches = []
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt}]
        if getattr(tokenizer, "chat_template", None):
            enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)  # fmt: skip
        else:
            enc = tokenizer(prompt, return_tensors="pt")
        batches.append(enc)
    return batches


def logits_difference(reference: Any, candidate: Any, batches: list[Any]) -> dict[str, float]:
    """Max and mean |logit diff| and the share of positions whose top-1 token agrees."""
    import torch

    max_diff, total, count, agree = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for enc in batches:
            ref = reference(**enc).logits.float()
            cand = candidate(**enc).logits.float()
            diff = (ref - cand).abs()
            max_diff = max(max_diff, diff.max().item())
            total += diff.sum().item()
            count += diff.numel()
            agree += (ref.argmax(-1) == cand.argmax(-1)).sum().item()
    positions = sum(enc["input_ids"].numel() for enc in batches)
    return {"max_abs_diff": max_diff, "mean_abs_diff": total / max(count, 1),
            "top1_agreement": agree / max(positions, 1), "positions": positions}  # fmt: skip


def adapter_effect(peft_model: Any, batches: list[Any]) -> float:
    """Mean |logits with the adapter - logits without it|: how much the adapter changes the model."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for enc in batches:
            on = peft_model(**enc).logits.float()
            with peft_model.disable_adapter():
                off = peft_model(**enc).logits.float()
            total += (on - off).abs().sum().item()
            count += on.numel()
    return total / max(count, 1)


def verify_merge(
    base: str,
    adapter_dir: Path,
    merged_dir: Path,
    dtype: str = "bfloat16",
    prompts: tuple[str, ...] | list[str] = DEFAULT_PROMPTS,
    tolerance: float | None = None,
) -> dict[str, Any]:
    """Compare the merged checkpoint with base + adapter (unmerged, fp32). Returns the check as data."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tol = TOLERANCE.get(dtype, TOLERANCE["bfloat16"]) if tolerance is None else tolerance
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    batches = _encode(tokenizer, prompts)
    # The base at the merge dtype, run in fp32: the merged weights' only other source of difference is
    # the rounding of (W + delta) to that dtype.
    base_model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype), use_safetensors=True)
    reference = PeftModel.from_pretrained(base_model.float(), str(adapter_dir)).eval()
    candidate = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32, use_safetensors=True).eval()
    result = logits_difference(reference, candidate, batches)
    effect = adapter_effect(reference, batches)
    holds = result["mean_abs_diff"] <= max(HOLDS_ADAPTER * effect, 1e-6)
    return {
        **{k: round(v, 6) if isinstance(v, float) else v for k, v in result.items()},
        "adapter_effect_mean": round(effect, 6),
        "holds_adapter": holds,
        "prompts": len(batches),
        "merge_dtype": dtype,
        "tolerance": tol,
        "reference": "base (unquantized, at the merge dtype) + adapter via PEFT, unmerged, run in fp32",
        "passed": result["max_abs_diff"] <= tol and holds,
    }
