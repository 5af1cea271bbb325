"""Merge a LoRA/DoRA adapter into its base model with PEFT, in bf16 (or the dtype asked for).

An adapter trained on a 4-bit base is merged into the base loaded *unquantized* (a 4-bit merge is lossy: peft #2321,
#2501), and a pre-quantized base is refused. A sequence-classification adapter (a reward model) is merged into
`AutoModelForSequenceClassification`, in float32 by default, since bf16 would round most of its deltas away.
Why: docs/export-and-eval.md, "`export/merge.py`: 4-bit bases and reward models".
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftkit.errors import ExitCode, FtkitError
from ftkit.models import resolve_model

DTYPES = ("bfloat16", "float16", "float32")
MERGEABLE_PEFT_TYPES = {"LORA"}  # DoRA is LoRA with use_dora; prefix/prompt tuning has nothing to merge
SEQ_CLS = "SEQ_CLS"  # PEFT's task type of a sequence-classification (reward model) adapter


@dataclass
class MergeSource:
    """Where an adapter and its base come from: a run dir of `ftkit recipe run`, or an adapter dir."""

    adapter_dir: Path
    base: str  # a local dir or a hub id, after built-in names are resolved
    base_ref: str  # as the recipe or adapter names it
    run_dir: Path | None = None
    stage: str | None = None
    metrics: dict[str, Any] | None = None  # the run's metrics.json
    trained_on_4bit: bool | None = None  # None: the adapter dir alone does not say
    use_dora: bool = False
    full: bool = False  # a full fine-tune's output dir (a whole model, no adapter): re-saved, not merged


@dataclass
class MergeResult:
    out_dir: Path
    base: str
    adapter_dir: Path
    dtype: str
    trained_on_4bit: bool | None
    use_dora: bool
    shards: list[str]
    parameters: int
    seconds: float
    check: dict[str, Any] | None = field(default=None)
    task_type: str = "CAUSAL_LM"  # the adapter's PEFT task type: SEQ_CLS merges into a sequence classifier
    kind: str = "merge"  # merge: adapter into base; full: a full fine-tune's trained weights re-saved (no adapter)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"], d["adapter_dir"] = str(self.out_dir), str(self.adapter_dir)
        return d


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        fix = "re-run the stage that wrote it"
        raise FtkitError.one(f"cannot read {path.name}: {exc}", file=path, fix=fix) from None


def _stage_loads_4bit(run_dir: Path, stage: str, engine_name: str | None) -> bool | None:
    """Whether the stage trained on a 4-bit base, read by its engine from the resolved config."""
    from ftkit.engines import get_engine
    from ftkit.engines.facts import method_of
    from ftkit.yaml_load import load_yaml

    resolved = run_dir / "resolved" / f"{stage}.yaml"
    if not resolved.is_file() or not engine_name:
        return None
    cfg = load_yaml(resolved).data or {}
    return method_of(get_engine(engine_name).engine_facts(cfg)) == "qlora"


def resolve_merge_source(path: Path, base: str | None = None, stage: str | None = None) -> MergeSource:
    """RUN_DIR (has metrics.json: the last stage, or `stage`), ADAPTER_DIR (has adapter_config.json), or the output
    dir of a full fine-tune (a model: config.json and safetensors, re-saved rather than merged)."""
    path = Path(path)
    if (path / "metrics.json").is_file():
        metrics = _read_json(path / "metrics.json")
        stages = metrics.get("stages") or {}
        if not stages:
            raise FtkitError.one("the run trained no stage", file=path / "metrics.json", field="stages",
                                 fix="run the recipe to the end first (ftkit recipe run NAME)")  # fmt: skip
        name = stage or list(stages)[-1]
        if name not in stages:
            raise FtkitError.one(f"the run has no stage '{name}' (stages: {', '.join(stages)})",
                                 file=path / "metrics.json", field="stages",
                                 fix="pass --stage with one of them")  # fmt: skip
        info = stages[name]
        adapter = Path(info.get("adapter_dir", ""))
        src_base = base or info.get("base_model")
        if not src_base:
            raise FtkitError.one(f"stage '{name}' names no base model", file=path / "metrics.json",
                                 field=f"stages.{name}.base_model", fix="pass --base MODEL")  # fmt: skip
        source = MergeSource(adapter, resolve_model(src_base), src_base, path, name, metrics,
                             _stage_loads_4bit(path, name, metrics.get("engine")))  # fmt: skip
    elif (path / "adapter_config.json").is_file():
        cfg = _read_json(path / "adapter_config.json")
        src_base = base or cfg.get("base_model_name_or_path")
        if not src_base:
            raise FtkitError.one("adapter_config.json names no base model", file=path / "adapter_config.json",
                                 field="base_model_name_or_path", fix="pass --base MODEL")  # fmt: skip
        source = MergeSource(path, resolve_model(src_base), src_base)
    elif (path / "config.json").is_file():  # a full fine-tune's output dir: check_adapter marks it `full`
        source = MergeSource(path, str(path), str(path))
    else:
        raise FtkitError.one(
            f"{path} is neither a run dir (metrics.json), an adapter dir (adapter_config.json) nor a model dir "
            "(config.json)",
            file=path,
            fix="pass runs/<recipe>/<run>/ or the stage's output dir",
        )
    check_adapter(source)
    return source


def check_adapter(source: MergeSource) -> None:
    """Refuse what cannot be merged losslessly before loading anything."""
    cfg_path = source.adapter_dir / "adapter_config.json"
    if not cfg_path.is_file() and (source.adapter_dir / "config.json").is_file():
        source.full = True  # a full fine-tune: its trained weights are re-saved as the final model
        return
    if not cfg_path.is_file():
        raise FtkitError.one(
            "no adapter_config.json and no config.json: the stage saved neither an adapter nor a model",
            file=source.adapter_dir,
            fix="check the stage's train.log: it should end by saving the adapter or model",
        )
    cfg = _read_json(cfg_path)
    if cfg.get("peft_type") not in MERGEABLE_PEFT_TYPES:
        raise FtkitError.one(f"peft_type {cfg.get('peft_type')!r} cannot be merged into the weights",
                             file=cfg_path, field="peft_type", fix="only LoRA and DoRA adapters merge")  # fmt: skip
    source.use_dora = bool(cfg.get("use_dora"))
    base_cfg = Path(source.base) / "config.json"
    if base_cfg.is_file() and "quantization_config" in _read_json(base_cfg):
        raise FtkitError.one(
            f"the base {source.base} is a quantized checkpoint; merging into quantized weights is lossy "
            "(peft #2321, #2501)",
            file=base_cfg,
            field="quantization_config",
            fix="pass --base with the unquantized (bf16) model the 4-bit base was made from",
        )


def final_dtype(dtype: str | None, adapter_dir: Path, full: bool = False) -> str:
    """The final model's dtype: the one asked for; else bf16, or float32 for a sequence classifier's adapter (a
    reward model: bf16 rounds away most of its LoRA deltas). A full fine-tune has no deltas to lose: bf16."""
    if dtype is not None:
        return dtype
    return "float32" if not full and adapter_task_type(adapter_dir) == SEQ_CLS else "bfloat16"


def adapter_task_type(adapter_dir: Path) -> str:
    """The adapter's PEFT task type (CAUSAL_LM when adapter_config.json names none)."""
    return str(_read_json(Path(adapter_dir) / "adapter_config.json").get("task_type") or "CAUSAL_LM")


