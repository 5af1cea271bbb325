"""From what an engine config says (`ftkit.engines.facts.EngineFacts`) to the estimator's `Setting`: the one mapping.

Engines report facts in their own defaults (`Engine.engine_facts`); every rule about what those facts mean for
memory and time (which method a 4-bit adapter is, which attention kernel a name selects, which sharding keeps fp32
masters) lives here, once for all engines.
"""

from __future__ import annotations

from typing import Any

from ftkit.engines.facts import EngineFacts, method_of
from ftkit.estimate.inputs import Setting

# RL trainers by the estimator's stage (IPO is DPO with another loss).
RL_STAGES = {"dpo": "dpo", "ipo": "dpo", "kto": "kto", "orpo": "orpo", "grpo": "grpo"}
DEFAULT_OPTIMIZER = "adamw_torch_fused"  # transformers' default with torch >= 2.8, and Axolotl's


def optimizer_kind(name: str) -> str:
    """An HF/Axolotl optimizer name -> the estimator's kind (adamw, adamw_8bit, paged_adamw_8bit, adafactor, sgd)."""
    name = name.lower()
    if "paged" in name and "8bit" in name:
        return "paged_adamw_8bit"
    if "8bit" in name:
        return "adamw_8bit"
    if "adafactor" in name:
        return "adafactor"
    if name.startswith("sgd"):
        return "sgd"
    return "adamw"


def adamw_kernel(name: str) -> str:
    """Which AdamW step an HF optimizer name runs: "foreach" for adamw_torch (torch.optim.AdamW with its CUDA
    default), "fused" for adamw_torch_fused and everything else (their steps allocate nothing the size of the
    model)."""
    return "foreach" if name.lower() == "adamw_torch" else "fused"


def stage_of(f: EngineFacts) -> str:
    return RL_STAGES.get(f.rl or "", "reward" if f.reward_model else "sft")


def attention_of(f: EngineFacts) -> str:
    """flash for any flash kernel, eager for eager, else SDPA (transformers' default)."""
    attn = f.attn_implementation or ""
    return "flash" if f.flash_attention or "flash" in attn else "eager" if attn == "eager" else "sdpa"


def parallelism_of(f: EngineFacts) -> str | None:
    """fsdp, zero1/2/3, ddp for ZeRO stage 0; None without sharding (the estimator's default)."""
    if f.fsdp:
        return "fsdp"
    stage = f.deepspeed_zero_stage
    if stage is None:
        return None
    return f"zero{stage}" if stage in (1, 2, 3) else "ddp"


def setting_from_facts(f: EngineFacts, **overrides: Any) -> Setting:
    """The estimator's setting of a stage from its engine facts, `overrides` (flat `Setting` names: `gpus`, and the
    options of `ftkit estimate`) on top. ValueError when they do not make a valid setting."""
    method, stage, attention, parallelism = method_of(f), stage_of(f), attention_of(f), parallelism_of(f)
    optimizer = f.optimizer or DEFAULT_OPTIMIZER
    loss = "fused" if f.fused_linear_cross_entropy else "chunked" if f.chunked_cross_entropy else "standard"
    out: dict[str, Any] = {
        "method": method,
        "stage": stage,
        "seq_len": f.sequence_len,
        "micro_batch": f.micro_batch_size,
        "grad_accum": f.gradient_accumulation_steps,
        "gradient_checkpointing": f.gradient_checkpointing or f.fsdp_activation_checkpointing,
        "attention": attention,
        "optimizer": optimizer_kind(optimizer),
        "adamw_kernel": adamw_kernel(optimizer),
        "sample_packing": f.sample_packing,
        "double_quant": f.bnb_4bit_use_double_quant,
        "loss": loss,
        # A loader that upcasts the embeddings while preparing the model, unless a 4-bit model's config turns it off.
        "embedding_upcast": f.upcasts_embeddings and not (f.embeddings_skip_upcast and method == "qlora"),
    }
    if f.lora_r is not None:
        out["lora_rank"] = f.lora_r
    if f.lora_dropout is not None:
        out["lora_dropout"] = f.lora_dropout
    if f.lora_target_modules:
        out["lora_targets"] = f.lora_target_modules
    if stage == "grpo":
        grpo = {
            "num_generations": f.num_generations,
            "max_completion_len": f.max_completion_length,
            "generation": "vllm" if f.use_vllm else None,
            "generation_batch_size": f.generation_batch_size,
        }
        out |= {key: value for key, value in grpo.items() if value is not None}
    if parallelism:
        out["parallelism"] = parallelism
    out["cpu_offload"] = f.cpu_offload
    # Axolotl's loader casts the fp32 embeddings, lm_head and norms back only for adapters, FSDP or flash attention;
    # DeepSpeed's bf16 engine casts the whole model back.
    out["fp32_embeddings"] = (
        f.full_keeps_fp32_embeddings and method == "full" and parallelism in (None, "ddp") and attention != "flash"
    )
    # DeepSpeed's ZeRO optimizers keep fp32 masters of a bf16 model; accelerate upcasts FSDP1's flat parameters.
    out["master_weights"] = str(parallelism).startswith("zero") or (parallelism == "fsdp" and f.fsdp_version != "2")
    if parallelism == "zero3" and f.zero3_sub_group_size:
        out["sub_group_size"] = f.zero3_sub_group_size
    return Setting(**{**out, **overrides})
