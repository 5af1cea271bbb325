"""Pure-Python GGUF writer for Llama-architecture models (no llama.cpp needed).

It writes what llama.cpp's Llama loader and transformers' GGUF loader both read: ``llama.*`` metadata, the tokenizer
as a GPT-2-style byte-level BPE, and the tensors under gguf's names (``attn_q``/``attn_k`` permuted into llama.cpp's
rotary layout). Quant types: f32, f16, bf16 and q8_0; K-quants need llama.cpp. Tensors are converted and written
one at a time, so memory stays near one tensor. Field by field: docs/export-and-eval.md, "`export/gguf_writer.py`:
what is written".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ftkit.errors import ExitCode, FtkitError

ProgressFn = Callable[[str, int, int], None]
"""progress(stage_or_tensor_name, done, total)."""

# quant name -> (GGML type of 2-D weights, general.file_type); the values are gguf enums by name.
PYTHON_QUANTS: dict[str, tuple[str, str]] = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
}
PYTHON_MODEL_TYPES = ("llama",)
LLAMA_CPP_FIX = (
    "export with the llama.cpp backend: the containers have it (/opt/llama.cpp); elsewhere set "
    "LLAMA_CPP_DIR to a llama.cpp checkout with convert_hf_to_gguf.py and a built llama-quantize"
)
_SKIPPED_TENSORS = ("rotary_emb.inv_freq",)


@dataclass(frozen=True)
class LlamaHParams:
    """The hyperparameters a Llama GGUF carries, read from config.json."""

    name: str
    context_length: int
    embedding_length: int
    block_count: int
    feed_forward_length: int
    head_count: int
    head_count_kv: int
    head_dim: int
    rope_freq_base: float
    rms_eps: float
    vocab_size: int
    tie_word_embeddings: bool


@dataclass(frozen=True)
class TensorPlan:
    """One tensor to write: where it comes from, its GGUF name, shape (row-major) and type."""

    hf_name: str
    gguf_name: str
    shape: tuple[int, ...]
    qtype: str  # a gguf.GGMLQuantizationType name
    permute_heads: int | None = None  # rotary permutation over this many heads (attn_q / attn_k)
    note: str | None = None  # why the type differs from the one asked for


@dataclass
class GgufVocab:
    tokens: list[str]
    token_types: list[int]
    pre: str
    special: Any  # gguf.SpecialVocab: merges, special ids, add_bos/add_eos, chat template
    notes: list[str] = field(default_factory=list)


@dataclass
class WriteReport:
    path: Path
    tensor_count: int
    fallbacks: dict[str, str]  # gguf tensor name -> why it was stored at another type
    notes: list[str] = field(default_factory=list)


def _config_problem(model_dir: Path, message: str, field_name: str, fix: str = LLAMA_CPP_FIX) -> FtkitError:
    return FtkitError.one(message, file=model_dir / "config.json", field=field_name, fix=fix, code=ExitCode.ENVIRONMENT)


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FtkitError.one(
            f"{path.name} is missing",
            file=path,
            fix="point at a Hugging Face model folder (config.json, tokenizer.json, *.safetensors)",
        )
    return json.loads(path.read_text(encoding="utf-8"))


def rope_settings(config: dict[str, Any]) -> tuple[str, float]:
    """(rope type, rope base) from a transformers 5 `rope_parameters` or an older `rope_scaling`."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    theta = params.get("rope_theta", config.get("rope_theta", 10000.0))
    return str(rope_type), float(theta)