def saved_head_labels(adapter_dir: Path) -> int:
    """Outputs of the classification head saved with a SEQ_CLS adapter (its `score`/`classifier` weight rows)."""
    from safetensors import safe_open

    path = Path(adapter_dir) / "adapter_model.safetensors"
    if path.is_file():
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if key.endswith(("score.weight", "classifier.weight")):
                    return int(fh.get_slice(key).get_shape()[0])
    return 1  # a reward model's single score


def load_base(base: str, dtype: Any, task_type: str = "CAUSAL_LM", num_labels: int = 1) -> Any:
    """The base, unquantized at `dtype`, with the head the adapter was trained with (causal LM or classifier)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if task_type == SEQ_CLS:
        return AutoModelForSequenceClassification.from_pretrained(
            base, dtype=dtype, use_safetensors=True, num_labels=num_labels
        )
    return AutoModelForCausalLM.from_pretrained(base, dtype=dtype, use_safetensors=True)


def merge_adapter(
    base: str,
    adapter_dir: Path,
    out_dir: Path,
    dtype: str = "bfloat16",
    *,
    max_shard_size: str = "5GB",
    trained_on_4bit: bool | None = None,
) -> MergeResult:
    """Load the base unquantized in `dtype`, merge the adapter, save sharded safetensors + tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    if dtype not in DTYPES:
        raise FtkitError.one(f"dtype {dtype!r} is not one of {DTYPES}", field="dtype", fix="use bfloat16")
    started = time.perf_counter()
    adapter_dir = Path(adapter_dir)
    task_type = adapter_task_type(adapter_dir)
    labels = saved_head_labels(adapter_dir) if task_type == SEQ_CLS else 1
    model = load_base(base, getattr(torch, dtype), task_type, labels)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    # The adapter dir holds the tokenizer the stage trained with (special tokens, chat template).
    tok_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base
    _save_model(merged, AutoTokenizer.from_pretrained(tok_src), out_dir, max_shard_size, task_type)
    adapter_cfg = _read_json(Path(adapter_dir) / "adapter_config.json")
    result = MergeResult(
        out_dir=out_dir,
        base=base,
        adapter_dir=Path(adapter_dir),
        dtype=dtype,
        trained_on_4bit=trained_on_4bit,
        use_dora=bool(adapter_cfg.get("use_dora")),
        shards=sorted(p.name for p in out_dir.glob("*.safetensors")),
        parameters=sum(p.numel() for p in merged.parameters()),
        seconds=round(time.perf_counter() - started, 2),
        task_type=task_type,
    )
    write_provenance(result)
    return result


