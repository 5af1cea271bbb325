"""Will a stage fit the GPUs at hand, and if not, which changes would make it fit (cheapest first)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ftkit.estimate.inputs import Setting
from ftkit.estimate.memory import GIB, estimate_memory, generation_batch
from ftkit.estimate.specs import Architecture
from ftkit.estimate.timecost import FIT_HEADROOM

Change = tuple[str, Callable[[Setting], Setting | None]]


def _update(s: Setting, **changes: object) -> Setting:
    return s.with_changes(**changes)


def _halve_micro_batch(s: Setting) -> Setting | None:
    if s.batch.micro_batch < 2:
        return None
    return _update(s, micro_batch=s.batch.micro_batch // 2, grad_accum=s.batch.grad_accum * 2)


def _smaller_generation_batch(s: Setting) -> Setting | None:
    """GRPO sampling with generate(): one micro-batch per GPU per call, rounded up to whole groups of completions."""
    if s.stage != "grpo" or s.grpo.generation != "transformers":
        return None
    smallest = math.lcm(s.batch.micro_batch * s.parallel.gpus, s.grpo.num_generations)
    if smallest >= generation_batch(s) * s.parallel.gpus:
        return None
    return _update(s, generation_batch_size=smallest)


# In order of what they cost the run: nothing, a little speed, optimizer precision, model precision, data.
CHANGES: tuple[Change, ...] = (
    ("use SDPA/flash attention instead of eager (no N² attention matrix)",
     lambda s: _update(s, attention="sdpa") if s.compute.attention == "eager" else None),
    ("use the fused AdamW kernel: optimizer adamw_torch_fused (its step allocates no temporaries)",
     lambda s: _update(s, adamw_kernel="fused")
     if s.optim.name == "adamw" and s.optim.adamw_kernel == "foreach" else None),
    ("turn on gradient checkpointing (about a third more compute)",
     lambda s: _update(s, gradient_checkpointing=True) if not s.compute.gradient_checkpointing else None),
    ("sample fewer completions at once: trl.generation_batch_size = micro-batch × GPUs (or the smallest multiple of "
     "num_generations above it); more, smaller generate() calls", _smaller_generation_batch),
    ("halve the micro-batch and double gradient accumulation (same global batch)", _halve_micro_batch),
    ("use an 8-bit optimizer (paged_adamw_8bit)",
     lambda s: _update(s, optimizer="paged_adamw_8bit") if s.optim.name in ("adamw", "adafactor") else None),
    # Sharded or adapter runs get their embeddings cast back to bf16 (see Setting.precision.fp32_embeddings).
    ("shard over the GPUs with FSDP / ZeRO-3",
     lambda s: _update(s, parallelism="fsdp", fp32_embeddings=False)
     if s.parallel.gpus > 1 and s.parallel.strategy in ("none", "ddp") else None),
    ("switch to QLoRA (4-bit base weights)",
     lambda s: _update(s, method="qlora", fp32_embeddings=False) if s.method in ("lora", "full") else None),
    ("offload optimizer states to the CPU",
     lambda s: _update(s, cpu_offload=True) if not s.parallel.cpu_offload else None),
    ("halve the sequence length (longer rows are cut)",
     lambda s: _update(s, seq_len=s.batch.seq_len // 2) if s.batch.seq_len >= 512 else None),
)  # fmt: skip


# Changes only some engines can make, offered right after the free ones (attention, the AdamW kernel) when the engine
# is known.
ENGINE_CHANGES: dict[str, tuple[Change, ...]] = {
    "axolotl": (
        ("compute the SFT loss in chunks: chunked_cross_entropy: true (fp32 logits never whole; ~no speed cost)",
         lambda s: _update(s, loss="chunked") if s.stage == "sft" and s.compute.loss == "standard" else None),
        ("flash_attention: true (Axolotl then casts the fp32 embeddings, lm_head and norms back to bf16)",
         lambda s: _update(s, attention="flash", fp32_embeddings=False) if s.precision.fp32_embeddings else None),
        ("embeddings_skip_upcast: true (the 4-bit model's embeddings stay bf16 while it is prepared)",
         lambda s: _update(s, embedding_upcast=False)
         if s.method == "qlora" and s.precision.embedding_upcast else None),
    ),
}  # fmt: skip


def changes_for(engine: str | None) -> tuple[Change, ...]:
    """The pre-flight's changes for a stage run by `engine`, cheapest first."""
    return CHANGES[:2] + ENGINE_CHANGES.get(engine or "", ()) + CHANGES[2:]


