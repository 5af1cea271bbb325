"""GPU memory of one training stage, term by term, from the architecture's shapes.

Every term is a pure function of (architecture, setting) returning bytes per GPU: weights (NF4 or bf16), trainable
parameters, gradients, optimizer states (with fp32 masters under DeepSpeed ZeRO or FSDP1), activations saved for
backward, logits, a reference model, and what the optimizer step, GRPO sampling, loading and preparation allocate.
The peak is the largest phase (end of forward, end of backward, optimizer step, sampling, or before training), plus
allocator fragmentation and the CUDA context; ZeRO/FSDP sharding and CPU offload divide terms across GPUs and host.

The model term by term: docs/estimate.md, "`estimate/memory.py`: the memory model".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ftkit.estimate.inputs import Setting
from ftkit.estimate.params import linear_shapes, param_count, resolve_lora_targets
from ftkit.estimate.specs import Architecture

GIB = 2**30
BF16 = 2
FP32 = 4
NF4_BLOCK = 64
NF4_DQ_BLOCK = 256
# reserved / allocated - 1 at the peak: checked against benchmarks/vram_reference.yaml; the H200 runs of the
# recipes measured 0.02-0.38 (median ~0.15), the published "reserved" entries agree best with 0.10.
FRAGMENTATION = 0.10
# What the process holds on the GPU beyond PyTorch's reserved pool (CUDA context, cuBLAS/cuDNN workspaces, kernels
# loaded by bitsandbytes): measured on an H200 (driver 580, CUDA 13, torch 2.11) as device used - reserved after
# training steps, 0.75-1.0 GiB (0.6 GiB right after CUDA initialises); the larger value, for the pre-flight.
CUDA_CONTEXT_GIB = 1.0
LOGIT_BYTES = BF16 + FP32 + FP32
# Chunked cross-entropy (Axolotl's chunked_cross_entropy, torchtune's CEWithChunkedOutputLoss under compile): each
# chunk is upcast and reduced inside one compiled kernel, so only the bf16 logits and their bf16 gradient are ever
# whole: 4.0 bytes per logit, measured on the CPU by benchmarks/loss_memory.py (transformers' loss: 12.0 there).
CHUNKED_LOGIT_BYTES = BF16 + BF16
# Fused linear cross-entropy (Liger; Cut Cross-Entropy keeps less): no logits tensor. Liger's forward computes the
# gradient of the final hidden state (bf16, tokens x hidden) and goes through the vocabulary one chunk of tokens at a
# time, a bf16 logits chunk of tokens x hidden elements rounded up to a power of two (at most twice that), in which its
# kernel writes the gradient: at most 6 bytes per token and hidden unit; with a trainable lm_head (full fine-tuning) it
# also accumulates the lm_head's gradient during the forward. Read from Liger's fused_linear_cross_entropy_forward;
# not measured here (Triton kernels need a GPU).
FUSED_BYTES_PER_HIDDEN = BF16 + 2 * BF16
# What dropout keeps for backward per element: the bool mask of torch's fused dropout (native_dropout, used on CUDA).
# On the CPU torch multiplies by a noise tensor in the input's dtype instead (aten/src/ATen/native/Dropout.cpp).
DROPOUT_MASK = 1


@dataclass(frozen=True)
class Term:
    name: str
    bytes: float
    note: str = ""

    @property
    def gib(self) -> float:
        return self.bytes / GIB


@dataclass
class Breakdown:
    """Per-GPU memory: the terms, the peak PyTorch allocates, what it reserves, and with the CUDA context."""

    terms: list[Term] = field(default_factory=list)
    peak_allocated: float = 0.0
    peak_phase: str = ""
    load_peak: float = 0.0  # before training: loading or preparing the model (0: never more than training keeps)
    load_note: str = ""  # what that peak is
    train_peak: float = 0.0  # the training peak alone (peak_allocated is the larger of it and load_peak)
    trainable_params: int = 0
    total_params: int = 0

    @property
    def reserved(self) -> float:
        """Training fragments the allocator's pool (`FRAGMENTATION`); loading does not: the weights arrive one after
        another and stay (transformers 5 even reserves one block of the model's size up front for them)."""
        return max(self.train_peak * (1 + FRAGMENTATION), self.load_peak)

    @property
    def device_total(self) -> float:
        """What must fit in the GPU: reserved memory plus the CUDA context."""
        return self.reserved + CUDA_CONTEXT_GIB * GIB

    def to_dict(self) -> dict[str, object]:
        return {
            "terms": [{"name": t.name, "gib": round(t.gib, 3), "note": t.note} for t in self.terms],
            "peak_allocated_gib": round(self.peak_allocated / GIB, 3),
            "peak_phase": self.peak_phase,
            "load_peak_gib": round(self.load_peak / GIB, 3),
            "load_note": self.load_note,
            "reserved_gib": round(self.reserved / GIB, 3),
            "device_total_gib": round(self.device_total / GIB, 3),
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "assumptions": {"fragmentation": FRAGMENTATION, "cuda_context_gib": CUDA_CONTEXT_GIB},
        }


# ------------------------------------------------------------------ parameters


def layer_linear_params(arch: Architecture) -> int:
    """Parameters of the linear layers of the decoder blocks (what QLoRA quantizes), biases included."""
    per_layer = sum(i * o for i, o in linear_shapes(arch).values())
    if arch.attention_bias:
        per_layer += arch.num_attention_heads * arch.head_dim + 2 * arch.num_key_value_heads * arch.head_dim
    return per_layer * arch.num_hidden_layers


def nf4_bytes_per_param(double_quant: bool) -> float:
    """4 bits per weight plus the absmax of each block of 64: fp32, or int8 with an fp32 per 256 blocks."""
    if double_quant:
        return 0.5 + 1 / NF4_BLOCK + FP32 / (NF4_BLOCK * NF4_DQ_BLOCK)
    return 0.5 + FP32 / NF4_BLOCK


def lora_targets(arch: Architecture, s: Setting) -> list[str]:
    """The decoder-layer linear modules LoRA wraps (Phi-3's fused qkv_proj / gate_up_proj stand for their
    parts; "all-linear" is every one of them; lm_head is counted separately, see `lora_on_head`)."""
    names = [t for t in s.lora.targets if t != "lm_head"]
    if any(t.replace("_", "-").lower() == "all-linear" for t in names):
        return resolve_lora_targets(arch, "all-linear")
    return resolve_lora_targets(arch, names) if names else []


def lora_on_head(s: Setting) -> bool:
    return "lm_head" in s.lora.targets


def lora_params(arch: Architecture, s: Setting) -> int:
    shapes = linear_shapes(arch)
    targets = lora_targets(arch, s)
    per_layer = sum(s.lora.rank * (shapes[t][0] + shapes[t][1]) for t in targets)
    head = s.lora.rank * (arch.hidden_size + arch.vocab_size) if lora_on_head(s) else 0
    if s.method == "dora":
        per_layer += sum(shapes[t][1] for t in targets)  # one magnitude per output feature
        head += arch.vocab_size if lora_on_head(s) else 0
    return per_layer * arch.num_hidden_layers + head


def model_params(arch: Architecture, s: Setting) -> int:
    """Parameters of the model the stage trains: a reward model swaps the lm_head (vocab x hidden, unless tied to
    the embedding) for a scalar `score` head (hidden x 1), as AutoModelForSequenceClassification with num_labels=1."""
    if s.stage != "reward":
        return param_count(arch)
    head = 0 if arch.tie_word_embeddings else arch.vocab_size * arch.hidden_size
    return param_count(arch) - head + arch.hidden_size


def trainable_params(arch: Architecture, s: Setting) -> int:
    return model_params(arch, s) if s.method == "full" else lora_params(arch, s)


def quantized_head(arch: Architecture, s: Setting) -> bool:
    """QLoRA with lm_head in NF4 as well (a tied head is the embedding, which stays bf16)."""
    return s.method == "qlora" and s.precision.quantize_lm_head and not arch.tie_word_embeddings


def quantized_params(arch: Architecture, s: Setting) -> int:
    """Parameters QLoRA stores in NF4: the decoder's linear layers, and lm_head when it is quantized too."""
    if s.method != "qlora":
        return 0
    head = arch.vocab_size * arch.hidden_size if quantized_head(arch, s) else 0
    return layer_linear_params(arch) + head


def nf4_scale_bytes(arch: Architecture, s: Setting) -> float:
    """The block absmax (and, with double quantization, its second-level scales) of every 4-bit weight. bitsandbytes
    keeps them in each weight's quant_state, an attribute and not a parameter, so FSDP and ZeRO-3 shard only the packed
    4-bit data: every GPU holds all the scales."""
    return quantized_params(arch, s) * (nf4_bytes_per_param(s.precision.double_quant) - 0.5)


def weights(arch: Architecture, s: Setting) -> list[Term]:
    total = model_params(arch, s)
    if s.method == "qlora":
        linear = quantized_params(arch, s)
        where = "the decoder's linear layers" + (" and lm_head" if quantized_head(arch, s) else "")
        per = nf4_bytes_per_param(s.precision.double_quant)
        rest = "embeddings, norms" if quantized_head(arch, s) or s.stage == "reward" else "embeddings, norms, lm_head"
        return [
            Term("weights (nf4)", linear * per, f"{linear / 1e9:.2f}B params in {where}, "
                 f"{per:.3f} bytes each{' (double quant)' if s.precision.double_quant else ''}"),
            Term("weights (bf16)", (total - linear) * BF16, f"{(total - linear) / 1e9:.2f}B: {rest}"),
        ]  # fmt: skip
    if s.method == "full" and s.precision.fp32_embeddings:
        rest = non_linear_params(arch, s)
        return [
            Term("weights (bf16)", (total - rest) * BF16, f"{(total - rest) / 1e9:.2f}B params in the linear layers"),
            Term("weights (fp32)", rest * FP32, f"{rest / 1e9:.2f}B: embeddings, lm_head, norms, kept fp32 (Axolotl "
                 "upcasts them on load and casts back only for adapters, FSDP or flash attention)"),
        ]  # fmt: skip
    return [Term("weights (bf16)", total * BF16, f"{total / 1e9:.2f}B params")]


def largest_linear(arch: Architecture) -> int:
    """Elements of the decoder's largest linear weight."""
    return max(i * o for i, o in linear_shapes(arch).values())


def weight_bytes(arch: Architecture, s: Setting) -> float:
    """Every base weight as stored, unsharded (the `weights` terms together)."""
    return sum(t.bytes for t in weights(arch, s))


def dequantized_weight(arch: Architecture, s: Setting) -> list[Term]:
    """QLoRA: bitsandbytes dequantizes a 4-bit weight to the compute dtype for each matmul (forward and backward),
    so the largest 4-bit matrix is alive in bf16 at the peak; bitsandbytes < 0.43.3 went through an fp16 copy first."""
    if s.method != "qlora":
        return []
    largest = largest_linear(arch)
    name = "a decoder linear layer"
    if quantized_head(arch, s) and arch.vocab_size * arch.hidden_size > largest:
        largest, name = arch.vocab_size * arch.hidden_size, "lm_head"
    copies = 2 if s.precision.legacy_bitsandbytes else 1
    note = f"the largest 4-bit matrix ({name}, {largest / 1e6:.0f}M) in bf16" + (" and fp16" if copies == 2 else "")
    return [Term("dequantized weight (transient)", largest * BF16 * copies, note)]


def _trainable_dtype_bytes(s: Setting) -> int:
    return BF16 if s.method == "full" or s.lora.dtype == "bf16" else FP32


def mixed_precision_adapters(s: Setting) -> bool:
    """fp32 adapters under bf16 autocast: their matmuls run in bf16 on cast copies."""
    return s.method != "full" and s.lora.dtype == "fp32" and s.precision.autocast


def adapter_weights(arch: Architecture, s: Setting) -> list[Term]:
    if s.method == "full":
        return []
    n = lora_params(arch, s)
    note = f"{n / 1e6:.1f}M LoRA params, r={s.lora.rank}, {len(s.lora.targets)} targets"
    out = [Term(f"adapter ({s.lora.dtype})", n * _trainable_dtype_bytes(s), note)]
    if mixed_precision_adapters(s):
        out.append(Term("adapter bf16 copies (autocast cache)", n * BF16, "autocast caches the bf16 cast of each "
                        "fp32 weight that requires grad for the whole forward"))  # fmt: skip
    return out


def trainable_bytes(arch: Architecture, s: Setting) -> float:
    """The trainable parameters at their dtype: bf16 (full) or the adapter's dtype; with `fp32_embeddings` the
    embeddings, lm_head and norms of a full fine-tune count 4 bytes."""
    n = trainable_params(arch, s)
    if s.method == "full" and s.precision.fp32_embeddings:
        return n * BF16 + non_linear_params(arch, s) * (FP32 - BF16)
    return n * _trainable_dtype_bytes(s)


def gradients(arch: Architecture, s: Setting) -> float:
    return trainable_bytes(arch, s)


def optimizer_states(arch: Architecture, s: Setting) -> float:
    n = trainable_params(arch, s)
    if s.optim.name == "adamw":
        return 2 * n * FP32 if s.precision.master_weights else 2 * trainable_bytes(arch, s)
    if s.optim.name in ("adamw_8bit", "paged_adamw_8bit"):
        return 2 * n * 1
    if s.optim.name == "sgd":
        return 0.0
    # Adafactor: a row and a column second-moment vector (fp32) per matrix, a full vector per vector param.
    shapes = linear_shapes(arch)
    if s.method == "full":
        per_layer = sum(i + o for i, o in shapes.values())
        embed = arch.vocab_size + arch.hidden_size
        return FP32 * (per_layer * arch.num_hidden_layers + embed * (1 if arch.tie_word_embeddings else 2))
    per_layer = sum((shapes[t][0] + s.lora.rank) + (s.lora.rank + shapes[t][1]) for t in lora_targets(arch, s))
    return FP32 * per_layer * arch.num_hidden_layers


# ------------------------------------------------------------------ activations


def sequences_per_step(s: Setting) -> int:
    """Sequences in one micro-batch forward: chosen + rejected for pairwise stages. For GRPO the micro-batch already
    counts completions (TRL's per_device_train_batch_size; a prompt's `num_generations` completions are spread over
    micro-batches and devices), each a prompt + completion sequence."""
    if s.stage in ("dpo", "orpo", "reward"):
        return 2 * s.batch.micro_batch
    if s.stage == "kto":
        return 2 * s.batch.micro_batch  # the batch and its mismatched KL batch
    return s.batch.micro_batch


def tokens_per_step(s: Setting) -> int:
    return sequences_per_step(s) * s.batch.seq_len


def tokens_with_grad(s: Setting) -> int:
    """Tokens whose activations and logits are kept for backward: KTO computes the log-probs of its mismatched KL
    batch under no_grad before the policy forward (TRL's KTOTrainer), so only the batch itself keeps anything."""
    sequences = s.batch.micro_batch if s.stage == "kto" else sequences_per_step(s)
    return sequences * s.batch.seq_len


def layer_activation_bytes_per_token(arch: Architecture, s: Setting) -> float:
    """Bytes one decoder layer keeps for backward per token, without checkpointing.

    What autograd keeps in transformers' Llama layer and PEFT's LoRA/DoRA layers, measured with saved-tensor hooks
    (`tests/test_estimate_memory.py` re-measures it). Tensor by tensor: docs/estimate.md, "`estimate/memory.py`:
    activations, logits and the optimizer step".
    """
    h, inter, heads = arch.hidden_size, arch.intermediate_size, arch.num_attention_heads
    q = heads * arch.head_dim
    kv = arch.num_key_value_heads * arch.head_dim
    lse = FP32 * heads
    if s.method == "full":
        per = 16 * h + 4 * q + 4 * kv + 8 * inter + lse + _fp32_residual_extra(arch, s)
    else:
        per = 8 * h + 4 * q + 4 * kv + 6 * inter + lse + _lora_layer_inputs(arch, s) + _legacy_bnb_inputs(arch, s)
    if s.compute.attention == "eager":
        # softmax probabilities: fp32 and their bf16 copy, a row of s per head
        per += heads * s.batch.seq_len * (FP32 + BF16)
    return float(per)


def _fp32_residual_extra(arch: Architecture, s: Setting) -> float:
    """Full fine-tuning with fp32 embeddings and norms (`fp32_embeddings`) under bf16 autocast: the residual stream is
    fp32, so each norm keeps its normalized input in fp32 (2 bytes more than bf16), and each linear layer reading a
    norm's fp32 output makes (and keeps) its own bf16 copy, where in bf16 they all shared one: 2 bytes x hidden per
    extra reader. Llama's layout (q/k/v, gate/up): 10 x hidden. Measured with saved-tensor hooks (the test)."""
    if not (s.method == "full" and s.precision.fp32_embeddings and s.precision.autocast):
        return 0.0
    readers: dict[str, int] = {}
    for name in linear_shapes(arch):
        group = _LORA_INPUT.get(name, "mlp_in")
        readers[group] = readers.get(group, 0) + 1
    extra_readers = sum(readers.get(g, 1) - 1 for g in ("attn_in", "mlp_in"))
    return float(2 * BF16 * arch.hidden_size + extra_readers * BF16 * arch.hidden_size)


# Which tensor each LoRA target reads: targets sharing an input share its saved copy when the adapter
# is bf16 (no cast); the attention output is already kept by the attention kernel.
_LORA_INPUT = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "qkv_proj": "attn_in",
               "o_proj": "attn_out", "gate_proj": "mlp_in", "up_proj": "mlp_in", "gate_up_proj": "mlp_in",
               "down_proj": "mlp_mid", "c_attn": "attn_in", "attn.c_proj": "attn_out", "w1": "mlp_in", "w2": "mlp_in",
               "mlp.c_proj": "mlp_mid"}  # fmt: skip