def _save_model(model: Any, tok: Any, out_dir: Path, max_shard_size: str, task_type: str) -> None:
    """Sharded safetensors + the tokenizer + a generation config that stops at the tokenizer's EOS."""
    if task_type == SEQ_CLS and tok.pad_token_id is not None:
        model.config.pad_token_id = tok.pad_token_id  # the classifier reads the last non-pad token of each row
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True, max_shard_size=max_shard_size)
    tok.save_pretrained(out_dir)
    if getattr(model, "generation_config", None) is not None:
        # generation_config must stop at the tokenizer's EOS (end of turn); a classifier generates nothing.
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        model.generation_config.save_pretrained(out_dir)


def trained_task_type(model_dir: Path) -> str:
    """SEQ_CLS for a checkpoint saved as a sequence classifier (a fully trained reward model), else CAUSAL_LM."""
    archs = _read_json(Path(model_dir) / "config.json").get("architectures") or []
    return SEQ_CLS if any(str(a).endswith("ForSequenceClassification") for a in archs) else "CAUSAL_LM"


def save_trained_model(
    model_dir: Path, out_dir: Path, dtype: str = "bfloat16", *, max_shard_size: str = "5GB"
) -> MergeResult:
    """A full fine-tune has no adapter to merge: its trained checkpoint is re-saved as the final model, in `dtype`
    and shards of `max_shard_size`, with its tokenizer, and without the trainer's checkpoints, optimizer state
    and logs that share its output dir."""
    import torch
    from transformers import AutoTokenizer

    if dtype not in DTYPES:
        raise FtkitError.one(f"dtype {dtype!r} is not one of {DTYPES}", field="dtype", fix="use bfloat16")
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file() or not any(model_dir.glob("*.safetensors")):
        raise FtkitError.one(
            "the full fine-tune left no model (config.json and *.safetensors) in its output dir",
            file=model_dir,
            fix="check the stage's train.log: the trainer saves the model at the end of training (with "
            "DeepSpeed ZeRO-3 only when stage3_gather_16bit_weights_on_model_save is true)",
            code=ExitCode.ENGINE_FAILED,
        )
    started = time.perf_counter()
    task_type = trained_task_type(model_dir)
    model = load_base(str(model_dir), getattr(torch, dtype), task_type, trained_num_labels(model_dir))
    _save_model(model, AutoTokenizer.from_pretrained(model_dir), out_dir, max_shard_size, task_type)
    result = MergeResult(
        out_dir=out_dir,
        base=str(model_dir),
        adapter_dir=model_dir,
        dtype=dtype,
        trained_on_4bit=False,
        use_dora=False,
        shards=sorted(p.name for p in out_dir.glob("*.safetensors")),
        parameters=sum(p.numel() for p in model.parameters()),
        seconds=round(time.perf_counter() - started, 2),
        task_type=task_type,
        kind="full",
    )
    write_provenance(result)
    return result


def trained_num_labels(model_dir: Path) -> int:
    cfg = _read_json(Path(model_dir) / "config.json")
    return int(cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 1)


def write_provenance(result: MergeResult) -> None:
    (result.out_dir / "ftkit-merge.json").write_text(json.dumps(result.to_dict(), indent=2))


def merge_source(
    source: MergeSource, out_dir: Path, dtype: str = "bfloat16", max_shard_size: str = "5GB"
) -> MergeResult:
    if source.full:
        return save_trained_model(source.adapter_dir, out_dir, dtype, max_shard_size=max_shard_size)
    return merge_adapter(source.base, source.adapter_dir, out_dir, dtype, max_shard_size=max_shard_size,
                         trained_on_4bit=source.trained_on_4bit)  # fmt: skip


def require_merged(result: MergeResult) -> None:
    """Raise when the built-in verification failed (exit 1: the artefact is not the model trained)."""
    check = result.check or {}
    if check and not check.get("passed"):
        raise FtkitError.one(
            f"the merged model's logits differ from base + adapter by {check['max_abs_diff']:.3g} "
            f"(tolerance {check['tolerance']:.3g}; top-1 agreement {check['top1_agreement']:.1%})",
            file=result.out_dir,
            fix="merge in float32 (--dtype float32) to see whether rounding explains it; a 4-bit base "
            "must be merged unquantized (--base the bf16 model)",
            code=ExitCode.METRICS_FAILED,
        )
