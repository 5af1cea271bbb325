"""GGUF export (llama.cpp or pure Python) and its verification against the source model.

Backends: ``llama.cpp`` (its converter and ``llama-quantize``, via ``LLAMA_CPP_DIR`` or ``/opt/llama.cpp``; any
quant), ``python`` (:mod:`ftkit.export.gguf_writer`; Llama with a byte-level BPE tokenizer, f32/f16/bf16/q8_0) and
``auto`` (llama.cpp when found). Verification feeds the source model and the GGUF, both through transformers, the
same token ids and compares logits within ``REL_TOLERANCE[quant] * max|logit|``, so one setting fits a tiny random
model and a trained one. Backends, tokenizer shims and the measured tolerances: docs/export-and-eval.md,
"`export/gguf.py`: backends and measured tolerances".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftkit.errors import ExitCode, FtkitError, Problem
from ftkit.export.gguf_writer import PYTHON_QUANTS, ProgressFn, bpe_pre_tokenizer, read_json, write_llama_gguf

BACKENDS = ("auto", "llama.cpp", "python")
# Types convert_hf_to_gguf.py writes itself (--outtype).
CONVERT_TYPES = ("f32", "f16", "bf16", "q8_0")
# Types llama-quantize makes from an f16/bf16 GGUF (its TYPE argument). The IQ2/IQ1 types need an
# importance matrix and are left out.
QUANTIZE_TYPES: dict[str, str] = {
    name: name.upper()
    for name in (
        "q4_0",
        "q4_1",
        "q5_0",
        "q5_1",
        "q2_k",
        "q3_k_s",
        "q3_k_m",
        "q3_k_l",
        "q4_k_s",
        "q4_k_m",
        "q5_k_s",
        "q5_k_m",
        "q6_k",
        "iq4_nl",
        "iq4_xs",
    )
}
QUANT_TYPES = (*CONVERT_TYPES, *QUANTIZE_TYPES)

# Default logit tolerance, relative to max|source logit| (measurements in the module docstring).
REL_TOLERANCE: dict[str, float] = {
    "f32": 1e-4,
    "f16": 1e-2,
    "bf16": 5e-2,
    "q8_0": 0.15,
    "q6_k": 0.25,
    **dict.fromkeys(("q5_0", "q5_1", "q5_k_s", "q5_k_m", "q4_k_s", "q4_k_m", "iq4_nl", "iq4_xs"), 0.6),
}
REL_TOLERANCE_DEFAULT = 1.0  # q4_0, q4_1, q3_k_*, q2_k: SmolLM2 q4_0 measured 0.65

DEFAULT_PROMPTS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "How do I bake bread? Answer in 2 steps.",
    "Tell me a joke about computers!",
]

_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")

CONVERT_SHIM = """\
import importlib.util, sys
from pathlib import Path
pre, script, *args = sys.argv[1:]
folder = str(Path(script).resolve().parent)
sys.path.insert(0, folder)
sys.argv = [script, *args]
spec = importlib.util.spec_from_file_location("convert_hf_to_gguf", script)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
def named(original):
    def get_vocab_base_pre(self, tokenizer):
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            print(f"ftkit: pre-tokenizer not in the converter's table; tokenizer.json is plain byte-level: {pre}",
                  file=sys.stderr)
            return pre
    get_vocab_base_pre.ftkit = True
    return get_vocab_base_pre
for mod in list(sys.modules.values()):
    if not Path(getattr(mod, "__file__", None) or "/").resolve().is_relative_to(folder):
        continue
    for obj in list(vars(mod).values()):
        method = vars(obj).get("get_vocab_base_pre") if isinstance(obj, type) else None
        if method is not None and not getattr(method, "ftkit", False):
            obj.get_vocab_base_pre = named(method)