def _lora_layer_inputs(arch: Architecture, s: Setting) -> float:
    """What the LoRA targets of one layer keep per token. fp32 adapters (PEFT's default): each target an
    fp32 copy of its input (and with dropout the dropped-out copy too). bf16 adapters: each distinct input
    once (bf16), with dropout each target a dropped-out bf16 copy and a bool mask. Plus A's output."""
    shapes = linear_shapes(arch)
    targets = lora_targets(arch, s)
    # The dtype the adapter's own matmuls save in: fp32 only for fp32 adapters without autocast.
    act = FP32 if s.lora.dtype == "fp32" and not s.precision.autocast else BF16
    rank = s.lora.rank * act * len(targets)
    if s.method == "dora":  # DoRA rescales the base output (bf16) and the adapter output (act) per target
        rank += sum((BF16 + act) * shapes[t][1] for t in targets)
    if mixed_precision_adapters(s):
        # Autocast casts each target's input to bf16 for A on its own (casts of activations are not shared); with
        # dropout, the mask too, and DoRA runs the base matmul again on the dropped-out input: one more bf16 copy.
        per_input = BF16
        if s.lora.dropout > 0:
            per_input += DROPOUT_MASK + (BF16 if s.method == "dora" else 0)
        return rank + sum(per_input * shapes[t][0] for t in targets)
    if s.lora.dtype == "fp32":
        return rank + sum(FP32 * shapes[t][0] * (2 if s.lora.dropout > 0 else 1) for t in targets)
    sizes = {"attn_in": arch.hidden_size, "attn_out": 0, "mlp_in": arch.hidden_size, "mlp_mid": arch.intermediate_size}
    shared = sum(BF16 * sizes[g] for g in {_LORA_INPUT.get(t, "mlp_in") for t in targets})
    dropped = sum((BF16 + 1) * shapes[t][0] for t in targets) if s.lora.dropout > 0 else 0
    return rank + shared + dropped


