"""Which token ids end an assistant turn: the generation config's eos ids and the tokenizer's EOS."""

from __future__ import annotations

from typing import Any


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


def generation_eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids generation stops at by the model's own config (the tokenizer's EOS if it names none)."""
    config = getattr(model, "generation_config", None)
    return _ids(getattr(config, "eos_token_id", None)) or _ids(tokenizer.eos_token_id)


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends an answer: the generation config's eos ids and the tokenizer's EOS."""
    return list(dict.fromkeys(generation_eos_ids(model, tokenizer) + _ids(tokenizer.eos_token_id)))
