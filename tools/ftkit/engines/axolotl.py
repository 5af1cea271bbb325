"""Axolotl: writes the resolved Axolotl YAML and runs `axolotl train` as a subprocess.

Validation uses Axolotl's own pydantic schema (AxolotlInputConfig) plus an unknown-key check,
since Axolotl silently ignores keys it does not know (a typo like `learing_rate` would be lost).
Metrics come from the history file the runner's plugin (`RunControlPlugin`) writes in the training process; runs
made before it existed fall back to the dicts the HF Trainer prints in the log.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path
from typing import Any

from ftkit.engines.base import Engine, StageContext, absolutize, optimizer_kind
from ftkit.errors import Problem
from ftkit.validation import unknown_keys
from ftkit.yamlio import LocatedYaml

_LOG_DICT = re.compile(r"\{'[^{}]*\}")
CPU_4BIT_PLUGIN = "ftkit.engines.axolotl_plugin.Cpu4bitTrainingPlugin"
RUN_CONTROL_PLUGIN = "ftkit.engines.axolotl_plugin.RunControlPlugin"  # history + clean stop on SIGTERM


@cache
def _axolotl_keys() -> frozenset[str]:
    from axolotl.utils.schemas.config import AxolotlInputConfig

    names = set()
    for name, field in AxolotlInputConfig.model_fields.items():
        names.add(name)
        if field.alias:
            names.add(field.alias)
    return frozenset(names)


def _to_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse_log_records(text: str) -> list[dict[str, float]]:
    """The metric dicts the trainer printed (`{'loss': '2.5', ...}`), values as floats."""
    records = []
    for match in _LOG_DICT.finditer(text.replace("\r", "\n")):
        try:
            raw = ast.literal_eval(match.group(0))
        except (ValueError, SyntaxError):
            continue
        if not isinstance(raw, dict) or not ({"loss", "eval_loss", "train_runtime"} & raw.keys()):
            continue
        rec = {k: f for k, v in raw.items() if (f := _to_float(v)) is not None}
        records.append(rec)
    return records


class AxolotlEngine(Engine):
    name = "axolotl"
    base_model_key = "base_model"
    trust_remote_code_key = "trust_remote_code"
    resume_key = "resume_from_checkpoint"

    def validate(self, cfg: dict[str, Any], source: LocatedYaml | None, label: str) -> list[Problem]:
        from pydantic import ValidationError

        file = str(source.path) if source else label
        line_of = source.line_of if source else (lambda _key: None)
        problems = unknown_keys(
            cfg,
            _axolotl_keys(),
            what="Axolotl key",
            note=" (Axolotl would silently ignore it)",
            file=file,
            line_of=line_of,
            otherwise="remove it, or check Axolotl's config reference",
        )
        from axolotl.utils.config import validate_config
        from axolotl.utils.dict import DictDefault

        try:
            validate_config(DictDefault(_plain(cfg)))
        except ValidationError as exc:
            for err in exc.errors():
                dotted = ".".join(str(p) for p in err["loc"])
                problems.append(
                    Problem(
                        f"Axolotl schema: {err['msg']}",
                        file,
                        source.line_of(dotted) if source else None,
                        dotted or None,
                        "see Axolotl's config reference for this key's type and allowed values",
                    )
                )
        except (ValueError, TypeError) as exc:
            problems.append(Problem(f"Axolotl rejected the config: {exc}", file, None, None, "fix the value named"))
        return problems

    def runtime_overrides(self, cfg: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        out: dict[str, Any] = {
            "output_dir": str(ctx.output_dir),
            "dataset_prepared_path": str(ctx.stage_dir / "prepared"),
        }
        for i, ds in enumerate(cfg.get("datasets") or []):
            if isinstance(ds, dict) and "path" in ds:
                path = absolutize(str(ds["path"]), ctx.recipe_dir)
                if path != ds["path"]:
                    out[f"datasets.{i}.path"] = path
        plugins = list(cfg.get("plugins") or [])
        wanted = [RUN_CONTROL_PLUGIN]
        if ctx.device == "cpu" and cfg.get("load_in_4bit"):
            wanted.append(CPU_4BIT_PLUGIN)  # bitsandbytes' CPU eval repacking breaks training
        if missing := [p for p in wanted if p not in plugins]:
            out["plugins"] = [*plugins, *missing]
        return out

    def report_overrides(self, backend: str, ctx: StageContext) -> dict[str, Any]:
        return {
            "none": {"use_tensorboard": False},
            "tensorboard": {"use_tensorboard": True},
            "wandb": {"use_wandb": True, "wandb_project": ctx.recipe_name, "wandb_name": ctx.stage},
            "mlflow": {"use_mlflow": True, "mlflow_experiment_name": ctx.recipe_name},
        }[backend]

    def command(self, config_path: Path, ctx: StageContext) -> list[str]:
        from ftkit.engines.base import python_module

        # One process per GPU via accelerate; `--launcher python` when there is one device (or CPU).
        launcher = ["--launcher", "python"] if ctx.world_size <= 1 else ["--launcher", "accelerate"]
        return python_module("axolotl.cli.main", "train", str(config_path), *launcher)

    def env(self, ctx: StageContext) -> dict[str, str]:
        # Telemetry off by default: no network calls from a training run.
        return {**super().env(ctx), "AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1"}

    def history(self, ctx: StageContext) -> list[dict[str, float]]:
        if ctx.history_path.is_file() or not ctx.log_path.is_file():
            return super().history(ctx)
        return parse_log_records(ctx.log_path.read_text(encoding="utf-8", errors="replace"))

    def sequence_len(self, cfg: dict[str, Any]) -> int | None:
        value = cfg.get("sequence_len")
        return int(value) if value else None

    def dataset_paths(self, cfg: dict[str, Any]) -> list[str]:
        return [str(d["path"]) for d in cfg.get("datasets") or [] if isinstance(d, dict) and "path" in d]

    def estimate_setting(self, cfg: dict[str, Any]) -> dict[str, Any]:
        adapter = cfg.get("adapter")
        method = "full" if not adapter else "qlora" if cfg.get("load_in_4bit") or adapter == "qlora" else "lora"
        if adapter and cfg.get("peft_use_dora"):
            method = "dora"
        stage = {"dpo": "dpo", "ipo": "dpo", "kto": "kto", "orpo": "orpo", "grpo": "grpo"}.get(
            str(cfg.get("rl") or ""), "reward" if cfg.get("reward_model") else "sft"
        )
        attn = str(cfg.get("attn_implementation") or "")
        attention = "flash" if cfg.get("flash_attention") or "flash" in attn else "eager" if attn == "eager" else "sdpa"
        bnb = cfg.get("bnb_config_kwargs") or {}
        out: dict[str, Any] = {
            "method": method,
            "stage": stage,
            "seq_len": int(cfg.get("sequence_len") or 2048),
            "micro_batch": int(cfg.get("micro_batch_size") or 1),
            "grad_accum": int(cfg.get("gradient_accumulation_steps") or 1),
            "gradient_checkpointing": bool(cfg.get("gradient_checkpointing")),
            "attention": attention,
            "optimizer": optimizer_kind(str(cfg.get("optimizer") or "adamw_torch")),
            "sample_packing": bool(cfg.get("sample_packing")),
            "double_quant": bool(bnb.get("bnb_4bit_use_double_quant", True)),
        }
        if adapter:
            targets = cfg.get("lora_target_modules")
            out |= {"lora_rank": int(cfg.get("lora_r") or 8), "lora_dropout": float(cfg.get("lora_dropout") or 0.0)}
            if targets and not cfg.get("lora_target_linear"):
                out["lora_targets"] = tuple(targets)
        if cfg.get("fsdp") or cfg.get("fsdp_config"):
            out["parallelism"] = "fsdp"
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