module.main()
"""


@dataclass
class GgufResult:
    path: Path
    quant: str
    backend: str  # "llama.cpp" or "python"
    size_bytes: int
    tensor_count: int
    seconds: float
    fallbacks: dict[str, str] = field(default_factory=dict)  # tensor -> why it was stored at another type
    notes: list[str] = field(default_factory=list)  # anything else done differently from a plain conversion

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "path": str(self.path)}


@dataclass
class GgufCheck:
    max_abs_logit_diff: float
    top1_agreement: float  # fraction of positions whose argmax token matches
    tokens_compared: int
    tolerance: float
    passed: bool
    tokenizer_match: bool  # the prompts' token ids are equal under both tokenizers
    quant: str | None = None
    logit_scale: float = 0.0  # max |source logit|; the default tolerance is relative to it
    mismatched_prompts: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---------------------------------------------------------------------------------------------- llama.cpp


@dataclass(frozen=True)
class LlamaCpp:
    root: Path
    convert_script: Path
    quantize: Path | None
    python: str = sys.executable


def find_llama_cpp(env: Mapping[str, str] | None = None) -> LlamaCpp | None:
    """llama.cpp's converter (and llama-quantize if built) from LLAMA_CPP_DIR, else /opt/llama.cpp."""
    env = os.environ if env is None else env
    root = Path(env.get("LLAMA_CPP_DIR") or "/opt/llama.cpp")
    script = root / "convert_hf_to_gguf.py"
    if not script.is_file():
        return None
    quantize = None
    for candidate in (root / "build" / "bin" / "llama-quantize", root / "llama-quantize"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            quantize = candidate
            break
    if quantize is None and (on_path := shutil.which("llama-quantize", path=env.get("PATH"))):
        quantize = Path(on_path)
    return LlamaCpp(root=root, convert_script=script, quantize=quantize)


def llama_cpp_steps(quant: str, source_dtype: str | None = None) -> tuple[str, str | None]:
    """(converter --outtype, llama-quantize TYPE or None) for one quant type."""
    if quant in CONVERT_TYPES:
        return quant, None
    return ("bf16" if source_dtype == "bfloat16" else "f16"), QUANTIZE_TYPES[quant]


def convert_argv(
    tools: LlamaCpp, model_dir: Path, outfile: Path, outtype: str, pre_fallback: str | None = None
) -> list[str]:
    """argv for convert_hf_to_gguf.py; with pre_fallback, through the shim that names an unknown pre-tokenizer."""
    args = [str(model_dir), "--outfile", str(outfile), "--outtype", outtype]
    if pre_fallback is None:
        return [tools.python, str(tools.convert_script), *args]
    return [tools.python, "-c", CONVERT_SHIM, pre_fallback, str(tools.convert_script), *args]


def quantize_argv(quantize: Path, src: Path, dst: Path, quant: str, threads: int | None = None) -> list[str]:
    """argv for `llama-quantize IN OUT TYPE [THREADS]`."""
    argv = [str(quantize), str(src), str(dst), QUANTIZE_TYPES[quant]]
    return [*argv, str(threads)] if threads else argv


def output_tail(text: str, lines: int = 20) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _run(argv: list[str], what: str, model_dir: Path, fix: str) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise FtkitError.one(
            f"{what} could not start: {exc}", file=argv[0], fix=fix, code=ExitCode.ENVIRONMENT
        ) from exc
    if proc.returncode != 0:
        tail = output_tail(proc.stderr) or output_tail(proc.stdout) or "(no output)"
        raise FtkitError(
            f"{what} failed (exit {proc.returncode})",
            [Problem(f"last lines of its output:\n{tail}", file=str(model_dir), fix=fix)],
            ExitCode.ENGINE_FAILED,
        )


def llama_cpp_tokenizer_json(tokenizer_json: dict[str, Any]) -> dict[str, Any] | None:
    """tokenizer.json rewritten so llama.cpp's converter reads it as the byte-level BPE it is; None if it already does.

    transformers' GGUF loader writes a byte-level BPE with byte_fallback=true and a SentencePiece-style
    decoder (ByteFallback, Fuse, Replace '▁', ByteLevel). The converter takes that shape for a Llama
    SentencePiece vocab and writes tokenizer.ggml.model='llama' with scores and no merges: seen on
    SmolLM2 materialised from its GGUF, whose llama.cpp export then failed the tokenizer check. Turning
    byte fallback off and keeping only the ByteLevel decoder changes no token id: a byte-level
    vocabulary covers every byte, and it has no <0xNN> tokens for byte fallback to use (checked).
    """
    if bpe_pre_tokenizer(tokenizer_json)[0] != "gpt-2":
        return None
    model = tokenizer_json["model"]
    decoder = tokenizer_json.get("decoder") or {}
    if not model.get("byte_fallback") and decoder.get("type") != "Sequence":
        return None
    if any(_BYTE_TOKEN.fullmatch(token) for token in model.get("vocab", {})):
        return None
    byte_level = next(
        (d for d in decoder.get("decoders", []) if d.get("type") == "ByteLevel"),
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    )
    return {**tokenizer_json, "model": {**model, "byte_fallback": False}, "decoder": byte_level}


def stage_model_dir(model_dir: Path, tokenizer_json: dict[str, Any], staging: Path) -> Path:
    """staging/<model name>: links to model_dir's files, with tokenizer.json replaced."""
    staged = staging / model_dir.resolve().name
    staged.mkdir(parents=True)
    for entry in model_dir.iterdir():
        if entry.name != "tokenizer.json":
            (staged / entry.name).symlink_to(entry.resolve())
    (staged / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False), encoding="utf-8")
    return staged