def _legacy_bnb_inputs(arch: Architecture, s: Setting) -> float:
    """bitsandbytes < 0.43.3 kept the input of every 4-bit layer for a backward that never used it
    (bitsandbytes#1270): the normed inputs of attention and MLP, o_proj's input (a contiguous copy of the attention
    output) and down_proj's input, in bf16, except those a bf16 adapter already keeps."""
    if s.method != "qlora" or not s.precision.legacy_bitsandbytes:
        return 0.0
    sizes = {"attn_in": arch.hidden_size, "attn_out": arch.num_attention_heads * arch.head_dim,
             "mlp_in": arch.hidden_size, "mlp_mid": arch.intermediate_size}  # fmt: skip
    kept = {_LORA_INPUT.get(t, "mlp_in") for t in lora_targets(arch, s)} if s.lora.dtype == "bf16" else set()
    return float(sum(BF16 * size for group, size in sizes.items() if group not in kept))


def activations(arch: Architecture, s: Setting) -> list[Term]:
    tokens = tokens_with_grad(s)
    per_layer = layer_activation_bytes_per_token(arch, s)
    layers = arch.num_hidden_layers
    if s.compute.gradient_checkpointing:
        kept = tokens * layers * arch.hidden_size * BF16
        return [
            Term("activations (checkpoints)", kept, f"{layers} layer inputs × {tokens} tokens"),
            *_head_adapter_activations(arch, s),
            Term("activations (one layer recomputed)", tokens * per_layer, f"{per_layer / 1024:.0f} KiB per token"),
        ]
    out = [Term("activations", tokens * layers * per_layer, f"{layers} layers × {tokens} tokens × "
                f"{per_layer / 1024:.0f} KiB")]  # fmt: skip
    return out + _head_adapter_activations(arch, s)