def llama_hparams(config: dict[str, Any], model_dir: Path) -> LlamaHParams:
    """Validate that config.json describes a plain Llama the python backend can write; raise otherwise."""
    model_type = config.get("model_type")
    if model_type not in PYTHON_MODEL_TYPES:
        raise _config_problem(
            model_dir,
            f"the python GGUF backend writes Llama models only, not model_type '{model_type}' "
            "(transformers must load the GGUF back; qwen2/mistral need llama.cpp's converter)",
            "model_type",
        )
    rope_type, theta = rope_settings(config)
    if rope_type != "default":
        raise _config_problem(
            model_dir,
            f"rope type '{rope_type}' (scaled RoPE) is not written by the python backend",
            "rope_parameters",
        )
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            raise _config_problem(model_dir, f"{flag}=true is not written by the python backend", flag)
    if config.get("hidden_act", "silu") != "silu":
        raise _config_problem(model_dir, f"hidden_act '{config['hidden_act']}' is not Llama's silu", "hidden_act")
    n_head = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // n_head)
    if head_dim % 2:
        raise _config_problem(model_dir, f"head_dim {head_dim} is odd: rotary needs pairs", "head_dim")
    return LlamaHParams(
        name=model_dir.resolve().name,
        context_length=int(config.get("max_position_embeddings", 2048)),
        embedding_length=hidden,
        block_count=int(config["num_hidden_layers"]),
        feed_forward_length=int(config["intermediate_size"]),
        head_count=n_head,
        head_count_kv=int(config.get("num_key_value_heads") or n_head),
        head_dim=head_dim,
        rope_freq_base=theta,
        rms_eps=float(config.get("rms_norm_eps", 1e-6)),
        vocab_size=int(config["vocab_size"]),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
    )


# ---------------------------------------------------------------------------------------------- tokenizer


