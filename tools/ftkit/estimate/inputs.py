"""What an estimate is asked about: one training stage's setting, validated at construction."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Method = Literal["full", "lora", "qlora", "dora"]
Stage = Literal["sft", "dpo", "orpo", "kto", "reward", "grpo"]
Optimizer = Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "adafactor", "sgd"]
Attention = Literal["eager", "sdpa", "flash"]
Parallelism = Literal["none", "ddp", "fsdp", "zero1", "zero2", "zero3"]
# How the SFT loss meets the vocabulary: "standard" (transformers' cross-entropy over the whole fp32-upcast logits),
# "chunked" (Axolotl's chunked_cross_entropy / torchtune's CEWithChunkedOutputLoss: compiled, one chunk upcast at a
# time), "fused" (Cut Cross-Entropy, Liger's fused linear cross-entropy: the logits are never all materialised).
Loss = Literal["standard", "chunked", "fused"]
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Setting(BaseModel):
    """A training stage as the estimator sees it. Defaults are a common single-GPU QLoRA SFT."""

    model_config = ConfigDict(extra="forbid")

    method: Method = "qlora"
    stage: Stage = "sft"
    seq_len: int = Field(2048, ge=1)
    micro_batch: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)
    gradient_checkpointing: bool = True
    attention: Attention = "sdpa"
    optimizer: Optimizer = "adamw"
    lora_rank: int = Field(16, ge=1)
    lora_targets: tuple[str, ...] = ALL_LINEAR
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    adapter_dtype: Literal["fp32", "bf16"] = "fp32"  # PEFT up-casts adapters to fp32; LitGPT/torchtune keep bf16
    # bf16 autocast around the forward (the HF Trainer with bf16=True, so Axolotl and TRL): fp32 adapters then run
    # their matmuls in bf16 and keep bf16 copies of their inputs; off for a plain loop without autocast.
    autocast: bool = True
    double_quant: bool = True  # NF4 with quantized absmax (bnb_4bit_use_double_quant)
    quantize_lm_head: bool = False  # QLoRA: lm_head in NF4 too (LitGPT's bnb precision); PEFT keeps it in bf16
    # bitsandbytes < 0.43.3: every 4-bit layer kept its input for backward (fixed by bitsandbytes#1270) and
    # dequantized through fp16. Only for checking the estimator against figures measured with those versions.
    legacy_bitsandbytes: bool = False
    sample_packing: bool = False
    loss: Loss = "standard"  # the SFT stage's loss kernel; preference stages compute their log-probs themselves
    gpus: int = Field(1, ge=1)
    parallelism: Parallelism = "none"
    cpu_offload: bool = False  # optimizer state (and, with zero3/fsdp, parameters) on the CPU
    # QLoRA under FSDP or ZeRO-3: does every rank quantize the whole base onto its own GPU before sharding it? None:
    # what the pinned stack does, yes (transformers 5.16 loads a quantized model with a device_map on the rank's GPU,
    # with no ZeRO-3 init and no meta-device ranks for it). False for a loader that quantizes unit by unit.
    load_whole_model: bool | None = None
    # Adapters without FSDP/ZeRO-3: Axolotl upcasts the embeddings, lm_head and norms to fp32 while loading (PEFT's
    # prepare_model_for_kbit_training upcasts every parameter that is not 4-bit too) and casts them back to bf16 for
    # training; the upcast is a peak before training. Axolotl's `embeddings_skip_upcast: true` (4-bit) turns it off.
    embedding_upcast: bool = True
    # Full fine-tuning that keeps those fp32 parameters: Axolotl casts them back only for adapters, FSDP or a flash
    # attention kernel, so one process (or DDP) with SDPA or eager attention trains the embeddings, lm_head and norms
    # in fp32, with fp32 gradients and AdamW states (DeepSpeed's bf16 engine casts the model back).
    fp32_embeddings: bool = False
    # An fp32 master copy of the trainable parameters, the optimizer working on it with fp32 states: DeepSpeed's ZeRO
    # optimizers under bf16 (the model stays bf16), and FSDP1 through accelerate (which upcasts its flat parameters).
    # FSDP2 in Axolotl keeps the bf16 parameters and states.
    master_weights: bool = False
    # AdamW's step: "fused" (torch's fused kernel, no temporaries: adamw_torch_fused, the default of transformers with
    # torch >= 2.8 and of Axolotl) or "foreach" (adamw_torch: torch's default implementation on CUDA, whose step
    # allocates sqrt(exp_avg_sq) for every parameter at once).
    adamw_kernel: Literal["fused", "foreach"] = "fused"
    # DeepSpeed ZeRO-3 steps the optimizer one sub-group of its partition at a time (zero_optimization.sub_group_size;
    # DeepSpeed's default 1e9 elements).
    sub_group_size: int = Field(1_000_000_000, ge=1)
    num_generations: int = Field(8, ge=1)  # GRPO: completions per prompt
    max_prompt_len: int | None = None  # preference stages: the prompt part of seq_len (default seq_len // 2)
    # GRPO: the completion part of seq_len (TRL's max_completion_length; None: seq_len // 2). TRL asks the model for
    # the logits of completion tokens only.
    max_completion_len: int | None = Field(None, ge=1)
    # GRPO: who samples the completions. "transformers": TRL calls the policy's generate() on this GPU (its KV cache and
    # prefill are a phase of their own); "vllm": a vLLM server or colocated engine, whose memory is not modelled.
    generation: Literal["transformers", "vllm"] = "transformers"
    # GRPO: completions sampled per generate() call over all GPUs (TRL's generation_batch_size; None: its default,
    # micro-batch × GPUs × gradient accumulation steps).
    generation_batch_size: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> Setting:
        if self.gpus == 1 and self.parallelism not in ("none", "ddp"):
            raise ValueError(f"parallelism {self.parallelism} needs more than one GPU")
        return self

    @property
    def adapter(self) -> bool:
        return self.method != "full"
