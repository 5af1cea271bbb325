"""Axolotl: writes the resolved Axolotl YAML and runs `axolotl train` as a subprocess.

Validation uses Axolotl's own pydantic schema (AxolotlInputConfig) plus an unknown-key check,
since Axolotl silently ignores keys it does not know (a typo like `learing_rate` would be lost).
Metrics come from the history file the runner's plugin (`RunControlPlugin`) writes in the training process; runs
made before it existed fall back to the dicts the HF Trainer prints in the log.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path
from typing import Any

from ftkit.engines.base import Engine, StageContext, absolutize, distributed_env
from ftkit.engines.facts import EngineFacts
from ftkit.engines.known_keys import known_keys
from ftkit.errors import Problem
from ftkit.schema_errors import unknown_keys
from ftkit.yaml_load import LocatedYaml

_LOG_DICT = re.compile(r"\{'[^{}]*\}")
CPU_4BIT_PLUGIN = "ftkit.engines.axolotl_plugin.Cpu4bitTrainingPlugin"
RUN_CONTROL_PLUGIN = "ftkit.engines.axolotl_plugin.RunControlPlugin"  # history + clean stop on SIGTERM
CPU_DISTRIBUTED_PLUGIN = "ftkit.engines.axolotl_cpu_dist.CpuDistributedPlugin"  # several ranks without a GPU


def _axolotl_keys() -> frozenset[str]:
    """AxolotlInputConfig's field names and aliases, from the stored list (importing the schema takes seconds)."""
    return known_keys("axolotl.AxolotlInputConfig")


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

    def quick_check(self, cfg: dict[str, Any], source: LocatedYaml | None, label: str) -> list[Problem]:
        return unknown_keys(
            cfg,
            _axolotl_keys(),
            what="Axolotl key",
            note=" (Axolotl would silently ignore it)",
            file=str(source.path) if source else label,
            line_of=source.line_of if source else (lambda _key: None),
            otherwise="remove it, or check Axolotl's config reference",
        )

    def validate(self, cfg: dict[str, Any], source: LocatedYaml | None, label: str) -> list[Problem]:
        from pydantic import ValidationError

        file = str(source.path) if source else label
        problems = self.quick_check(cfg, source, label)
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
        if isinstance(cfg.get("deepspeed"), str):  # a DeepSpeed JSON beside the recipe's YAML
            path = absolutize(cfg["deepspeed"], ctx.recipe_dir)
            if path != cfg["deepspeed"]:
                out["deepspeed"] = path
        if ctx.world_size > 1 and cfg.get("dataloader_num_workers") is None:
            # torchrun passes SIGTERM to each rank's whole process group: DataLoader worker processes die on it and
            # take their rank down before it can save the checkpoint (seen here). Rows are tokenized beforehand,
            # so loading them in the rank costs little.
            out["dataloader_num_workers"] = 0
        if ctx.cluster.multi and cfg.get("ddp_timeout") is None:  # a lost node ends the run, not a 30-minute wait
            out["ddp_timeout"] = ctx.cluster.collective_timeout_s
        plugins = list(cfg.get("plugins") or [])
        wanted = [RUN_CONTROL_PLUGIN]
        if ctx.device == "cpu" and cfg.get("load_in_4bit"):
            wanted.append(CPU_4BIT_PLUGIN)  # bitsandbytes' CPU eval repacking breaks training
        if ctx.device == "cpu" and ctx.world_size > 1:
            wanted.append(CPU_DISTRIBUTED_PLUGIN)  # gloo ranks; FSDP's mesh and state on the CPU
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
        """`axolotl train CFG --launcher python` for one process; for several, Axolotl's own torchrun launch:
        `--launcher torchrun -- <this node's torchrun arguments>` (`ftkit.cluster`: standalone, or the nodes'
        rendezvous). Axolotl execs torchrun in place of itself, so SIGTERM to this pid reaches torchrun, which passes
        it to every rank. Not `--launcher accelerate`: without GPUs `accelerate launch` starts one process."""
        from ftkit.engines.base import python_module

        train = python_module("axolotl.cli.main", "train", str(config_path))
        if ctx.world_size <= 1:
            return [*train, "--launcher", "python"]
        return [*train, "--launcher", "torchrun", "--", *ctx.cluster.torchrun_args(ctx.local_processes)]

    def env(self, ctx: StageContext) -> dict[str, str]:
        # Telemetry off by default: no network calls from a training run.
        env = {**super().env(ctx), "AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1"}
        # Axolotl imports a recipe's own Python (GRPO reward functions, dataset transforms) by dotted name, e.g.
        # `rewards.format_reward`: the recipe folder goes first on the path of the training process.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ctx.recipe_dir), os.environ.get("PYTHONPATH", "")) if p)
        if ctx.world_size > 1:
            env |= distributed_env(ctx.device, ctx.local_processes)
        return env

    def history(self, ctx: StageContext) -> list[dict[str, float]]:
        if ctx.history_path.is_file() or not ctx.log_path.is_file():
            return super().history(ctx)
        return parse_log_records(ctx.log_path.read_text(encoding="utf-8", errors="replace"))

    def config_keys(self) -> frozenset[str]:
        return _axolotl_keys()

    def sequence_len(self, cfg: dict[str, Any]) -> int | None:
        value = cfg.get("sequence_len")
        return int(value) if value else None

    def drops_long_rows(self, cfg: dict[str, Any]) -> bool:
        """Axolotl leaves over-long rows out (`excess_length_strategy: drop`, its default); GRPO prompts are never
        filtered by length."""
        rule = str(cfg.get("excess_length_strategy") or "drop").lower()
        return rule != "truncate" and cfg.get("rl") != "grpo"

    def dataset_paths(self, cfg: dict[str, Any]) -> list[str]:
        return [str(d["path"]) for d in cfg.get("datasets") or [] if isinstance(d, dict) and "path" in d]

    def engine_facts(self, cfg: dict[str, Any]) -> EngineFacts:
        adapter = cfg.get("adapter") or None
        bnb, trl = cfg.get("bnb_config_kwargs") or {}, cfg.get("trl") or {}
        targets = cfg.get("lora_target_modules")
        sub_group = ((deepspeed_config(cfg) or {}).get("zero_optimization") or {}).get("sub_group_size")
        version = cfg.get("fsdp_version")
        return EngineFacts(
            engine=self.name,
            adapter=str(adapter) if adapter else None,
            load_in_4bit=bool(cfg.get("load_in_4bit")),
            bnb_4bit_use_double_quant=bool(bnb.get("bnb_4bit_use_double_quant", True)),
            use_dora=bool(adapter and cfg.get("peft_use_dora")),
            rl=str(cfg.get("rl") or "") or None,
            reward_model=bool(cfg.get("reward_model")),
            sequence_len=int(cfg.get("sequence_len") or 2048),
            micro_batch_size=int(cfg.get("micro_batch_size") or 1),
            gradient_accumulation_steps=int(cfg.get("gradient_accumulation_steps") or 1),
            sample_packing=bool(cfg.get("sample_packing")),
            gradient_checkpointing=bool(cfg.get("gradient_checkpointing")),
            fsdp_activation_checkpointing=fsdp_checkpointing(cfg),
            attn_implementation=str(cfg.get("attn_implementation") or "") or None,
            flash_attention=bool(cfg.get("flash_attention")),
            optimizer=str(cfg["optimizer"]) if cfg.get("optimizer") else None,
            chunked_cross_entropy=bool(cfg.get("chunked_cross_entropy")),
            fused_linear_cross_entropy=bool(
                cfg.get("cut_cross_entropy") or cfg.get("liger_fused_linear_cross_entropy")
            ),
            # LoRA's defaults are PEFT's (r=8); lora_target_linear: every linear layer.
            lora_r=int(cfg.get("lora_r") or 8) if adapter else None,
            lora_dropout=float(cfg.get("lora_dropout") or 0.0) if adapter else None,
            lora_target_modules=tuple(targets) if adapter and targets and not cfg.get("lora_target_linear") else None,
            # GRPOConfig's defaults: 8 completions per prompt of at most 256 tokens.
            num_generations=int(trl.get("num_generations") or 8),
            max_completion_length=int(trl.get("max_completion_length") or 256),
            use_vllm=bool(trl.get("use_vllm")),
            generation_batch_size=int(trl["generation_batch_size"]) if trl.get("generation_batch_size") else None,
            fsdp=bool(cfg.get("fsdp") or cfg.get("fsdp_config")),
            fsdp_version=None if version is None else str(version),
            deepspeed_zero_stage=deepspeed_stage(cfg),
            cpu_offload=cpu_offload_of(cfg),
            zero3_sub_group_size=int(sub_group) if isinstance(sub_group, int | float) and sub_group >= 1 else None,
            # Axolotl upcasts embeddings, lm_head and norms on load and casts them back only for adapters, FSDP or
            # flash attention (ModelLoader._configure_embedding_dtypes).
            upcasts_embeddings=True,
            embeddings_skip_upcast=bool(cfg.get("embeddings_skip_upcast")),
            full_keeps_fp32_embeddings=True,
        )


