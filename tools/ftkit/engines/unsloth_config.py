"""The unsloth engine's config file: the TRL engine's YAML plus an `unsloth:` section for the loader.

    unsloth:
      loader: auto                        # auto | unsloth | transformers+peft
      max_seq_length: 2048                # FastLanguageModel.from_pretrained(max_seq_length=...)
      use_gradient_checkpointing: unsloth # "unsloth" | true | false
      random_state: 3407                  # get_peft_model(random_state=...); default: trainer.seed

`lora` keys are PEFT LoraConfig fields, for either loader. `trainer.gradient_checkpointing` follows
`unsloth.use_gradient_checkpointing`, and `trainer.max_length` defaults to `unsloth.max_seq_length`. A whole
config: docs/running-recipes.md, "`engines/unsloth_config.py`: the config file".
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ftkit.engines.trl_config import TrlStageConfig

LOADERS = ("auto", "unsloth", "transformers+peft")


class UnslothArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    loader: Literal["auto", "unsloth", "transformers+peft"] = Field(
        default="auto",
        description="auto: Unsloth on CUDA when it imports, else transformers + PEFT; unsloth: Unsloth or fail",
    )
    max_seq_length: int = Field(default=2048, ge=1, description="FastLanguageModel.from_pretrained max_seq_length")
    use_gradient_checkpointing: Literal["unsloth"] | bool = Field(
        default="unsloth", description='"unsloth" (offloaded checkpoints), true (the HF one) or false'
    )
    random_state: int | None = Field(default=None, description="seeds the LoRA initialisation; default trainer.seed")


class UnslothStageConfig(TrlStageConfig):
    unsloth: UnslothArgs = Field(default_factory=UnslothArgs)


def trainer_defaults(unsloth: dict[str, Any] | None) -> dict[str, Any]:
    """The trainer arguments the `unsloth:` section sets (the same for both loaders)."""
    args = UnslothArgs.model_validate(unsloth or {})
    return {"max_length": args.max_seq_length, "gradient_checkpointing": bool(args.use_gradient_checkpointing)}


def effective_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """`cfg` with the trainer arguments the `unsloth:` section implies filled in (a set `trainer.max_length` wins)."""
    return {**cfg, "trainer": {**trainer_defaults(cfg.get("unsloth")), **(cfg.get("trainer") or {})}}
