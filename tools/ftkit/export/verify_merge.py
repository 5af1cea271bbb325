"""Proof that a merged model is the model trained: its logits against base + adapter, both in fp32.

The reference is the unquantized base at the merge dtype with the adapter applied by PEFT (not merged); the
candidate is the merged checkpoint as written. It passes when max |logit difference| is within the merge dtype's
tolerance and its mean |difference| from base + adapter is at most half the adapter's own effect, so a merge that
lost the adapter fails. A reward model is compared on its scores. The measurements behind the tolerances:
docs/export-and-eval.md, "`export/verify_merge.py`: measured differences".
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
# Answers scored with each prompt when the merged model is a reward model (sequence classifier).
SCORED_ANSWERS = (
    "Here is a clear answer with the steps you need, and a short example.",
    "No idea. Figure it out yourself.",
)


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


def _encode_scored(tokenizer: Any, prompts: tuple[str, ...] | list[str]) -> list[Any]:
    """Whole conversations (prompt + answer) for a sequence classifier to score."""
    batches = []
    for prompt in prompts:
        for answer in SCORED_ANSWERS:
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
            if getattr(tokenizer, "chat_template", None):
                enc = tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)
            else:
                enc = tokenizer(f"{prompt}\n{answer}", return_tensors="pt")
            batches.append(enc)
    return batches


def _scores(model: Any, batches: list[Any]) -> Any:
    import torch

    with torch.no_grad():
        return torch.cat([model(**enc).logits.float().reshape(1, -1) for enc in batches])


def scores_difference(reference: Any, candidate: Any, batches: list[Any]) -> dict[str, float]:
    """Max and mean |score diff| and the share of score pairs (i, j) both models order the same way."""
    ref, cand = _scores(reference, batches), _scores(candidate, batches)
    diff = (ref - cand).abs()
    r, c = ref[:, 0], cand[:, 0]
    pairs = [(i, j) for i in range(len(r)) for j in range(i + 1, len(r))]
    same = sum(bool((r[i] > r[j]) == (c[i] > c[j])) for i, j in pairs)
    return {"max_abs_diff": diff.max().item(), "mean_abs_diff": diff.mean().item(),
            "top1_agreement": same / max(len(pairs), 1), "positions": len(batches)}  # fmt: skip


def lora_effect_on_scores(peft_model: Any, batches: list[Any]) -> float:
    """Mean |score with the LoRA layers - score without them|, the trained head kept on both sides."""
    from peft.tuners.lora import LoraLayer

    on = _scores(peft_model, batches)
    layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        off = _scores(peft_model, batches)
    finally:
        for layer in layers:
            layer.enable_adapters(True)
    return (on - off).abs().mean().item()


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


def _tolerance(dtype: str, tolerance: float | None) -> float:
    return TOLERANCE.get(dtype, TOLERANCE["bfloat16"]) if tolerance is None else tolerance


def _difference(reference: Any, candidate: Any, tokenizer: Any, prompts: Any, task_type: str) -> tuple[list, dict]:
    """The prompts encoded for the model kind, and the candidate's difference from the reference on them: scores of
    prompt + answer for a sequence classifier, next-token logits otherwise."""
    from ftkit.export.merge import SEQ_CLS

    if task_type == SEQ_CLS:
        batches = _encode_scored(tokenizer, prompts)
        return batches, scores_difference(reference, candidate, batches)
    batches = _encode(tokenizer, prompts)
    return batches, logits_difference(reference, candidate, batches)


def _check(result: dict[str, Any], batches: list[Any], dtype: str, tol: float, task_type: str) -> dict[str, Any]:
    """The keys every final-model check reports."""
    return {
        **{k: round(v, 6) if isinstance(v, float) else v for k, v in result.items()},
        "prompts": len(batches),
        "merge_dtype": dtype,
        "tolerance": tol,
        "task_type": task_type,
    }


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
    from transformers import AutoTokenizer

    from ftkit.export.merge import SEQ_CLS, adapter_task_type, load_base, saved_head_labels

    tol = _tolerance(dtype, tolerance)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    task_type = adapter_task_type(Path(adapter_dir))
    labels = saved_head_labels(Path(adapter_dir)) if task_type == SEQ_CLS else 1
    # The base at the merge dtype, run in fp32: the merged weights' only other source of difference is
    # the rounding of (W + delta) to that dtype.
    base_model = load_base(base, getattr(torch, dtype), task_type, labels)
    if task_type == SEQ_CLS:
        base_model.config.pad_token_id = tokenizer.pad_token_id
    reference = PeftModel.from_pretrained(base_model.float(), str(adapter_dir)).eval()
    candidate = load_base(str(merged_dir), torch.float32, task_type, labels).eval()
    batches, result = _difference(reference, candidate, tokenizer, prompts, task_type)
    effect = (lora_effect_on_scores if task_type == SEQ_CLS else adapter_effect)(reference, batches)
    holds = result["mean_abs_diff"] <= max(HOLDS_ADAPTER * effect, 1e-6)
    return {
        **_check(result, batches, dtype, tol, task_type),
        "adapter_effect_mean": round(effect, 6),
        "holds_adapter": holds,
        "compared": "scores of prompt + answer (top1_agreement: pairs ordered alike)"
        if task_type == SEQ_CLS
        else "next-token logits",
        "reference": "base (unquantized, at the merge dtype) + adapter via PEFT, unmerged, run in fp32",
        "passed": result["max_abs_diff"] <= tol and holds,
    }


def verify_resaved(
    trained_dir: Path,
    saved_dir: Path,
    dtype: str = "bfloat16",
    prompts: tuple[str, ...] | list[str] = DEFAULT_PROMPTS,
    tolerance: float | None = None,
) -> dict[str, Any]:
    """A full fine-tune's final model against the checkpoint the trainer wrote, both run in fp32: the only
    legitimate difference is the rounding to `dtype`. Returns the check as data (the merge check's keys)."""
    import torch
    from transformers import AutoTokenizer

    from ftkit.export.merge import SEQ_CLS, load_base, trained_num_labels, trained_task_type

    tol = _tolerance(dtype, tolerance)
    tokenizer = AutoTokenizer.from_pretrained(saved_dir)
    task_type = trained_task_type(Path(trained_dir))
    labels = trained_num_labels(Path(trained_dir))
    reference = load_base(str(trained_dir), torch.float32, task_type, labels).eval()
    candidate = load_base(str(saved_dir), torch.float32, task_type, labels).eval()
    batches, result = _difference(reference, candidate, tokenizer, prompts, task_type)
    return {
        **_check(result, batches, dtype, tol, task_type),
        "kind": "full",
        "compared": "scores of prompt + answer" if task_type == SEQ_CLS else "next-token logits",
        "reference": "the checkpoint the trainer saved, run in fp32",
        "passed": result["max_abs_diff"] <= tol,
    }


def describe_merge_check(check: dict[str, Any]) -> str:
    """One line for a merge check (the CLI and the recipe runner print the same)."""
    what = "scores" if check.get("task_type") == "SEQ_CLS" else "logits"
    verdict = "passed" if check["passed"] else "FAILED"
    if check.get("kind") == "full":
        return (
            f"{what} in {check['merge_dtype']} vs the trained checkpoint: max |diff| {check['max_abs_diff']:.3g} "
            f"(tolerance {check['tolerance']:g}), top-1 agreement {check['top1_agreement']:.1%}: {verdict}"
        )
    return (f"merged {what} vs base + adapter: max |diff| {check['max_abs_diff']:.3g} (tolerance "
            f"{check['tolerance']:g}), mean {check['mean_abs_diff']:.3g} vs the adapter's effect "
            f"{check['adapter_effect_mean']:.3g}, top-1 agreement {check['top1_agreement']:.1%}: "
            f"{verdict}")  # fmt: skip
