"""Parameter counts from an `Architecture`, without building the model.

Pure functions of the config fields; `tests/test_estimate_catalog.py` checks them against the real transformers
models built on the meta device, and the LoRA count against PEFT's own count. `linear_shapes` returns each family's
real module names (phi3 and Qwen v1 fuse some projections); `lora_param_count` maps the usual LoRA target names onto
them. Module layout per family: docs/estimate.md, "`estimate/params.py`: module layout per decoder layer".
"""

from __future__ import annotations

from collections.abc import Iterable

from ftkit.estimate.specs import Architecture

USUAL_LINEAR_NAMES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ALL_LINEAR = "all-linear"  # PEFT's shorthand: every linear in the decoder layers, not lm_head

# Target names that stand for other modules of a family: Phi-3's fused projections; Qwen v1's two c_proj.
_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "phi3": {"q_proj": ("qkv_proj",), "k_proj": ("qkv_proj",), "v_proj": ("qkv_proj",),
             "gate_proj": ("gate_up_proj",), "up_proj": ("gate_up_proj",)},
    "qwen": {"c_proj": ("attn.c_proj", "mlp.c_proj")},
}  # fmt: skip


def _norms_per_layer(arch: Architecture) -> int:
    return 4 if arch.family == "gemma2" else 2


def linear_shapes(arch: Architecture) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of every linear module in one decoder layer, by its module name."""
    h, hd, i = arch.hidden_size, arch.head_dim, arch.intermediate_size
    q_out, kv_out = arch.num_attention_heads * hd, arch.num_key_value_heads * hd
    if arch.family == "qwen":
        return {"c_attn": (h, q_out + 2 * kv_out), "attn.c_proj": (q_out, h), "w1": (h, i), "w2": (h, i),
                "mlp.c_proj": (i, h)}  # fmt: skip
    if arch.family == "phi3":
        return {
            "qkv_proj": (h, q_out + 2 * kv_out),
            "o_proj": (q_out, h),
            "gate_up_proj": (h, 2 * i),
            "down_proj": (i, h),
        }
    return {
        "q_proj": (h, q_out),
        "k_proj": (h, kv_out),
        "v_proj": (h, kv_out),
        "o_proj": (q_out, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }


def _bias_per_layer(arch: Architecture) -> int:
    if not arch.attention_bias:
        return 0
    return (arch.num_attention_heads + 2 * arch.num_key_value_heads) * arch.head_dim  # q, k, v biases (Qwen2)


def layer_param_count(arch: Architecture) -> int:
    """Parameters in one decoder layer: linear weights, attention biases and norm weights."""
    weights = sum(n_in * n_out for n_in, n_out in linear_shapes(arch).values())
    return weights + _bias_per_layer(arch) + _norms_per_layer(arch) * arch.hidden_size


def embedding_param_count(arch: Architecture) -> int:
    """Input embeddings plus the lm_head when it is not tied to them."""
    embed = arch.vocab_size * arch.hidden_size
    return embed if arch.tie_word_embeddings else 2 * embed


def param_count(arch: Architecture) -> int:
    """Total parameters of the causal-LM model (what `sum(p.numel() for p in model.parameters())` gives)."""
    return embedding_param_count(arch) + arch.num_hidden_layers * layer_param_count(arch) + arch.hidden_size


def resolve_lora_targets(arch: Architecture, targets: str | Iterable[str]) -> list[str]:
    """The module names LoRA wraps for `targets` ("all-linear" or usual names such as q_proj, v_proj)."""
    shapes = linear_shapes(arch)
    if isinstance(targets, str):
        if targets.replace("_", "-").lower() == ALL_LINEAR:
            return list(shapes)
        targets = [targets]
    aliases = _ALIASES.get(arch.family, {})
    resolved: list[str] = []
    for target in targets:
        names = (target,) if target in shapes else aliases.get(target, ())
        if not names:
            valid = ", ".join([*shapes, *aliases, ALL_LINEAR])
            raise ValueError(f"unknown LoRA target {target!r} for {arch.name} ({arch.family}); valid: {valid}")
        resolved += [name for name in names if name not in resolved]
    return resolved


def lora_param_count(arch: Architecture, rank: int, targets: str | Iterable[str] = ALL_LINEAR) -> int:
    """Trainable LoRA parameters: rank * (in + out) for every targeted linear, in every decoder layer."""
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    shapes = linear_shapes(arch)
    per_layer = sum(rank * sum(shapes[name]) for name in resolve_lora_targets(arch, targets))
    return arch.num_hidden_layers * per_layer
