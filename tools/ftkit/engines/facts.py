"""What an engine config says about a training stage, in engine-neutral names: `EngineFacts`.

Each engine adapter fills it from its own config keys (`Engine.engine_facts`), with the engine's own default where
the config says nothing; `ftkit.estimate.from_engine` is the one place that turns it into the estimator's `Setting`.
A fact is what the config (or the engine's code path) is, not what it means for memory: that is the mapping's job.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class EngineFacts(BaseModel):
    """One stage's engine config, read. None: the config does not say, and the engine has no default of its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: str
    # What is trained: an adapter type (Axolotl `adapter`; "lora" for a TRL/Unsloth `lora:` section), None for a
    # full fine-tune; 4-bit base; DoRA; the RL trainer (Axolotl `rl`, TRL `stage`); a reward model.
    adapter: str | None = None
    load_in_4bit: bool = False
    bnb_4bit_use_double_quant: bool = True
    use_dora: bool = False
    rl: str | None = None
    reward_model: bool = False
    # The batch.
    sequence_len: int
    micro_batch_size: int
    gradient_accumulation_steps: int = 1
    sample_packing: bool = False
    # How the forward and backward run.
    gradient_checkpointing: bool = False
    fsdp_activation_checkpointing: bool = False  # FSDP's own, which replaces gradient_checkpointing
    attn_implementation: str | None = None
    flash_attention: bool = False  # Axolotl's `flash_attention: true`
    optimizer: str | None = None  # the HF/Axolotl optimizer name (None: the engine's default, adamw_torch_fused)
    chunked_cross_entropy: bool = False
    fused_linear_cross_entropy: bool = False  # Cut Cross-Entropy or Liger's fused linear cross-entropy
    # The adapter. lora_target_modules None: every linear layer.
    lora_r: int | None = None
    lora_dropout: float | None = None
    lora_target_modules: tuple[str, ...] | None = None
    # GRPO (TRL's GRPOConfig, also under Axolotl's `trl:`).
    num_generations: int | None = None
    max_completion_length: int | None = None
    use_vllm: bool = False
    generation_batch_size: int | None = None
    # Sharding: FSDP (and its version), DeepSpeed's ZeRO stage (0: plain data parallel; None: no DeepSpeed, or a
    # config that cannot be read here), parameters or optimizer states offloaded to the CPU, ZeRO-3's sub-group size.
    fsdp: bool = False
    fsdp_version: str | None = None
    deepspeed_zero_stage: int | None = None
    cpu_offload: bool = False
    zero3_sub_group_size: int | None = None
    # The loader. Does it upcast the embeddings, lm_head and norms to fp32 while preparing an adapter model (Axolotl;
    # PEFT's prepare_model_for_kbit_training), and does the config turn that off (`embeddings_skip_upcast`)? Does it,
    # for a full fine-tune, keep them fp32 unless it runs FSDP or flash attention (Axolotl's loader)?
    upcasts_embeddings: bool = True
    embeddings_skip_upcast: bool = False
    full_keeps_fp32_embeddings: bool = False


def method_of(f: EngineFacts) -> str:
    """full, lora, qlora (an adapter on a 4-bit base, or Axolotl's `adapter: qlora`) or dora."""
    if not f.adapter:
        return "full"
    if f.use_dora:
        return "dora"
    return "qlora" if f.load_in_4bit or f.adapter == "qlora" else "lora"