_ZERO_IN_NAME = re.compile(r"zero([123])")


def deepspeed_config(cfg: dict[str, Any], base: Path | None = None) -> dict[str, Any] | None:
    """The DeepSpeed config a config names: inline, or the JSON file (absolute, or relative to `base` or the
    working directory). None when there is none or it cannot be read."""
    value = cfg.get("deepspeed")
    if isinstance(value, dict):
        return value
    if not value:
        return None
    for path in (Path(str(value)), *([base / str(value)] if base else [])):
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            return loaded if isinstance(loaded, dict) else None
    return None


def deepspeed_stage(cfg: dict[str, Any], base: Path | None = None) -> int | None:
    """`zero_optimization.stage` of the config's DeepSpeed JSON; where the file cannot be read here (a path relative
    to a recipe folder the caller does not know), the `zero1`/`zero2`/`zero3` in its name, as Axolotl's own
    deepspeed_configs are named (Axolotl reads the name the same way)."""
    if not cfg.get("deepspeed"):
        return None
    ds = deepspeed_config(cfg, base)
    if ds is not None:
        stage = (ds.get("zero_optimization") or {}).get("stage")
        return int(stage) if stage is not None else 0
    found = _ZERO_IN_NAME.search(Path(str(cfg["deepspeed"])).name)
    return int(found.group(1)) if found else None


def fsdp_option(cfg: dict[str, Any], name: str) -> bool:
    """An `fsdp_config` switch under its FSDP2 name or its FSDP1 `fsdp_`-prefixed spelling."""
    fsdp = cfg.get("fsdp_config") or {}
    return isinstance(fsdp, dict) and bool(fsdp.get(name) or fsdp.get(f"fsdp_{name}"))


def fsdp_checkpointing(cfg: dict[str, Any]) -> bool:
    """FSDP's own activation checkpointing (`fsdp_config.activation_checkpointing`, FSDP1 spelling
    `fsdp_activation_checkpointing`), which replaces `gradient_checkpointing` in FSDP configs."""
    return fsdp_option(cfg, "activation_checkpointing")


def cpu_offload_of(cfg: dict[str, Any], base: Path | None = None) -> bool:
    """Whether the config offloads parameters or optimizer states to the host (FSDP `offload_params`, DeepSpeed
    `offload_param` / `offload_optimizer` on the CPU)."""
    if fsdp_option(cfg, "offload_params"):
        return True
    zero = ((deepspeed_config(cfg, base) or {}).get("zero_optimization")) or {}
    return any((zero.get(key) or {}).get("device") == "cpu" for key in ("offload_param", "offload_optimizer"))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
