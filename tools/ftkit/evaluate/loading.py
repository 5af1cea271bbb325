"""Load a fine-tuned model directory for evaluation: safetensors only, no remote code, float32 by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftkit.errors import ExitCode, FtkitError


def load_model(model_dir: str | Path, *, device: str = "cpu", dtype: str = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) from a transformers directory; the model is in eval mode on `device`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = Path(model_dir)
    if not (src / "config.json").is_file():
        raise FtkitError.one(
            f"{src} is not a model directory (no config.json)",
            file=src,
            fix="give the directory written by save_pretrained (merged model, not an adapter)",
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            src, dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=False
        )
    except (OSError, ValueError) as exc:
        raise FtkitError.one(
            f"cannot load the model in {src}: {exc}",
            file=src,
            fix="the directory needs config.json, *.safetensors weights and the tokenizer files",
            code=ExitCode.USAGE,
        ) from exc
    if not getattr(tokenizer, "chat_template", None):
        raise FtkitError.one(
            f"the tokenizer in {src} has no chat template",
            file=src / "tokenizer_config.json",
            field="chat_template",
            fix="save the tokenizer with its chat template",
        )
    return model.to(device).eval(), tokenizer