def _export_llama_cpp(
    tools: LlamaCpp, model_dir: Path, out_path: Path, quant: str, progress: ProgressFn | None
) -> list[str]:
    config = read_json(model_dir / "config.json")
    outtype, qtype = llama_cpp_steps(quant, config.get("dtype") or config.get("torch_dtype"))
    if qtype and tools.quantize is None:
        raise FtkitError.one(
            f"quant '{quant}' needs llama-quantize, which was not found on PATH or in {tools.root}/build/bin",
            field="quant",
            fix=(
                f"build it (cmake --build build --target llama-quantize in {tools.root}) "
                f"or pick one of {', '.join(CONVERT_TYPES)}"
            ),
            code=ExitCode.ENVIRONMENT,
        )
    tok_file = model_dir / "tokenizer.json"
    tokenizer_json = read_json(tok_file) if tok_file.is_file() else None
    pre = bpe_pre_tokenizer(tokenizer_json)[0] if tokenizer_json else None
    fixed = llama_cpp_tokenizer_json(tokenizer_json) if tokenizer_json else None
    notes = ["tokenizer.json given to the converter with byte_fallback off (byte-level BPE)"] if fixed else []
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    converted = partial if qtype is None else out_path.with_name(f"{out_path.stem}.{outtype}.partial.gguf")
    steps = 1 if qtype is None else 2
    try:
        with tempfile.TemporaryDirectory(prefix="ftkit-gguf-") as staging:
            source = stage_model_dir(model_dir, fixed, Path(staging)) if fixed else model_dir
            if progress:
                progress("convert", 0, steps)
            _run(
                convert_argv(tools, source, converted, outtype, pre),
                "llama.cpp convert_hf_to_gguf.py",
                model_dir,
                "read the converter's message above; the model must be an architecture llama.cpp supports",
            )
        if qtype is not None:
            assert tools.quantize is not None
            if progress:
                progress("quantize", 1, steps)
            _run(
                quantize_argv(tools.quantize, converted, partial, quant),
                "llama-quantize",
                model_dir,
                f"check that {tools.quantize} matches the converter's llama.cpp version",
            )
        partial.replace(out_path)
    finally:
        converted.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    if progress:
        progress("done", steps, steps)
    return notes


# ---------------------------------------------------------------------------------------------- export


def _unsupported_here(quant: str) -> FtkitError:
    return FtkitError.one(
        f"quant '{quant}' needs llama.cpp (llama-quantize), which is not on this machine",
        field="quant",
        fix=(
            "run the export in the training container (it has llama.cpp in /opt/llama.cpp) or set LLAMA_CPP_DIR "
            f"to a llama.cpp checkout; without llama.cpp these types work: {', '.join(PYTHON_QUANTS)}"
        ),
        code=ExitCode.ENVIRONMENT,
    )


def resolve_backend(backend: str, quant: str, tools: LlamaCpp | None) -> str:
    """Which backend runs this export ("llama.cpp" or "python"), or a FtkitError saying why none can."""
    if quant not in QUANT_TYPES:
        raise FtkitError.one(
            f"unknown GGUF quant type '{quant}'",
            field="quant",
            fix=f"use one of: {', '.join(QUANT_TYPES)}",
        )
    if backend not in BACKENDS:
        raise FtkitError.one(f"unknown GGUF backend '{backend}'", field="backend", fix=f"use one of: {BACKENDS}")
    if backend == "llama.cpp" or (backend == "auto" and tools is not None):
        if tools is None:
            raise FtkitError.one(
                "llama.cpp not found: no convert_hf_to_gguf.py in $LLAMA_CPP_DIR or /opt/llama.cpp",
                field="backend",
                fix="set LLAMA_CPP_DIR to a llama.cpp checkout, or use --backend python (f32, f16, bf16, q8_0)",
                code=ExitCode.ENVIRONMENT,
            )
        return "llama.cpp"
    if quant not in PYTHON_QUANTS:
        raise _unsupported_here(quant)
    return "python"


