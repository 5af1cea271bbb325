"""Entry point of the unsloth engine's training process: `python -m ftkit.engines.unsloth_train CONFIG HISTORY`.

The TRL engine's process (`ftkit.engines.trl_train`) with another loader hook. On CUDA, with `unsloth` importable,
Unsloth's `FastLanguageModel.from_pretrained` loads (and patches) the model and `FastLanguageModel.get_peft_model`
attaches the LoRA adapter; TRL's SFTTrainer/DPOTrainer then train it. Elsewhere (a CPU: Unsloth raises on import
without a GPU) the same LoRA and trainer arguments go through transformers + PEFT. `unsloth.loader` can insist on
one of them. Which one ran is written beside the history file and lands in the run's metrics.json.

Unsloth is imported only here, only on CUDA, and before transformers/TRL/PEFT (it patches them on import).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from ftkit.engines.trl_train import (
    TRANSFORMERS_PEFT,
    LoadedModel,
    Loader,
    load_transformers,
    set_pad_token,
    torch_dtype,
)
from ftkit.engines.trl_train import main as trl_main
from ftkit.engines.unsloth_config import UnslothStageConfig, trainer_defaults

UNSLOTH = "unsloth"


class LoaderUnavailable(RuntimeError):
    """`unsloth.loader: unsloth` on a machine where Unsloth cannot run."""


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def unsloth_import_error() -> str | None:
    """None when `import unsloth` works, else why not. Call only on CUDA: without a GPU the import raises."""
    try:
        importlib.import_module("unsloth")
    except Exception as exc:  # ImportError, or Unsloth's own errors (no GPU, an unsupported torch/CUDA)
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def choose_loader(requested: str, cuda: bool, import_error: Any = unsloth_import_error) -> tuple[str, str]:
    """(loader, reason) for `unsloth.loader` = auto | unsloth | transformers+peft on this machine.

    `import_error` is called (importing unsloth) only when CUDA is there and Unsloth is wanted."""
    if requested == TRANSFORMERS_PEFT:
        return TRANSFORMERS_PEFT, "unsloth.loader: transformers+peft"
    if not cuda:
        why = "no CUDA GPU (Unsloth needs one)"
        if requested == UNSLOTH:
            raise LoaderUnavailable(f"unsloth.loader is 'unsloth' but this machine has {why}")
        return TRANSFORMERS_PEFT, why
    error = import_error()
    if error is None:
        return UNSLOTH, "CUDA GPU and `import unsloth` works"
    if requested == UNSLOTH:
        raise LoaderUnavailable(f"unsloth.loader is 'unsloth' but `import unsloth` failed: {error}")
    return TRANSFORMERS_PEFT, f"`import unsloth` failed: {error}"


def adapter_seed(cfg: UnslothStageConfig) -> int:
    return cfg.unsloth.random_state if cfg.unsloth.random_state is not None else int(cfg.trainer.get("seed", 42))


def unsloth_lora_kwargs(cfg: UnslothStageConfig) -> dict[str, Any]:
    """`FastLanguageModel.get_peft_model` keyword arguments from the `lora:` and `unsloth:` sections."""
    lora = dict(cfg.lora or {})
    lora.pop("task_type", None)  # Unsloth sets CAUSAL_LM itself
    return {
        "r": lora.pop("r", 8),
        "target_modules": lora.pop("target_modules", None),
        "lora_alpha": lora.pop("lora_alpha", 8),
        "lora_dropout": lora.pop("lora_dropout", 0.0),
        "bias": lora.pop("bias", "none"),
        "use_gradient_checkpointing": cfg.unsloth.use_gradient_checkpointing,
        "random_state": adapter_seed(cfg),
        "use_rslora": lora.pop("use_rslora", False),
        "loftq_config": lora.pop("loftq_config", None),
        **lora,  # any other LoraConfig field (modules_to_save, ...): get_peft_model takes **kwargs
    }


def load_unsloth(cfg: UnslothStageConfig) -> LoadedModel:
    """FastLanguageModel loads and patches the model, then attaches the LoRA adapter itself."""
    from unsloth import FastLanguageModel

    if cfg.lora is None:
        sys.exit("the unsloth engine trains LoRA/QLoRA adapters: set `lora:` in the engine config")
    model, tok = FastLanguageModel.from_pretrained(
        model_name=cfg.base_model,
        max_seq_length=cfg.unsloth.max_seq_length,
        dtype=None if cfg.model.dtype == "auto" else torch_dtype(cfg.model.dtype),  # None: Unsloth picks bf16/fp16
        load_in_4bit=cfg.model.load_in_4bit,
        trust_remote_code=cfg.model.trust_remote_code,
        use_gradient_checkpointing=cfg.unsloth.use_gradient_checkpointing,
    )
    set_pad_token(tok, cfg)
    model.config.pad_token_id = tok.pad_token_id
    model = FastLanguageModel.get_peft_model(model, **unsloth_lora_kwargs(cfg))
    return LoadedModel(model, tok, UNSLOTH, None, adapter_seed(cfg), trainer_defaults(cfg.unsloth.model_dump()))


def load_fallback(cfg: UnslothStageConfig) -> LoadedModel:
    """transformers + PEFT with the same LoRA arguments, adapter seed and trainer arguments."""
    loaded = load_transformers(cfg)
    loaded.adapter_seed = adapter_seed(cfg)
    loaded.trainer_args = trainer_defaults(cfg.unsloth.model_dump())
    return loaded


def pick_loader(cfg: UnslothStageConfig) -> Loader:
    try:
        name, reason = choose_loader(cfg.unsloth.loader, cuda_available())
    except LoaderUnavailable as exc:
        sys.exit(f"{exc}. Fix: run on a CUDA machine with unsloth installed (the recipe's container), or set "
                 "unsloth.loader to auto or transformers+peft.")  # fmt: skip
    load = load_unsloth if name == UNSLOTH else load_fallback

    def loader(c: Any) -> LoadedModel:
        loaded = load(c)
        loaded.reason = reason
        return loaded

    return loader


def main(argv: list[str] | None = None) -> None:
    trl_main(argv, UnslothStageConfig, pick_loader, module="ftkit.engines.unsloth_train")


if __name__ == "__main__":
    main()
