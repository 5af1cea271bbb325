"""AWQ / GPTQ 4-bit exports for vLLM through llm-compressor (GPU, in the containers).

`check_quantize_inputs` validates everything that can be checked anywhere (the model dir, the
calibration file and its rows, the scheme) and then refuses clearly where the machine cannot run it
(no CUDA GPU, llm-compressor not installed). `quantize_model` runs llm-compressor's `oneshot` with an
`AWQModifier` or `GPTQModifier` over chat-templated calibration rows and saves compressed-tensors
safetensors that vLLM loads directly.
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ftkit.errors import ExitCode, FtkitError

METHODS = ("awq", "gptq")
SCHEMES = ("W4A16", "W4A16_ASYM", "W8A16", "W8A8")


@dataclass
class QuantizePlan:
    model_dir: Path
    out_dir: Path
    method: str
    scheme: str
    calibration: Path
    samples: int
    max_len: int
    rows_available: int


def row_messages(row: Any) -> list[dict[str, str]] | None:
    """A row of any ftkit format as chat messages (preference: prompt + chosen), or None (plain text)."""
    from ftkit.data.convert import ConversionError, convert_row
    from ftkit.data.formats import detect_format

    fmt = detect_format(row)
    if fmt in ("messages", "alpaca", "sharegpt"):
        try:
            return convert_row(row, "messages")["messages"]
        except (ConversionError, KeyError, TypeError):
            return None
    if fmt in ("preference", "kto"):
        answer = row.get("chosen", row.get("completion"))
        prompt = row.get("prompt")
        if isinstance(prompt, list) and isinstance(answer, list):
            return [*prompt, *answer]
        if isinstance(prompt, str) and isinstance(answer, str):
            return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return None


def _calibration_texts(path: Path, tokenizer: Any | None, limit: int) -> list[str]:
    """Rows of a dataset file (any ftkit format) as chat-templated text for calibration."""
    from ftkit.data.readers import iter_records

    texts: list[str] = []
    for record in iter_records(path):
        if record.error or not isinstance(record.row, dict):
            continue
        messages = row_messages(record.row)
        if messages and tokenizer is not None and getattr(tokenizer, "chat_template", None):
            texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
        elif messages:
            texts.append("\n".join(str(m.get("content", "")) for m in messages))
        elif isinstance(record.row.get("text"), str):
            texts.append(record.row["text"])
        if len(texts) >= limit:
            break
    return texts


def check_quantize_inputs(
    model_dir: Path, out_dir: Path, method: str, scheme: str, calibration: Path, samples: int, max_len: int
) -> QuantizePlan:
    if method not in METHODS:
        raise FtkitError.one(f"method {method!r} is not one of {METHODS}", field="--method", fix="use awq or gptq")
    if scheme not in SCHEMES:
        raise FtkitError.one(f"scheme {scheme!r} is not one of {SCHEMES}", field="--scheme", fix="use W4A16")
    if not (model_dir / "config.json").is_file() or not any(model_dir.glob("*.safetensors")):
        raise FtkitError.one(f"{model_dir} is not a merged model (config.json + *.safetensors)", file=model_dir,
                             fix="merge the adapter first: ftkit export merge RUN_DIR --out DIR")  # fmt: skip
    if not calibration.is_file():
        raise FtkitError.one("calibration data not found", file=calibration,
                             fix="pass --calibration with a JSONL of rows like the training data")  # fmt: skip
    rows = len(_calibration_texts(calibration, None, samples))
    if rows == 0:
        raise FtkitError.one("no usable calibration rows (chat messages, prompt/response or text)",
                             file=calibration, fix="pass the training or held-out JSONL")  # fmt: skip
    plan = QuantizePlan(model_dir, out_dir, method, scheme, calibration, samples, max_len, rows)
    import torch

    if not torch.cuda.is_available():
        raise FtkitError.one(
            f"{method.upper()} {scheme} calibration runs the model on a CUDA GPU; this machine has none "
            f"(inputs checked: {model_dir.name}, {rows} calibration rows)",
            field="--method",
            fix="run it in the recipe's container on a GPU (make recipe … on a GPU VM), or export a GGUF on CPU: "
            "ftkit export gguf MODEL_DIR --quant q8_0",
            code=ExitCode.ENVIRONMENT,
        )
    if importlib.util.find_spec("llmcompressor") is None:
        raise FtkitError.one("llm-compressor is not installed", field="--method",
                             fix="use the recipe's container (containers/ lock installs llmcompressor)",
                             code=ExitCode.ENVIRONMENT)  # fmt: skip
    return plan


def build_modifier(method: str, scheme: str) -> Any:
    if method == "awq":
        from llmcompressor.modifiers.awq import AWQModifier

        return AWQModifier(targets=["Linear"], scheme=scheme, ignore=["lm_head"])
    from llmcompressor.modifiers.quantization import GPTQModifier

    return GPTQModifier(targets="Linear", scheme=scheme, ignore=["lm_head"])


def quantize_model(plan: QuantizePlan) -> dict[str, Any]:
    """Run llm-compressor's oneshot (GPU) and save a compressed-tensors checkpoint vLLM loads."""
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(plan.model_dir)
    model = AutoModelForCausalLM.from_pretrained(plan.model_dir, dtype=torch.bfloat16, device_map="auto")
    texts = _calibration_texts(plan.calibration, tokenizer, plan.samples)
    dataset = Dataset.from_dict({"text": texts})
    oneshot(model=model, dataset=dataset, recipe=[build_modifier(plan.method, plan.scheme)],
            max_seq_length=plan.max_len, num_calibration_samples=len(texts))  # fmt: skip
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(plan.out_dir, save_compressed=True)
    tokenizer.save_pretrained(plan.out_dir)
    result = {**{k: str(v) if isinstance(v, Path) else v for k, v in asdict(plan).items()},
              "calibration_rows": len(texts), "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    (plan.out_dir / "ftkit-quantize.json").write_text(json.dumps(result, indent=2))
    return result
