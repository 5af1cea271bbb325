"""Entry point of the TRL engine's training process: `python -m ftkit.engines.trl_train CONFIG HISTORY`.

Loads the model (4-bit through bitsandbytes when asked), attaches a LoRA adapter through PEFT, trains with TRL's
SFTTrainer or DPOTrainer, and appends every log record to HISTORY as a JSON line. SIGTERM saves a checkpoint and
exits with code 6 (`ftkit.engines.trainer_callbacks`). The model loader is a hook (`Loader`) that the unsloth engine
replaces. In full: docs/running-recipes.md, "`engines/trl_train.py`: the TRL training process".
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ftkit.engines.forward_sigterm import StopRequest
from ftkit.engines.trl_config import TrlStageConfig, trainer_config_class

LOADER_FILE = "loader.json"  # beside the history file: {"loader": name, "reason": ..., "trainer_args": {...}}
TRANSFORMERS_PEFT = "transformers+peft"


@dataclass
class LoadedModel:
    """What a loader hands the trainer: the model, its tokenizer, and how the adapter is attached."""

    model: Any
    tokenizer: Any
    loader: str  # which loader ran: "transformers+peft" or "unsloth"
    peft_config: Any = None  # a LoraConfig for the trainer to attach; None when the loader attached it (or full FT)
    adapter_seed: int | None = None  # seeds the adapter's initialisation (default: the trainer's seed)
    trainer_args: dict[str, Any] = field(default_factory=dict)  # defaults the loader sets; `trainer:` keys win
    reason: str = ""  # why this loader (written to the loader record)


Loader = Callable[[TrlStageConfig], LoadedModel]


def torch_dtype(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def set_pad_token(tok: Any, cfg: TrlStageConfig) -> None:
    """Apply `model.pad_token`; refuse a missing pad token or one equal to EOS (the model would never learn to stop)."""
    if cfg.model.pad_token:
        tok.pad_token = cfg.model.pad_token
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        sys.exit(
            f"{cfg.base_model}: pad token {tok.pad_token!r} is missing or equals EOS; with pad masked from the "
            "loss the model never learns to stop. Set model.pad_token to a distinct token."
        )


def load_transformers(cfg: TrlStageConfig) -> LoadedModel:
    """transformers (+ bitsandbytes 4-bit) for the model; PEFT's LoraConfig for the trainer to attach."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    tok = AutoTokenizer.from_pretrained(cfg.base_model, trust_remote_code=cfg.model.trust_remote_code)
    set_pad_token(tok, cfg)
    dtype = torch_dtype(cfg.model.dtype)
    quant = None
    if cfg.model.load_in_4bit:
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=cfg.model.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=cfg.model.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=dtype,
        )
    model = AutoModelForCausalLM.from_pretrained(
        cfg.base_model,
        dtype=dtype,
        quantization_config=quant,
        attn_implementation=cfg.model.attn_implementation,
        trust_remote_code=cfg.model.trust_remote_code,
        use_safetensors=True,
    )
    model.config.pad_token_id = tok.pad_token_id
    if quant is not None and not torch.cuda.is_available():
        from ftkit.engines.bnb_cpu import keep_4bit_layers_trainable

        keep_4bit_layers_trainable(model)  # an evaluation would otherwise break later training steps
    peft_config = None
    if cfg.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="CAUSAL_LM", **cfg.lora)
    return LoadedModel(model, tok, TRANSFORMERS_PEFT, peft_config)


def _as_dpo_pairs(row: dict[str, Any]) -> dict[str, Any]:
    """Schema form (prompt + full chosen/rejected conversations) -> TRL's conversational pair form."""
    prompt = row["prompt"]
    prompt_msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt

    def answer(conv: Any) -> list[dict[str, str]]:
        if isinstance(conv, str):
            return [{"role": "assistant", "content": conv}]
        return [conv[-1]]

    return {"prompt": prompt_msgs, "chosen": answer(row["chosen"]), "rejected": answer(row["rejected"])}


def _load_rows(load_dataset: Any, path: str, split: str) -> Any:
    """A local JSONL/JSON/Parquet file, or a dataset on the Hugging Face Hub (`owner/name`)."""
    local = Path(path)
    if local.is_file():
        return load_dataset("parquet" if local.suffix == ".parquet" else "json", data_files=path, split=split)
    return load_dataset(path, split=split)


def write_loader_record(history: Path, loaded: LoadedModel) -> Path:
    """Which loader ran, why, and the trainer arguments it set: `LOADER_FILE` beside the history file."""
    path = history.with_name(LOADER_FILE)
    record = {"loader": loaded.loader, "reason": loaded.reason, "trainer_args": loaded.trainer_args}
    path.parent.mkdir(parents=True, exist_ok=True)  # a checkpoint dir (SageMaker) may not exist before training
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"ftkit: loader {loaded.loader}" + (f" ({loaded.reason})" if loaded.reason else ""), flush=True)
    return path


def train(cfg: TrlStageConfig, history: Path, flag: StopRequest, loader: Loader = load_transformers) -> None:
    loaded = loader(cfg)
    write_loader_record(history, loaded)
    import torch
    from datasets import load_dataset

    data = _load_rows(load_dataset, cfg.dataset.path, cfg.dataset.split)
    if cfg.stage == "dpo":
        data = data.map(_as_dpo_pairs, remove_columns=data.column_names)
    else:
        data = data.select_columns(["messages"])
    eval_data = None
    if cfg.dataset.val_fraction > 0:
        parts = data.train_test_split(test_size=cfg.dataset.val_fraction, seed=cfg.trainer.get("seed", 42))
        data, eval_data = parts["train"], parts["test"]

    # TRL defaults to bf16 mixed precision; follow the model's dtype unless the config says otherwise.
    bf16 = torch_dtype(cfg.model.dtype) == torch.bfloat16
    args = trainer_config_class(cfg.stage)(**{"bf16": bf16, **loaded.trainer_args, **cfg.trainer})
    if cfg.stage == "dpo":
        from trl import DPOTrainer as Trainer
    else:
        from trl import SFTTrainer as Trainer
    from transformers import set_seed

    from ftkit.engines.trainer_callbacks import callbacks, exit_if_stopped

    # TRL attaches the LoRA adapter before the Trainer seeds the RNGs: seed first, or every run starts elsewhere.
    set_seed(args.seed if loaded.adapter_seed is None else loaded.adapter_seed)
    history_log, stop = callbacks(history, flag)
    trainer = Trainer(
        model=loaded.model,
        args=args,
        train_dataset=data,
        eval_dataset=eval_data,
        processing_class=loaded.tokenizer,
        peft_config=loaded.peft_config,
        callbacks=[history_log, stop],
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    exit_if_stopped(stop)
    if eval_data is not None:
        trainer.evaluate()
    trainer.save_model(args.output_dir)
    loaded.tokenizer.save_pretrained(args.output_dir)


def main(
    argv: list[str] | None = None,
    config_model: type[TrlStageConfig] = TrlStageConfig,
    pick_loader: Callable[[Any], Loader] = lambda cfg: load_transformers,
    module: str = "ftkit.engines.trl_train",
) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.exit(f"usage: python -m {module} CONFIG.yaml HISTORY.jsonl")
    # From the start: a SIGTERM while the model loads stops the run after its first step, at a checkpoint.
    flag = StopRequest().install("saving a checkpoint at the end of this step, then stopping")
    cfg = config_model.model_validate(yaml.safe_load(Path(argv[0]).read_text()))
    train(cfg, Path(argv[1]), flag, pick_loader(cfg))


if __name__ == "__main__":
    main()