def _head_adapter_activations(arch: Architecture, s: Setting) -> list[Term]:
    out = []
    if s.method != "full" and lora_on_head(s):
        per = FP32 * arch.hidden_size * (2 if s.lora.dropout > 0 else 1) + FP32 * s.lora.rank
        note = "fp32 copy of the final hidden state"
        out.append(Term("activations (lm_head adapter)", tokens_with_grad(s) * per, note))
    if quantized_head(arch, s) and s.precision.legacy_bitsandbytes:
        out.append(Term("activations (4-bit lm_head input)", tokens_with_grad(s) * BF16 * arch.hidden_size,
                        "kept by bitsandbytes < 0.43.3"))  # fmt: skip
    return out


def loss_kernel(s: Setting) -> str:
    """The loss kernel that meets the logits: the setting's for SFT. Preference stages (TRL) compute their log-probs
    from the model's logits themselves, and a reward model has no vocabulary projection, so neither is chunked."""
    return s.compute.loss if s.stage == "sft" else "standard"


def completion_len(s: Setting) -> int:
    """GRPO: the completion part of each prompt + completion sequence."""
    return min(s.grpo.max_completion_len or s.batch.seq_len // 2, s.batch.seq_len)


def logit_tokens(s: Setting) -> int:
    """Tokens whose vocabulary logits exist at the peak. GRPO (TRL 1.9) asks the model for the completion's logits
    only: `logits_to_keep` = the completion length + 1 (the last is dropped after the forward)."""
    if s.stage == "grpo":
        return s.batch.micro_batch * (completion_len(s) + 1)
    return tokens_with_grad(s)


def logit_bytes(s: Setting) -> float:
    """Bytes per logit at the peak (not for a fused loss, which has no logits tensor).

    A chunked SFT loss keeps the bf16 logits and their gradient; ORPO adds 8 bytes over half the logits for its NLL
    term; GRPO keeps 8 (12 with one sequence) over the completion tokens. Why, and how it was measured:
    docs/estimate.md, "`estimate/memory.py`: activations, logits and the optimizer step"."""
    if s.stage == "grpo":
        return max(2 * BF16 + FP32, FP32 + 2 * FP32 / s.batch.micro_batch)
    if loss_kernel(s) == "chunked":
        return CHUNKED_LOGIT_BYTES
    return LOGIT_BYTES + (FP32 + FP32) / 2 if s.stage == "orpo" else LOGIT_BYTES


def logits(arch: Architecture, s: Setting) -> float:
    if s.stage == "reward":
        return 0.0  # a scalar head, no vocabulary projection
    kernel = loss_kernel(s)
    if kernel == "fused":
        head_grad = arch.vocab_size * arch.hidden_size * BF16 if s.method == "full" else 0
        return tokens_with_grad(s) * arch.hidden_size * FUSED_BYTES_PER_HIDDEN + head_grad
    return logit_tokens(s) * arch.vocab_size * logit_bytes(s)


def logits_note(arch: Architecture, s: Setting) -> str:
    tokens = logit_tokens(s)
    if s.stage == "reward":
        return "none: a scalar score head, no vocabulary logits"
    kernel = loss_kernel(s)
    if kernel == "fused":
        head = " + the lm_head gradient it accumulates" if s.method == "full" else ""
        return (
            f"fused linear cross-entropy: no logits tensor; {tokens} tokens × {arch.hidden_size} hidden × "
            f"{FUSED_BYTES_PER_HIDDEN} bytes{head}"
        )
    how = {"chunked": " (chunked cross-entropy)"}.get(kernel, " (completion tokens only)" if s.stage == "grpo" else "")
    return f"{tokens} tokens × {arch.vocab_size} vocab × {logit_bytes(s):g} bytes{how}"


def reference_model(arch: Architecture, s: Setting) -> list[Term]:
    if s.stage not in ("dpo", "kto", "grpo"):
        return []
    if s.adapter:
        return [Term("reference model", 0.0, "the policy with its adapter disabled: no second copy")]
    return [Term("reference model", model_params(arch, s) * BF16, "a frozen bf16 copy of the model")]


# ------------------------------------------------------------------ the whole breakdown


def _deepspeed_masters(s: Setting) -> bool:
    """DeepSpeed ZeRO with fp32 masters: its step copies the gradient partition to fp32."""
    return s.precision.master_weights and s.parallel.strategy.startswith("zero")


def optimizer_step_temporaries(arch: Architecture, s: Setting) -> float:
    """What the optimizer step allocates beyond the weights, gradients and states (the activations are gone by then).

    DeepSpeed ZeRO under bf16 copies one gradient partition (or sub-group) to fp32 for its masters: 6 bytes per
    element, 8 with a foreach AdamW. Without DeepSpeed a foreach AdamW allocates sqrt(exp_avg_sq) for every trainable
    parameter; the fused kernel and the other optimizers nothing of the model's size. Measurements:
    docs/estimate.md, "`estimate/memory.py`: activations, logits and the optimizer step"."""
    if s.optim.name != "adamw" or s.parallel.cpu_offload:  # offloaded: DeepSpeed and FSDP step on the CPU
        return 0.0
    split = _shard(s)["optimizer"]
    if _deepspeed_masters(s):
        elements = trainable_params(arch, s) / split
        if s.parallel.strategy == "zero3":  # a sub-group closes at the parameter that reaches sub_group_size
            largest = max(arch.vocab_size * arch.hidden_size, largest_linear(arch))
            elements = min(elements, s.optim.sub_group_size + largest / split)
        return elements * (FP32 + (FP32 if s.optim.adamw_kernel == "foreach" else BF16))
    if s.optim.adamw_kernel == "foreach":
        return optimizer_states(arch, s) / 2 / split
    return 0.0


# Sampling without gradients, per prompt token of the prefill, beyond the KV cache it writes: 9 bytes per hidden unit
# and 6 per intermediate unit (the gated MLP's activation, up projection and product in bf16, and the residual stream
# and its normed and fp32 copies). Measured on the CPU with transformers' generate() on Llama layers in bf16 under
# autocast: the working set is linear in tokens, no N² term (tests/test_grpo_memory.py).
PREFILL_BYTES_PER_HIDDEN = 9
PREFILL_BYTES_PER_INTERMEDIATE = 6


def kv_cache_bytes_per_token(arch: Architecture) -> float:
    """transformers' DynamicCache: a bf16 key and value per layer, KV head and head dimension."""
    return 2 * arch.num_hidden_layers * arch.num_key_value_heads * arch.head_dim * BF16


def generation_batch(s: Setting) -> int:
    """Completions TRL samples per GPU at once: its generation_batch_size over the GPUs, by default
    per_device_train_batch_size × steps_per_generation, which defaults to the gradient accumulation steps."""
    if s.grpo.generation_batch_size:
        return max(1, s.grpo.generation_batch_size // s.parallel.gpus)
    return s.batch.micro_batch * s.batch.grad_accum


def generation_bytes(arch: Architecture, s: Setting) -> float:
    """GRPO's sampling phase (TRL's generate() on the policy, gradient checkpointing switched off for it so the KV
    cache is used): the larger of the prefill (the prompts' KV cache and the no-grad working set over every prompt
    token) and the last decoding step (the KV cache of every prompt + completion token, the copy DynamicCache's
    torch.cat makes of one layer's keys, and the new tokens' working set). Under ZeRO-3, TRL gathers the whole model
    for it (ds3_gather_for_generation)."""
    if s.stage != "grpo" or s.grpo.generation != "transformers":
        return 0.0
    batch, kv = generation_batch(s), kv_cache_bytes_per_token(arch)
    prompt = s.batch.seq_len - completion_len(s)
    working = PREFILL_BYTES_PER_HIDDEN * arch.hidden_size + PREFILL_BYTES_PER_INTERMEDIATE * arch.intermediate_size
    prefill = batch * prompt * (kv + working)
    last_step = batch * (s.batch.seq_len * kv * (1 + 1 / (2 * arch.num_hidden_layers)) + working)
    gathered = 0.0
    if s.parallel.strategy == "zero3" and not s.parallel.cpu_offload:
        gathered = weight_bytes(arch, s) * (1 - 1 / s.parallel.gpus)
    return max(prefill, last_step) + gathered


def loading_peak(arch: Architecture, s: Setting) -> float:
    """QLoRA sharded by FSDP or ZeRO-3: transformers quantizes a 4-bit model while loading it onto each rank's GPU
    (its bitsandbytes quantizer's device_map; quantized models get neither ZeRO-3 init nor FSDP's meta-device ranks),
    and only then does FSDP or DeepSpeed shard it. For a moment each GPU holds every 4-bit weight with its scales,
    the bf16 rest and the bf16 matrix being quantized. 0 where loading never holds more than training keeps, or
    where `s.parallel.load_whole_model` is False (a loader that quantizes unit by unit)."""
    if s.parallel.load_whole_model is False or s.method != "qlora" or _shard(s)["weights"] == 1:
        return 0.0
    return weight_bytes(arch, s) + largest_linear(arch) * BF16


def non_linear_params(arch: Architecture, s: Setting) -> int:
    """Parameters outside the decoder's linear layers: embeddings, lm_head (or a reward head), norms."""
    return model_params(arch, s) - layer_linear_params(arch)


def preparation_peak(arch: Architecture, s: Setting) -> float:
    """Adapters without weight sharding: loading upcasts the embeddings, lm_head and norms to fp32 (Axolotl's loader;
    for a 4-bit model PEFT's prepare_model_for_kbit_training upcasts every parameter that is not 4-bit, the same
    set) and then casts them back to bf16. At the last upcast the GPU holds the linear layers (4-bit or bf16), those
    parameters in fp32 and the bf16 original of the largest of them. Measured for QLoRA on an H200 as the peak of load
    + preparation (llama-3.1-8b: 8.252 GiB; its reward model: 6.295), `tests/test_estimate_memory.py`; for bf16 LoRA
    the same code path, read (its bf16 linear layers make it a peak only at short sequences)."""
    if s.method == "full" or not s.precision.embedding_upcast or _shard(s)["weights"] > 1:
        return 0.0
    if s.method == "qlora":  # the 4-bit weights (a LitGPT-style 4-bit lm_head among them, not upcast)
        linear, per = quantized_params(arch, s), nf4_bytes_per_param(s.precision.double_quant)
    else:
        linear, per = layer_linear_params(arch), BF16
    largest = arch.vocab_size * arch.hidden_size  # the embedding (or an untied lm_head)
    return linear * per + (model_params(arch, s) - linear) * FP32 + largest * BF16


def gathered_layer_bytes(arch: Architecture, s: Setting) -> float:
    """What FSDP/ZeRO-3 all-gathers for one decoder layer: its linear weights as stored (QLoRA's packed 4-bit data,
    which bnb_4bit_quant_storage=bfloat16 lets FSDP flatten; bf16 otherwise) and its adapters in their dtype."""
    layers = arch.num_hidden_layers
    linear = layer_linear_params(arch) / layers
    stored = linear * 0.5 if s.method == "qlora" else linear * BF16
    adapters = 0.0 if s.method == "full" else lora_params(arch, s) / layers * _trainable_dtype_bytes(s)
    return stored + adapters


def _shard(s: Setting) -> dict[str, int]:
    """How many ways each kind of state is split across GPUs."""
    g = s.parallel.gpus
    split = {"weights": 1, "gradients": 1, "optimizer": 1}
    if s.parallel.strategy in ("zero1", "zero2", "zero3", "fsdp"):
        split["optimizer"] = g
    if s.parallel.strategy in ("zero2", "zero3", "fsdp"):
        split["gradients"] = g
    if s.parallel.strategy in ("zero3", "fsdp"):
        split["weights"] = g
    return split


STEP_TERM = "optimizer step (transient)"
GENERATION_TERM = "generation (KV cache and prefill)"
TRANSIENT = ("gradients", "logits", STEP_TERM, GENERATION_TERM)


def _step_note(s: Setting) -> str:
    if _deepspeed_masters(s):
        where = "one sub-group's" if s.parallel.strategy == "zero3" else "the partition's"
        foreach = s.optim.adamw_kernel == "foreach"
        extra = "and foreach AdamW's sqrt(exp_avg_sq)" if foreach else "and their flat bf16 copy"
        return f"DeepSpeed's fp32 copy of {where} gradients {extra}; only while the optimizer steps"
    return "foreach AdamW's sqrt(exp_avg_sq) for every parameter; adamw_torch_fused allocates none"


def estimate_memory(arch: Architecture, s: Setting) -> Breakdown:
    split = _shard(s)
    out = Breakdown(trainable_params=trainable_params(arch, s), total_params=model_params(arch, s))
    sharded = split["weights"] > 1
    offload_weights = s.parallel.cpu_offload and sharded
    scales = nf4_scale_bytes(arch, s) if sharded else 0.0
    for t in weights(arch, s) + adapter_weights(arch, s) + reference_model(arch, s):
        if t.name == "weights (nf4)" and scales:
            t = Term(t.name, t.bytes - scales, t.note.split(",")[0] + ", their packed 4-bit data")
        if offload_weights and t.name.startswith("weights"):
            t = Term(t.name, 0.0, t.note + "; offloaded to the CPU")
        elif sharded:
            t = Term(t.name, t.bytes / split["weights"], t.note + f"; sharded over {s.parallel.gpus} GPUs")
        out.terms.append(t)
    if scales:
        out.terms.append(Term("nf4 block scales (every GPU)", scales, "each 4-bit weight's quant_state is not a "
                              "parameter: FSDP/ZeRO-3 shard the packed data only"))  # fmt: skip
    if sharded:
        out.terms.append(Term("gathered layer (zero3/fsdp)", 2 * gathered_layer_bytes(arch, s),
                              "one layer's full weights as stored (4-bit packed under QLoRA) and adapters, and the "
                              "next layer prefetched"))  # fmt: skip
    out.terms.extend(dequantized_weight(arch, s))  # a whole matrix on every GPU, sharded or not
    if s.precision.master_weights:
        master = 0.0 if s.parallel.cpu_offload else trainable_params(arch, s) * FP32 / split["optimizer"]
        out.terms.append(Term("fp32 master weights", master, "the optimizer's fp32 copy of the trainable parameters "
                              "(DeepSpeed ZeRO under bf16; FSDP1's upcast flat parameters)"
                              + ("; offloaded to the CPU" if s.parallel.cpu_offload else "")))  # fmt: skip
    opt = 0.0 if s.parallel.cpu_offload else optimizer_states(arch, s) / split["optimizer"]
    out.terms.append(
        Term("optimizer states", opt, f"{s.optim.name}" + ("; offloaded to the CPU" if s.parallel.cpu_offload else ""))
    )
    grads = gradients(arch, s) / split["gradients"]
    how = f"{s.lora.dtype} adapter gradients"
    if s.method == "full":
        how = "bf16; fp32 for the embeddings, lm_head and norms" if s.precision.fp32_embeddings else "bf16"
    out.terms.append(Term("gradients", grads, how))
    acts = activations(arch, s)
    out.terms.extend(acts)
    lg = logits(arch, s)
    out.terms.append(Term("logits", lg, logits_note(arch, s)))
    step = optimizer_step_temporaries(arch, s)
    if step:
        out.terms.append(Term(STEP_TERM, step, _step_note(s)))
    sampling = generation_bytes(arch, s)
    if sampling:
        out.terms.append(Term(GENERATION_TERM, sampling, f"{generation_batch(s)} sequences sampled at once per GPU "
                              f"(generation batch), {s.batch.seq_len - completion_len(s)} prompt + "
                              f"{completion_len(s)} completion tokens; no gradients or activations then"))  # fmt: skip
    resident = sum(t.bytes for t in out.terms if t.name not in TRANSIENT and not t.name.startswith("activations"))
    # With gradient accumulation the gradients of earlier micro-batches are alive during the next forward.
    phases = {
        "end of forward": resident + sum(t.bytes for t in acts) + lg + (grads if s.batch.grad_accum > 1 else 0.0),
        "end of backward": resident + grads + (acts[-1].bytes if s.compute.gradient_checkpointing else 0.0),
        "optimizer step": resident + grads + step,
        "sampling of completions": resident + sampling,  # after the optimizer step: the gradients are None again
    }
    out.peak_phase = max(phases, key=lambda phase: phases[phase])  # the first of equal peaks
    out.peak_allocated = out.train_peak = phases[out.peak_phase]
    before = [
        (loading_peak(arch, s), "model load (the whole 4-bit model on every GPU before it is sharded)"),
        (preparation_peak(arch, s), "model preparation (embeddings, lm_head and norms upcast to fp32 and cast back)"),
    ]
    out.load_peak, out.load_note = max(before, key=lambda item: item[0])
    if out.load_peak > out.peak_allocated:
        out.peak_allocated = out.load_peak
        out.peak_phase = out.load_note
    return out
