"""Training time and cost: FLOPs per token ÷ (a GPU's bf16 peak × an MFU per method), priced per GPU-hour.

FLOPs per token: 2 N per forward pass plus causal attention; 3 forwards for full fine-tuning, 2 for adapters, one
more with gradient checkpointing or a reference model. GRPO's generation is not modelled: its time is a lower bound.
The MFU per method was measured on one GPU and is applied to every GPU of the catalog, so the time is an estimate.
Across nodes, time divides over every GPU of every node at an assumed inter-node efficiency, and cost counts them all.
The FLOPs model and the measurement: docs/estimate.md, "`estimate/timecost.py`: FLOPs per token and MFU".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ftkit.estimate.inputs import Setting
from ftkit.estimate.memory import GIB, estimate_memory, sequences_per_step
from ftkit.estimate.params import param_count
from ftkit.estimate.specs import Architecture, Gpu

# MFU measured on one NVIDIA H200 (2026-12-04, torch 2.11 / CUDA 13, transformers 5.16.1, peft 0.20.0,
# bitsandbytes 0.50.2; benchmarks/results/gpu_recipe_bench-h200-2026-12-04*.json): full fine-tuning of Llama-3.1-8B
# at 2 x 4096 tokens 7,941-8,141 tok/s (0.52-0.53); LoRA r32 7,193 tok/s (0.35); QLoRA r32 6,989 tok/s (0.34) and
# its DPO stage 5,562 tok/s (0.35); DoRA r16 on Qwen2.5-7B 2,735 tok/s (0.12: PEFT rebuilds B·A and the weight norm
# of every target in every forward). Applied to every GPU: elsewhere an estimate.
MFU = {"full": 0.52, "lora": 0.35, "qlora": 0.34, "dora": 0.12}
MFU_SOURCE = "measured on one H200 (2026-12-04); applied to every GPU, so an estimate on any other"
# Stages whose trainer does more than the FLOPs counted here, relative to the method's MFU (same H200 runs, QLoRA):
# TRL's ORPOTrainer 5,503 tok/s (MFU 0.26: an extra full-vocabulary cross-entropy over the chosen half) and
# KTOTrainer 4,419 tok/s (0.27: a separate no-grad forward of the KL batch, small per-step batches), against 0.34
# for SFT and 0.35 for DPO and the reward model.
STAGE_MFU_FACTOR = {"orpo": 0.26 / 0.34, "kto": 0.27 / 0.34}


def mfu(s: Setting) -> float:
    """The MFU the time estimate uses for this setting: the method's, scaled for stages measured to run slower."""
    return MFU[s.method] * STAGE_MFU_FACTOR.get(s.stage, 1.0)


def significant(x: float, digits: int = 4) -> float:
    """`x` rounded to `digits` significant digits: a 2-minute run keeps its 0.03413 h and $0.0751 (a fixed number
    of decimals would round both to 0)."""
    return float(f"{x:.{digits}g}")


# Several nodes: the fraction of the one-node throughput per GPU kept once FSDP/ZeRO-3's all-gathers and
# reduce-scatters cross the network between nodes (InfiniBand/EFA class, 400-3,200 Gb/s per node). An assumption,
# not a measurement: no multi-node run has been timed here.
INTER_NODE_EFFICIENCY = 0.9
INTER_NODE_SOURCE = (
    f"assumed {INTER_NODE_EFFICIENCY:.0%} of one node's throughput per GPU across nodes (not measured: an estimate)"
)
FIT_HEADROOM = 0.95  # fits when the estimate (reserved + CUDA context) is within 95 % of the GPU's memory


def matmul_params(arch: Architecture) -> int:
    embed = arch.vocab_size * arch.hidden_size
    return param_count(arch) if arch.tie_word_embeddings else param_count(arch) - embed


def forward_flops_per_token(arch: Architecture, s: Setting) -> float:
    attention = 2 * arch.num_hidden_layers * s.batch.seq_len * arch.num_attention_heads * arch.head_dim
    return 2 * matmul_params(arch) + attention


def train_flops_per_token(arch: Architecture, s: Setting) -> float:
    forwards = 3.0 if s.method == "full" else 2.0
    if s.compute.gradient_checkpointing:
        forwards += 1
    if s.stage in ("dpo", "kto", "grpo"):
        forwards += 1  # the reference model's forward
    return forwards * forward_flops_per_token(arch, s)


def tokens_per_optimizer_step(s: Setting) -> int:
    return sequences_per_step(s) * s.batch.seq_len * s.batch.grad_accum * s.parallel.gpus


@dataclass
class GpuOption:
    gpu: Gpu
    fits: bool
    need_gib: float  # per GPU: reserved + CUDA context
    hours: float | None
    costs: dict[str, float] = field(default_factory=dict)  # provider -> USD on demand for all GPUs
    spot_costs: dict[str, float] = field(default_factory=dict)

    @property
    def cheapest(self) -> tuple[str, float] | None:
        return min(self.costs.items(), key=lambda kv: kv[1]) if self.costs else None

    def to_dict(self) -> dict[str, object]:
        return {
            "gpu": self.gpu.name,
            "memory_gib": self.gpu.memory_gib,
            "fits": self.fits,
            "bf16": self.gpu.bf16_tflops > 0,
            "need_gib": round(self.need_gib, 2),
            "hours": None if self.hours is None else significant(self.hours),
            "cost_usd": {k: significant(v) for k, v in self.costs.items()},
            "spot_cost_usd": {k: significant(v) for k, v in self.spot_costs.items()},
            "prices_read": {p.provider: str(p.read) for p in self.gpu.prices},
        }


def train_hours(arch: Architecture, s: Setting, tokens: float, gpu: Gpu, nodes: int = 1) -> float | None:
    """Hours on `s.parallel.gpus` GPUs in all (every node's), spread over `nodes` machines."""
    if gpu.bf16_tflops <= 0:
        return None  # no bf16 tensor cores (V100, T4)
    flops = tokens * train_flops_per_token(arch, s)
    scaling = INTER_NODE_EFFICIENCY if nodes > 1 else 1.0
    return flops / (gpu.bf16_tflops * 1e12 * mfu(s) * s.parallel.gpus * scaling) / 3600


def gpu_options(
    arch: Architecture, s: Setting, tokens: float | None, gpus: list[Gpu], nodes: int = 1
) -> list[GpuOption]:
    """Every catalog GPU with whether the setting fits, the time and the cost; those that fit first, GPUs
    without bf16 (V100, T4: no time given) after the others, cheapest first (lowest known on-demand price).
    `s.parallel.gpus` counts the GPUs of all `nodes`: the states shard over all of them, and all are paid for."""
    need = estimate_memory(arch, s).device_total / GIB
    options = []
    for gpu in gpus:
        fits = need <= gpu.memory_gib * FIT_HEADROOM
        hours = train_hours(arch, s, tokens, gpu, nodes) if tokens else None
        opt = GpuOption(gpu, fits, need, hours)
        if hours is not None:
            for price in gpu.prices:
                opt.costs[price.provider] = hours * price.on_demand_per_h * s.parallel.gpus
                if price.spot_per_h is not None:
                    opt.spot_costs[price.provider] = hours * price.spot_per_h * s.parallel.gpus
        options.append(opt)

    def order(o: GpuOption) -> tuple[bool, bool, float, float]:
        cheapest = o.cheapest[1] if o.cheapest else float("inf")
        return (not o.fits, o.gpu.bf16_tflops <= 0, cheapest, o.gpu.memory_gib)

    return sorted(options, key=order)
