"""Keep bitsandbytes 4-bit layers trainable on CPUs with AVX512-BF16.

bitsandbytes 0.50 repacks a `Linear4bit`'s weights for its fused CPU kernel the first time the layer
runs in eval mode without gradients (an evaluation pass) on a CPU with AVX512-BF16, and keeps them
packed. Every later forward pass, in training too, then goes through that inference-only kernel,
which has no autograd formula: PyTorch warns "bitsandbytes::gemv_4bit: an autograd kernel was not
registered ... silently incorrect behavior", and the LoRA layers below it get wrong gradients (seen
here: SmolLM2 QLoRA SFT loss 4.41 -> 3.69 in 12 steps instead of 4.41 -> ~1.9). Turning the
repacking off per layer keeps the plain dequantize + matmul path, which autograd handles.
"""

from __future__ import annotations

from typing import Any


def keep_4bit_layers_trainable(model: Any) -> int:
    """Switch off bitsandbytes' eval-time CPU weight repacking on every 4-bit layer; returns how many."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return 0
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)
