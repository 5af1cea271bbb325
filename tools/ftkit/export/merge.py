"""Merge a LoRA adapter into its base model with PEFT, in bf16 (or the dtype asked for).

An adapter trained on a 4-bit base is merged into the base loaded *unquantized*: merging into a
bitsandbytes 4-bit layer keeps the result 4-bit and lossy (peft #2321, #2501).
"""

from __future__ import annotations

import json
from pathlib import Path


def merge_adapter(base: str, adapter_dir: Path, out_dir: Path, dtype: str = "bfloat16") -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype), use_safetensors=True)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    # The adapter dir holds the tokenizer the stage trained with (special tokens, chat template).
    tok_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base
    tok = AutoTokenizer.from_pretrained(tok_src)
    tok.save_pretrained(out_dir)
    # generation_config must stop at the tokenizer's EOS (end of turn).
    merged.generation_config.eos_token_id = tok.eos_token_id
    merged.generation_config.pad_token_id = tok.pad_token_id
    merged.generation_config.save_pretrained(out_dir)
    (out_dir / "ftkit-merge.json").write_text(
        json.dumps({"base": base, "adapter": str(adapter_dir), "dtype": dtype}, indent=2)
    )
    return out_dir
