"""What an estimate is asked about: one training stage's setting, validated at construction.

`Setting` groups its fields into sub-models (batch, lora, precision, compute, optim, parallel, grpo) that the
memory model reads as `s.batch.seq_len`, `s.parallel.strategy`. It is still built from the flat form the CLI, the
recipes' engine configs and the reference entries give (`Setting(seq_len=4096, parallelism="fsdp")`, names in
`FLAT`), and `flat()` gives that form back (the `setting` of `ftkit estimate --json`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

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
_FORBID = ConfigDict(extra="forbid")


class Batch(BaseModel):
    """What one optimizer step sees: sequence length, micro-batch, accumulation, packing."""

    model_config = _FORBID
    seq_len: int = Field(2048, ge=1)
    micro_batch: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)
    sample_packing: bool = False
    max_prompt_len: int | None = None  # preference stages: the prompt part of seq_len (default seq_len // 2)


class Lora(BaseModel):
    """The adapter (LoRA, QLoRA, DoRA); unused for full fine-tuning."""

    model_config = _FORBID
    rank: int = Field(16, ge=1)
    targets: tuple[str, ...] = ALL_LINEAR
    dropout: float = Field(0.0, ge=0, lt=1)
    dtype: Literal["fp32", "bf16"] = "fp32"  # PEFT up-casts adapters to fp32; LitGPT/torchtune keep bf16


class Precision(BaseModel):
    """Dtypes: autocast, 4-bit quantization, which parameters are kept or upcast to fp32."""

    model_config = _FORBID
    # bf16 autocast around the forward (the HF Trainer with bf16=True, so Axolotl and TRL): fp32 adapters then run
    # their matmuls in bf16 and keep bf16 copies of their inputs; off for a plain loop without autocast.
    autocast: bool = True
    double_quant: bool = True  # NF4 with quantized absmax (bnb_4bit_use_double_quant)
    quantize_lm_head: bool = False  # QLoRA: lm_head in NF4 too (LitGPT's bnb precision); PEFT keeps it in bf16
    # bitsandbytes < 0.43.3: every 4-bit layer kept its input for backward (fixed by bitsandbytes#1270) and
    # dequantized through fp16. Only for checking the estimator against figures measured with those versions.
    legacy_bitsandbytes: bool = False
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


class Compute(BaseModel):
    """How the forward and backward run: checkpointing, the attention kernel, the SFT loss kernel."""

    model_config = _FORBID
    gradient_checkpointing: bool = True
    attention: Attention = "sdpa"
    loss: Loss = "standard"  # the SFT stage's loss kernel; preference stages compute their log-probs themselves


class Optim(BaseModel):
    """The optimizer and how its step runs."""

    model_config = _FORBID
    name: Optimizer = "adamw"
    # AdamW's step: "fused" (torch's fused kernel, no temporaries: adamw_torch_fused, the default of transformers with
    # torch >= 2.8 and of Axolotl) or "foreach" (adamw_torch: torch's default implementation on CUDA, whose step
    # allocates sqrt(exp_avg_sq) for every parameter at once).
    adamw_kernel: Literal["fused", "foreach"] = "fused"
    # DeepSpeed ZeRO-3 steps the optimizer one sub-group of its partition at a time (zero_optimization.sub_group_size;
    # DeepSpeed's default 1e9 elements).
    sub_group_size: int = Field(1_000_000_000, ge=1)


class Parallel(BaseModel):
    """GPUs, how the state is split over them, and what goes to the CPU."""

    model_config = _FORBID
    gpus: int = Field(1, ge=1)
    strategy: Parallelism = "none"
    cpu_offload: bool = False  # optimizer state (and, with zero3/fsdp, parameters) on the CPU
    # QLoRA under FSDP or ZeRO-3: does every rank quantize the whole base onto its own GPU before sharding it? None:
    # what the pinned stack does, yes (transformers 5.16 loads a quantized model with a device_map on the rank's GPU,
    # with no ZeRO-3 init and no meta-device ranks for it). False for a loader that quantizes unit by unit.
    load_whole_model: bool | None = None


class Grpo(BaseModel):
    """GRPO's sampling of completions."""

    model_config = _FORBID
    num_generations: int = Field(8, ge=1)  # completions per prompt
    # The completion part of seq_len (TRL's max_completion_length; None: seq_len // 2). TRL asks the model for the
    # logits of completion tokens only.
    max_completion_len: int | None = Field(None, ge=1)
    # Who samples the completions. "transformers": TRL calls the policy's generate() on this GPU (its KV cache and
    # prefill are a phase of their own); "vllm": a vLLM server or colocated engine, whose memory is not modelled.
    generation: Literal["transformers", "vllm"] = "transformers"
    # Completions sampled per generate() call over all GPUs (TRL's generation_batch_size; None: its default,
    # micro-batch × GPUs × gradient accumulation steps).
    generation_batch_size: int | None = Field(None, ge=1)