@dataclass(frozen=True)
class Suggestion:
    changes: tuple[str, ...]
    need_gib: float


def need_gib(arch: Architecture, s: Setting) -> float:
    return estimate_memory(arch, s).device_total / GIB


def fits(arch: Architecture, s: Setting, budget_gib: float) -> bool:
    return need_gib(arch, s) <= budget_gib * FIT_HEADROOM


def suggestions(
    arch: Architecture, s: Setting, budget_gib: float, limit: int = 3, changes: tuple[Change, ...] = CHANGES
) -> list[Suggestion]:
    """Up to `limit` ways to fit `budget_gib`, cheapest first: the single changes that fit, in `changes`
    order; when none does, the changes applied cumulatively in that order up to the first prefix that
    fits, so a setting far over the budget still gets an answer when one exists."""
    found: list[Suggestion] = []
    for text, change in changes:
        changed = change(s)
        if changed is not None and fits(arch, changed, budget_gib):
            found.append(Suggestion((text,), need_gib(arch, changed)))
    if found:
        return found[:limit]
    current, applied = s, []
    for text, change in changes:
        changed = change(current)
        if changed is None:
            continue
        current, applied = changed, [*applied, text]
        if len(applied) > 1 and fits(arch, current, budget_gib):
            found.append(Suggestion(tuple(applied), need_gib(arch, current)))
            break
    return found[:limit]


def check_stage(
    arch: Architecture,
    s: Setting,
    gpus: list[dict[str, object]],
    *,
    stage: str,
    config_file: str,
    force: bool = False,
    engine: str | None = None,
) -> dict[str, object]:
    """The pre-flight for one stage on the GPUs at hand (envinfo.gpus()): the estimate, the verdict, and
    when it does not fit, the changes that would make it fit (`engine`'s own among them). Raises (exit 5) unless
    it fits or `force`."""
    from ftkit.errors import ExitCode, FtkitError, Problem

    budget = min(float(g["memory_gib"]) for g in gpus)  # type: ignore[arg-type]
    s = s.with_changes(gpus=max(len(gpus), 1))
    memory = estimate_memory(arch, s)
    need = memory.device_total / GIB
    ok = need <= budget * FIT_HEADROOM
    found = [] if ok else suggestions(arch, s, budget, changes=changes_for(engine))
    result: dict[str, object] = {
        "stage": stage,
        "need_gib": round(need, 2),
        "budget_gib": budget,
        "fits": ok,
        "verdict": "fits" if ok else "forced" if force else "refused",
        "memory": memory.to_dict(),
        "suggestions": [{"changes": list(f.changes), "need_gib": round(f.need_gib, 2)} for f in found],
    }
    if ok or force:
        return result
    top = sorted(memory.terms, key=lambda t: -t.bytes)[:4]
    biggest = ", ".join(f"{t.name} {t.gib:.1f}" for t in top)
    fallback = "no single change fits: use a larger GPU or more GPUs with FSDP"
    if memory.load_peak >= memory.peak_allocated:
        # The peak comes before training: a smaller batch or shorter sequences change nothing.
        biggest = f"{memory.load_note}: {memory.load_peak / GIB:.1f}"
        fallback = f"use GPUs with at least {need:.0f} GiB"
        if memory.load_note.startswith("model load"):
            fallback = "more GPUs do not help, every rank loads the whole 4-bit model first: " + fallback
    fixes = "; or ".join(" + ".join(f.changes) + f" (→ {f.need_gib:.1f} GiB)" for f in found) or fallback
    problem = Problem(
        f"estimate: peak {memory.peak_allocated / GIB:.1f} GiB allocated at the {memory.peak_phase}; "
        f"largest terms (GiB): {biggest}",
        config_file,
        fix=f"{fixes}; or pass --force to try anyway",
    )
    raise FtkitError(
        f"stage '{stage}' needs about {need:.1f} GiB per GPU; this GPU has {budget:.1f} GiB "
        f"({FIT_HEADROOM:.0%} usable): training did not start",
        [problem],
        ExitCode.ENVIRONMENT,
    )
