"""What Axolotl's own loader does to the dtypes of embeddings, lm_head and norms, which two estimator terms rest on:
`fp32_embeddings` (a single-process full fine-tune with SDPA trains them in fp32) and the preparation peak (adapters
upcast them, then cast them back to bf16)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # imports Axolotl and loads a tiny model through it (seconds)


def _load_through_axolotl(model_dir: Path, tmp_path: Path, adapter: str | None) -> dict[str, str]:
    from axolotl.loaders import ModelLoader, load_tokenizer
    from axolotl.utils.config import normalize_config, validate_config
    from axolotl.utils.dict import DictDefault

    raw = {
        "base_model": str(model_dir), "bf16": True, "sequence_len": 64, "micro_batch_size": 1,
        "gradient_accumulation_steps": 1, "num_epochs": 1, "learning_rate": 1e-4, "optimizer": "adamw_torch",
        "datasets": [{"path": "unused.jsonl", "type": "alpaca"}], "output_dir": str(tmp_path / "out"),
        "attn_implementation": "sdpa", "lora_mlp_kernel": False, "lora_qkv_kernel": False, "lora_o_kernel": False,
    }  # fmt: skip
    if adapter:
        raw |= {"adapter": adapter, "lora_r": 4, "lora_alpha": 8, "lora_target_linear": True}
        raw |= {"load_in_4bit": True} if adapter == "qlora" else {}
    cfg = validate_config(DictDefault(raw))
    normalize_config(cfg)
    model, _ = ModelLoader(cfg, load_tokenizer(cfg)).load()
    return {name: str(p.dtype) for name, p in model.named_parameters() if "embed_tokens" in name or "norm" in name}


def test_a_single_process_full_fine_tune_with_sdpa_keeps_embeddings_and_norms_in_fp32(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("AXOLOTL_DO_NOT_TRACK", "1")
    dtypes = _load_through_axolotl(tiny_llama, tmp_path, adapter=None)
    assert dtypes and set(dtypes.values()) == {"torch.float32"}, dtypes


@pytest.mark.parametrize("adapter", ["lora", "qlora"])
def test_adapters_get_their_embeddings_and_norms_cast_back_to_bf16(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, adapter: str
):
    monkeypatch.setenv("AXOLOTL_DO_NOT_TRACK", "1")
    dtypes = _load_through_axolotl(tiny_llama, tmp_path, adapter=adapter)
    assert dtypes and set(dtypes.values()) == {"torch.bfloat16"}, dtypes