def gguf_header(path: Path) -> tuple[int, int, int]:
    """(version, tensor count, metadata count) from the 24-byte GGUF header."""
    with path.open("rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:4] != b"GGUF":
        raise FtkitError.one("not a GGUF file (bad magic)", file=path)
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
    return version, n_tensors, n_kv


def export_gguf(
    model_dir: Path,
    out_path: Path,
    quant: str = "f16",
    *,
    backend: str = "auto",
    progress: ProgressFn | None = None,
) -> GgufResult:
    """Export a Hugging Face model folder (safetensors) to one GGUF file."""
    model_dir, out_path, quant = Path(model_dir), Path(out_path), quant.lower()
    tools = find_llama_cpp()
    used = resolve_backend(backend, quant, tools)
    start = time.perf_counter()
    if used == "llama.cpp":
        assert tools is not None
        fallbacks: dict[str, str] = {}
        notes = _export_llama_cpp(tools, model_dir, out_path, quant, progress)
    else:
        report = write_llama_gguf(model_dir, out_path, quant, progress)
        fallbacks, notes = report.fallbacks, report.notes
    return GgufResult(
        path=out_path,
        quant=quant,
        backend=used,
        size_bytes=out_path.stat().st_size,
        tensor_count=gguf_header(out_path)[1],
        seconds=round(time.perf_counter() - start, 3),
        fallbacks=fallbacks,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------- reading


def read_gguf_metadata(path: Path, keys: set[str] | None = None) -> dict[str, Any]:
    """GGUF metadata (all, or only `keys`) through the gguf package's reader (memory-mapped, no tensor copies)."""
    from gguf import GGUFReader

    gguf_header(path)  # a clear error for a file that is not GGUF
    fields = GGUFReader(path).fields
    return {k: f.contents() for k, f in fields.items() if (keys is None or k in keys) and not k.startswith("GGUF.")}


def quant_of(path: Path) -> str | None:
    """The quant name of a GGUF from general.file_type (e.g. 'q8_0', 'q4_k_m'), None if absent."""
    from gguf import LlamaFileType

    file_type = read_gguf_metadata(path, {"general.file_type"}).get("general.file_type")
    if file_type is None:
        return None
    try:
        name = LlamaFileType(int(file_type)).name
    except ValueError:
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()


def default_tolerance(quant: str | None, logit_scale: float) -> float:
    rel = REL_TOLERANCE.get(quant or "", REL_TOLERANCE_DEFAULT)
    return rel * max(logit_scale, 1e-6)


# ---------------------------------------------------------------------------------------------- verify


def render_prompts(tokenizer: Any, prompts: list[str]) -> list[str]:
    """Each prompt as a one-turn chat under the tokenizer's template (plain text without one)."""
    if not getattr(tokenizer, "chat_template", None):
        return list(prompts)
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]


def verify_gguf(
    model_dir: Path,
    gguf_path: Path,
    prompts: list[str] | None = None,
    tolerance: float | None = None,
) -> GgufCheck:
    """Compare a GGUF, loaded back by transformers, with its source model on a few prompts.

    Both models get the source tokenizer's ids (so logits compare position by position); the GGUF's
    own tokenizer is checked separately (tokenizer_match). Texts are encoded without added special
    tokens: the chat template already writes them. passed = logits within tolerance and tokenizers
    equal. tolerance=None: REL_TOLERANCE of the GGUF's quant type times max|source logit|.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, gguf_path = Path(model_dir), Path(gguf_path).resolve()
    quant = quant_of(gguf_path)
    src_tok = AutoTokenizer.from_pretrained(model_dir)
    src = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True).eval()
    # A folder of its own, so a config.json or tokenizer.json beside the GGUF cannot stand in for its contents.
    with tempfile.TemporaryDirectory(prefix="ftkit-gguf-") as tmp:
        link = Path(tmp) / gguf_path.name
        link.symlink_to(gguf_path)
        gg_tok = AutoTokenizer.from_pretrained(tmp, gguf_file=link.name)
        gg = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=link.name, dtype=torch.float32).eval()

    max_diff, scale, agree, total, mismatched = 0.0, 0.0, 0, 0, []
    for i, text in enumerate(render_prompts(src_tok, prompts or DEFAULT_PROMPTS)):
        ids = src_tok(text, add_special_tokens=False)["input_ids"]
        if gg_tok(text, add_special_tokens=False)["input_ids"] != ids:
            mismatched.append(i)
        with torch.no_grad():
            a = src(torch.tensor([ids])).logits[0]
            b = gg(torch.tensor([ids])).logits[0]
        max_diff = max(max_diff, (a - b).abs().max().item())
        scale = max(scale, a.abs().max().item())
        agree += int((a.argmax(-1) == b.argmax(-1)).sum().item())
        total += len(ids)
    tol = default_tolerance(quant, scale) if tolerance is None else tolerance
    return GgufCheck(
        max_abs_logit_diff=max_diff,
        top1_agreement=agree / total if total else 0.0,
        tokens_compared=total,
        tolerance=tol,
        passed=max_diff <= tol and not mismatched,
        tokenizer_match=not mismatched,
        quant=quant,
        logit_scale=scale,
        mismatched_prompts=mismatched,
    )


def describe_gguf_check(check: dict[str, Any]) -> str:
    """One line for a GGUF load-back check (the CLI and the recipe runner print the same)."""
    verdict = "passed" if check["passed"] else "FAILED"
    tokens = "equal" if check["tokenizer_match"] else "DIFFER"
    return (f"loads back with max |logit diff| {check['max_abs_logit_diff']:.3g} (tolerance "
            f"{check['tolerance']:.3g}), top-1 agreement {check['top1_agreement']:.1%}, tokenizer ids {tokens}: "
            f"{verdict}")  # fmt: skip