# The flat name of each grouped field (the CLI's, the engines' and `--json`'s), in the order `flat()` gives them.
FLAT: dict[str, tuple[str, str]] = {
    "method": ("", "method"), "stage": ("", "stage"),
    "seq_len": ("batch", "seq_len"), "micro_batch": ("batch", "micro_batch"), "grad_accum": ("batch", "grad_accum"),
    "gradient_checkpointing": ("compute", "gradient_checkpointing"), "attention": ("compute", "attention"),
    "optimizer": ("optim", "name"),
    "lora_rank": ("lora", "rank"), "lora_targets": ("lora", "targets"), "lora_dropout": ("lora", "dropout"),
    "adapter_dtype": ("lora", "dtype"),
    "autocast": ("precision", "autocast"), "double_quant": ("precision", "double_quant"),
    "quantize_lm_head": ("precision", "quantize_lm_head"), "legacy_bitsandbytes": ("precision", "legacy_bitsandbytes"),
    "sample_packing": ("batch", "sample_packing"), "loss": ("compute", "loss"),
    "gpus": ("parallel", "gpus"), "parallelism": ("parallel", "strategy"), "cpu_offload": ("parallel", "cpu_offload"),
    "load_whole_model": ("parallel", "load_whole_model"),
    "embedding_upcast": ("precision", "embedding_upcast"), "fp32_embeddings": ("precision", "fp32_embeddings"),
    "master_weights": ("precision", "master_weights"),
    "adamw_kernel": ("optim", "adamw_kernel"), "sub_group_size": ("optim", "sub_group_size"),
    "num_generations": ("grpo", "num_generations"), "max_prompt_len": ("batch", "max_prompt_len"),
    "max_completion_len": ("grpo", "max_completion_len"), "generation": ("grpo", "generation"),
    "generation_batch_size": ("grpo", "generation_batch_size"),
}  # fmt: skip
GROUPS = ("batch", "lora", "precision", "compute", "optim", "parallel", "grpo")


class Setting(BaseModel):
    """A training stage as the estimator sees it. Defaults are a common single-GPU QLoRA SFT."""

    model_config = _FORBID

    method: Method = "qlora"
    stage: Stage = "sft"
    batch: Batch = Field(default_factory=Batch)
    lora: Lora = Field(default_factory=Lora)
    precision: Precision = Field(default_factory=Precision)
    compute: Compute = Field(default_factory=Compute)
    optim: Optim = Field(default_factory=Optim)
    parallel: Parallel = Field(default_factory=Parallel)
    grpo: Grpo = Field(default_factory=Grpo)

    @model_validator(mode="before")
    @classmethod
    def _from_flat(cls, data: Any) -> Any:
        """Accept the flat form (`seq_len=…`, `parallelism=…`) beside or instead of the groups; unknown names are
        left for `extra="forbid"` to refuse."""
        if not isinstance(data, dict):
            return data
        out: dict[str, Any] = {}
        for key, value in data.items():
            group, name = FLAT.get(key, ("", key))
            if group:
                out.setdefault(group, {})[name] = value
            elif key in GROUPS and isinstance(value, BaseModel | dict):  # a group given whole: its flat names win
                given = value.model_dump() if isinstance(value, BaseModel) else dict(value)
                out[key] = {**given, **out.get(key, {})}
            else:
                out[key] = value
        return out

    @model_validator(mode="after")
    def _consistent(self) -> Setting:
        if self.parallel.gpus == 1 and self.parallel.strategy not in ("none", "ddp"):
            raise ValueError(f"parallelism {self.parallel.strategy} needs more than one GPU")
        return self

    @property
    def adapter(self) -> bool:
        return self.method != "full"

    def flat(self, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
        """The setting by flat names (`FLAT`), in their order: what `Setting(**flat)` takes back."""
        groups = self.model_dump(mode=mode)
        return {key: groups[name] if not group else groups[group][name] for key, (group, name) in FLAT.items()}

    def with_changes(self, **changes: Any) -> Setting:
        """A copy with fields changed by flat name (`gpus=8, parallelism="fsdp"`), validated again."""
        return Setting(**{**self.flat(), **changes})

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Setting:
        """Refuses flat names, which pydantic would set as new attributes without validating: `with_changes`."""
        flat = [key for key in update or {} if key in FLAT and FLAT[key][0]]
        if flat:
            raise TypeError(f"Setting.model_copy cannot update {flat} (grouped fields): use with_changes()")
        return super().model_copy(update=update, deep=deep)
