"""The architectures the GPU bench builds with random weights, checked against ftkit's catalog.

The published config.json values of each model (transformers builds the model from them, rope scaling included),
and, through ftkit, what they must give: the estimator's catalog architecture (`ftkit.estimate.architectures`) and
its parameter count (`ftkit.estimate.params`), so the bench measures exactly the shapes the estimator models.
"""

from __future__ import annotations

from typing import Any

# meta-llama/Llama-3.1-8B-Instruct config.json, published values (head_dim is derived: 4096 / 32 = 128).
LLAMA31_8B_INSTRUCT: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 128256,
}
# Qwen/Qwen2.5-7B-Instruct config.json, published values (q/k/v carry biases in Qwen2's architecture).
QWEN25_7B_INSTRUCT: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "model_type": "qwen2",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 152064,
}
# Qwen/Qwen2.5-1.5B-Instruct config.json, published values (tied embeddings).
QWEN25_1_5B_INSTRUCT: dict[str, Any] = {
    **QWEN25_7B_INSTRUCT,
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "max_window_layers": 21,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "vocab_size": 151936,
}
ARCHITECTURES: dict[str, dict[str, Any]] = {"llama-3.1-8b": LLAMA31_8B_INSTRUCT, "qwen2.5-7b": QWEN25_7B_INSTRUCT,
                                            "qwen2.5-1.5b": QWEN25_1_5B_INSTRUCT}  # fmt: skip
TINY_OVERRIDES: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "bos_token_id": 0,
    "eos_token_id": 511,
}


def catalog_parameters(arch: str) -> int:
    """The parameter count of `arch` by ftkit's estimator (its catalog entry's shapes)."""
    from ftkit.estimate.architectures import lookup
    from ftkit.estimate.params import param_count

    found = lookup(arch)
    if found is None:
        raise SystemExit(f"{arch}: not in ftkit's architecture catalog (ftkit.estimate.architectures)")
    return param_count(found)


def catalog_mismatches(arch: str, values: dict[str, Any]) -> dict[str, list[Any]]:
    """Shape fields where the config values and ftkit's catalog entry for `arch` differ ({} when they agree)."""
    from dataclasses import asdict

    from ftkit.estimate.architectures import lookup
    from ftkit.estimate.from_recipe import architecture_from_config

    ours = asdict(architecture_from_config(values, arch, "gpu bench"))
    theirs = asdict(lookup(arch))  # type: ignore[arg-type]
    # Not shapes: the names, and the context length (the catalog keeps Qwen2.5's YaRN-extended 131072).
    skip = ("name", "hf_id", "source", "max_position_embeddings")
    return {k: [ours[k], theirs[k]] for k in ours if k not in skip and ours[k] != theirs[k]}


def model_values(tiny: bool, arch: str = "llama-3.1-8b") -> dict[str, Any]:
    values = ARCHITECTURES[arch]
    return {**values, **TINY_OVERRIDES} if tiny else dict(values)


def make_config(values: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    skip = ("architectures", "model_type", "torch_dtype")
    return AutoConfig.for_model(values["model_type"], **{k: v for k, v in values.items() if k not in skip})


def count_params_meta(values: dict[str, Any]) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(make_config(values), dtype=torch.bfloat16)
    return sum(p.numel() for p in model.parameters())
