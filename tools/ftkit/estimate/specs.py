"""Built-in catalogs for offline estimates: model architectures (from their published config.json)
and GPUs (memory, bf16 throughput, bandwidth, hourly prices with the date each was read).

The data lives in `architectures.py` and `gpus.py`; this module defines their shapes and lookups.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Architecture:
    """The shapes an estimate needs, as in the model's config.json."""

    name: str  # catalog key, e.g. "llama-3.1-8b"
    hf_id: str  # e.g. "meta-llama/Llama-3.1-8B"
    family: str  # llama | mistral | qwen2 | gemma2 | phi3 | qwen (Qwen v1, remote code)
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int  # per attention head (Gemma-2: 256, not hidden_size / heads)
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    attention_bias: bool = False  # q/k/v projections carry a bias (Qwen2)
    source: str = ""  # where the values were read (config.json URL) and when


@dataclass(frozen=True)
class Price:
    provider: str  # runpod | aws | lambda
    on_demand_per_h: float  # USD per GPU-hour
    spot_per_h: float | None
    read: dt.date  # when the price was read
    source: str  # URL (and instance type for AWS, e.g. "p5.48xlarge / 8")
    note: str = ""


@dataclass(frozen=True)
class Gpu:
    name: str  # e.g. "H100 SXM 80GB"
    marketed_gb: int  # the size in the product name
    memory_gib: float  # total device memory as the driver reports it (torch total_memory / 2**30)
    bf16_tflops: float  # dense bf16 tensor-core peak, no sparsity
    mem_bandwidth_gbs: float
    prices: tuple[Price, ...] = field(default_factory=tuple)
    source: str = ""  # datasheet URL
