"""The TRL engine's config file: model loading, LoRA and trainer arguments in one YAML.

    base_model: HuggingFaceTB/SmolLM2-135M-Instruct
    stage: sft                     # sft | dpo
    model: {load_in_4bit: true, dtype: bfloat16, attn_implementation: sdpa}
    lora: {r: 16, lora_alpha: 32, lora_dropout: 0.05, target_modules: all-linear}
    dataset: {path: data/sft.jsonl, split: train, val_fraction: 0.1}
    trainer: {learning_rate: 2.0e-4, max_steps: 20, ...}   # SFTConfig / DPOConfig fields

`trainer` keys are checked against TRL's own config dataclass; `lora` against PEFT's LoraConfig.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    load_in_4bit: bool = False
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    bnb_4bit_use_double_quant: bool = True
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] = "sdpa"
    trust_remote_code: bool = False
    pad_token: str | None = Field(default=None, description="Set when the tokenizer has none; never EOS")


class DatasetArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    split: str = "train"
    val_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)


class TrlStageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_model: str
    stage: Literal["sft", "dpo"]
    model: ModelArgs = Field(default_factory=ModelArgs)
    lora: dict[str, Any] | None = Field(default=None, description="peft.LoraConfig arguments; null: full FT")
    dataset: DatasetArgs
    trainer: dict[str, Any] = Field(default_factory=dict)


def trainer_config_class(stage: str) -> type:
    if stage == "dpo":
        from trl import DPOConfig

        return DPOConfig
    from trl import SFTConfig

    return SFTConfig