def _unwrap_sequence(node: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        return list(node.get(key) or [])
    return [node]


def bpe_pre_tokenizer(tokenizer_json: dict[str, Any]) -> tuple[str | None, str]:
    """The llama.cpp pre-tokenizer name that matches tokenizer.json, or (None, why not).

    Only a plain GPT-2 byte-level BPE is recognised (ByteLevel with the GPT-2 regex, no prefix
    space, no normaliser): that is ``gpt-2``. Anything else (Llama-3 / Qwen2 split regexes,
    SentencePiece) needs llama.cpp's converter, which knows those tokenizers by their behaviour.
    """
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE":
        return None, f"tokenizer model is {model.get('type')!r}, not BPE"
    if model.get("ignore_merges"):
        return None, "tokenizer model has ignore_merges=true (a Llama-3 style BPE)"
    if _unwrap_sequence(tokenizer_json.get("normalizer"), "normalizers"):
        return None, "tokenizer has a normalizer"
    pre = _unwrap_sequence(tokenizer_json.get("pre_tokenizer"), "pretokenizers")
    kinds = [p.get("type") for p in pre]
    if kinds != ["ByteLevel"]:
        return None, f"pre-tokenizer is {kinds or 'none'}, not a single ByteLevel"
    if not pre[0].get("use_regex", True) or pre[0].get("add_prefix_space", False):
        return None, "ByteLevel pre-tokenizer without the GPT-2 regex or with add_prefix_space"
    return "gpt-2", ""


def build_vocab(model_dir: Path, vocab_size: int) -> GgufVocab:
    """Tokens, token types and special tokens of a byte-level BPE tokenizer, padded to vocab_size."""
    from gguf import SpecialVocab, TokenType

    tok_file = model_dir / "tokenizer.json"
    tj = read_json(tok_file)
    pre, why = bpe_pre_tokenizer(tj)
    if pre is None:
        raise FtkitError.one(
            f"the python GGUF backend writes GPT-2-style byte-level BPE tokenizers only: {why}",
            file=tok_file,
            field="pre_tokenizer",
            fix=LLAMA_CPP_FIX,
            code=ExitCode.ENVIRONMENT,
        )
    by_id: dict[int, tuple[str, int]] = {i: (t, TokenType.NORMAL) for t, i in tj["model"]["vocab"].items()}
    for added in tj.get("added_tokens", []):
        kind = TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED
        by_id[int(added["id"])] = (added["content"], kind)
    n_tok = max(by_id) + 1
    if n_tok > vocab_size:
        raise FtkitError.one(
            f"the tokenizer has {n_tok} tokens but the model's vocab_size is {vocab_size}",
            file=model_dir / "config.json",
            field="vocab_size",
            fix="resize the token embeddings to the tokenizer (model.resize_token_embeddings) and save again",
        )
    notes = []
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        text, kind = by_id.get(i, (f"[PAD{i}]", TokenType.UNUSED))
        tokens.append(text)
        types.append(int(kind))
    if vocab_size > n_tok:
        notes.append(f"vocab padded from {n_tok} to {vocab_size} with unused [PAD] tokens")
    special = SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    if not special.merges:
        raise FtkitError.one("tokenizer.json has no BPE merges", file=tok_file, field="model.merges")
    special.add_special_token.setdefault("bos", False)  # GPT-2 BPE adds no BOS unless the tokenizer says so
    return GgufVocab(tokens=tokens, token_types=types, pre=pre, special=special, notes=notes)


# ---------------------------------------------------------------------------------------------- tensors


def safetensors_index(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> the .safetensors file holding it (single file or sharded with an index)."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index)["weight_map"]
        return {name: model_dir / fname for name, fname in weight_map.items()}
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FtkitError.one(
            "no *.safetensors weights in the model folder",
            file=model_dir,
            fix="save the model with save_pretrained(..., safe_serialization=True)",
        )
    from safetensors import safe_open

    out: dict[str, Path] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            out.update(dict.fromkeys(st.keys(), f))
    return out


def tensor_shapes(index: dict[str, Path]) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for f in sorted(set(index.values())):
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shapes[name] = tuple(st.get_slice(name).get_shape())
    return shapes


def choose_qtype(shape: tuple[int, ...], quant: str) -> tuple[str, str | None]:
    """GGML type for one tensor: 1-D stays F32; rows that do not fill whole blocks fall back to F16."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    target = PYTHON_QUANTS[quant][0]
    if len(shape) < 2:
        return "F32", None
    block = GGML_QUANT_SIZES[GGMLQuantizationType[target]][0]
    if shape[-1] % block:
        return "F16", f"row size {shape[-1]} is not a multiple of the {target} block size {block}: stored as F16"
    return target, None


def plan_tensors(shapes: dict[str, tuple[int, ...]], hp: LlamaHParams, quant: str) -> list[TensorPlan]:
    """Map HF tensor names to GGUF names and types, in source order; raise on a tensor we cannot place."""
    from gguf import MODEL_ARCH, get_tensor_name_map

    name_map = get_tensor_name_map(MODEL_ARCH.LLAMA, hp.block_count)
    plans = []
    for hf_name, shape in shapes.items():
        if hf_name.endswith(_SKIPPED_TENSORS) or (hp.tie_word_embeddings and hf_name == "lm_head.weight"):
            continue
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise FtkitError.one(
                f"tensor '{hf_name}' has no place in a Llama GGUF",
                field=hf_name,
                fix=LLAMA_CPP_FIX,
                code=ExitCode.ENVIRONMENT,
            )
        qtype, note = choose_qtype(shape, quant)
        heads = None
        if gguf_name.endswith("attn_q.weight"):
            heads = hp.head_count
        elif gguf_name.endswith("attn_k.weight"):
            heads = hp.head_count_kv
        plans.append(TensorPlan(hf_name, gguf_name, shape, qtype, heads, note))
    if not hp.tie_word_embeddings and not any(p.gguf_name == "output.weight" for p in plans):
        raise FtkitError.one(
            "tie_word_embeddings is false but there is no lm_head.weight",
            field="lm_head.weight",
            fix="save the full model (lm_head included) with save_pretrained",
        )
    return plans


def permute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder each head's rows from HF's rotate-half layout to llama.cpp's interleaved pairs."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def encode(data: np.ndarray, qtype: str) -> np.ndarray:
    """float32 -> the bytes (or float array) gguf stores for this GGML type."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    if qtype == "F32":
        return data.astype(np.float32, copy=False)
    if qtype == "F16":
        return data.astype(np.float16)
    return quantize(data, GGMLQuantizationType[qtype])


def tensor_info(plan: TensorPlan) -> tuple[tuple[int, ...], np.dtype, int, Any]:
    """(shape, dtype, nbytes, raw_dtype) for GGUFWriter.add_tensor_info, without reading the data."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quant_shape_to_byte_shape

    if plan.qtype in ("F32", "F16"):
        dtype = np.dtype(np.float32 if plan.qtype == "F32" else np.float16)
        return plan.shape, dtype, int(np.prod(plan.shape)) * dtype.itemsize, None
    qt = GGMLQuantizationType[plan.qtype]
    byte_shape = quant_shape_to_byte_shape(plan.shape, qt)
    return byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), qt


def _read_tensors(index: dict[str, Path], plans: list[TensorPlan]) -> Iterator[tuple[TensorPlan, np.ndarray]]:
    import torch
    from safetensors import safe_open

    with ExitStack() as stack:
        handles: dict[Path, Any] = {}
        for plan in plans:
            f = index[plan.hf_name]
            if f not in handles:
                handles[f] = stack.enter_context(safe_open(str(f), framework="pt"))
            yield plan, handles[f].get_tensor(plan.hf_name).to(torch.float32).numpy()


# ---------------------------------------------------------------------------------------------- writing


def _add_metadata(w: Any, hp: LlamaHParams, vocab: GgufVocab, quant: str) -> None:
    from gguf import GGML_QUANT_VERSION, LlamaFileType

    w.add_type("model")
    w.add_name(hp.name)
    w.add_context_length(hp.context_length)
    w.add_embedding_length(hp.embedding_length)
    w.add_block_count(hp.block_count)
    w.add_feed_forward_length(hp.feed_forward_length)
    w.add_head_count(hp.head_count)
    w.add_head_count_kv(hp.head_count_kv)
    w.add_rope_freq_base(hp.rope_freq_base)
    w.add_layer_norm_rms_eps(hp.rms_eps)
    w.add_vocab_size(hp.vocab_size)
    w.add_rope_dimension_count(hp.head_dim)
    w.add_key_length(hp.head_dim)
    w.add_value_length(hp.head_dim)
    w.add_file_type(LlamaFileType[PYTHON_QUANTS[quant][1]])
    w.add_quantization_version(GGML_QUANT_VERSION)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.token_types)
    w.add_add_space_prefix(False)
    vocab.special.add_to_gguf(w, quiet=True)


def write_llama_gguf(model_dir: Path, out_path: Path, quant: str, progress: ProgressFn | None = None) -> WriteReport:
    """Write model_dir (a Llama saved as safetensors) to out_path as GGUF with the given quant type."""
    from gguf import MODEL_ARCH, MODEL_ARCH_NAMES, GGUFWriter

    if quant not in PYTHON_QUANTS:
        raise ValueError(f"python backend quant types are {sorted(PYTHON_QUANTS)}, not {quant!r}")
    hp = llama_hparams(read_json(model_dir / "config.json"), model_dir)
    vocab = build_vocab(model_dir, hp.vocab_size)
    index = safetensors_index(model_dir)
    plans = plan_tensors(tensor_shapes(index), hp, quant)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    writer = GGUFWriter(None, MODEL_ARCH_NAMES[MODEL_ARCH.LLAMA])
    try:
        _add_metadata(writer, hp, vocab, quant)
        for plan in plans:
            shape, dtype, nbytes, raw = tensor_info(plan)
            writer.add_tensor_info(plan.gguf_name, shape, dtype, nbytes, raw_dtype=raw)
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for done, (plan, data) in enumerate(_read_tensors(index, plans), start=1):
            if plan.permute_heads:
                data = permute_rotary(data, plan.permute_heads)
            writer.write_tensor_data(encode(data, plan.qtype))
            if progress:
                progress(plan.gguf_name, done, len(plans))
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    tmp.replace(out_path)
    fallbacks = {p.gguf_name: p.note for p in plans if p.note}
    return WriteReport(path=out_path, tensor_count=len(plans), fallbacks=fallbacks, notes=vocab.notes)
