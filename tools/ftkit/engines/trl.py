"""TRL: SFTTrainer / DPOTrainer with PEFT, run as `python -m ftkit.engines.trl_train CONFIG`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError

from ftkit.engines.base import Engine, StageContext, absolutize, distributed_env, python_module
from ftkit.engines.facts import EngineFacts
from ftkit.engines.known_keys import known_keys
from ftkit.engines.trl_config import TrlStageConfig
from ftkit.errors import Problem
from ftkit.schema_errors import pydantic_problems, unknown_keys
from ftkit.yaml_load import LocatedYaml


class TrlEngine(Engine):
    name = "trl"
    base_model_key = "base_model"
    trust_remote_code_key = "model.trust_remote_code"
    resume_key = "trainer.resume_from_checkpoint"  # a TrainingArguments field; trl_train passes it to train()
    config_model: ClassVar[type[TrlStageConfig]] = TrlStageConfig  # the config file's schema
    train_module: ClassVar[str] = "ftkit.engines.trl_train"  # the training process's entry point

    def validate(self, cfg: dict[str, Any], source: LocatedYaml | None, label: str) -> list[Problem]:
        src = source or LocatedYaml(Path(label), cfg, {})
        try:
            parsed = self.config_model.model_validate(cfg)
        except ValidationError as exc:
            return pydantic_problems(exc, src, self.config_model)
        problems = self.config_problems(parsed, src)
        trainer = "trl.DPOConfig" if parsed.stage == "dpo" else "trl.SFTConfig"  # trl_config.trainer_config_class
        checks = [("trainer", parsed.trainer, known_keys(trainer))]
        if parsed.lora is not None:
            checks.append(("lora", parsed.lora, known_keys("peft.LoraConfig")))
        for section, values, known in checks:
            problems += unknown_keys(
                values,
                known,
                what=f"{section} argument",
                file=str(src.path),
                line_of=src.line_of,
                prefix=f"{section}.",
                otherwise="remove it; see the TRL/PEFT docs",
            )
        return problems

    def quick_check(self, cfg: dict[str, Any], source: LocatedYaml | None, label: str) -> list[Problem]:
        """All of `validate`: its pydantic model is ours, TRL's and PEFT's keys come from the stored lists."""
        return self.validate(cfg, source, label)

    def config_problems(self, parsed: TrlStageConfig, src: LocatedYaml) -> list[Problem]:
        """Problems between fields of a config that parsed (none here; subclasses add their rules)."""
        return []

    def runtime_overrides(self, cfg: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        out: dict[str, Any] = {"trainer.output_dir": str(ctx.output_dir)}
        if ctx.device == "cpu" and ctx.world_size > 1:  # accelerate joins CPU ranks (gloo) only when told it is on CPU
            out["trainer.use_cpu"] = True
        if ctx.cluster.multi and "ddp_timeout" not in (cfg.get("trainer") or {}):
            out["trainer.ddp_timeout"] = ctx.cluster.collective_timeout_s  # a lost node ends the run, not a hang
        path = cfg.get("dataset", {}).get("path")
        if path and (absolute := absolutize(str(path), ctx.recipe_dir)) != path:
            out["dataset.path"] = absolute
        return out

    def report_overrides(self, backend: str, ctx: StageContext) -> dict[str, Any]:
        out: dict[str, Any] = {"trainer.report_to": [] if backend == "none" else [backend]}
        if backend != "none":
            out["trainer.run_name"] = f"{ctx.recipe_name}-{ctx.stage}"
        return out

    def command(self, config_path: Path, ctx: StageContext) -> list[str]:
        """`python -m ftkit.engines.trl_train CONFIG HISTORY`; several processes (or nodes): the same module under
        torchrun (`ftkit.cluster`), whose environment the Trainer's accelerate state reads to join the ranks."""
        args = [str(config_path), str(ctx.history_path)]
        if ctx.world_size <= 1:
            return python_module(self.train_module, *args)
        torchrun = python_module("torch.distributed.run", *ctx.cluster.torchrun_args(ctx.local_processes))
        return [*torchrun, "-m", self.train_module, *args]

    def env(self, ctx: StageContext) -> dict[str, str]:
        env = super().env(ctx)
        return env | distributed_env(ctx.device, ctx.local_processes) if ctx.world_size > 1 else env

    def loader_ran(self, ctx: StageContext) -> str | None:
        """Which loader the training process used (`trl_train.LOADER_FILE` beside the history), None if unknown."""
        from ftkit.engines.trl_train import LOADER_FILE

        path = ctx.history_path.with_name(LOADER_FILE)
        return json.loads(path.read_text(encoding="utf-8")).get("loader") if path.is_file() else None

    def config_keys(self) -> frozenset[str]:
        fields = self.config_model.model_fields.items()
        return frozenset({name for name, _ in fields} | {f.alias for _, f in fields if f.alias})

    def sequence_len(self, cfg: dict[str, Any]) -> int | None:
        value = cfg.get("trainer", {}).get("max_length")
        return int(value) if value else None

    def dataset_paths(self, cfg: dict[str, Any]) -> list[str]:
        path = cfg.get("dataset", {}).get("path")
        return [str(path)] if path else []

    def engine_facts(self, cfg: dict[str, Any]) -> EngineFacts:
        model, trainer, lora = cfg.get("model") or {}, cfg.get("trainer") or {}, cfg.get("lora")
        stage = str(cfg.get("stage", "sft"))
        targets = lora.get("target_modules") if lora else None
        return EngineFacts(
            engine=self.name,
            adapter=None if lora is None else "lora",
            load_in_4bit=bool(model.get("load_in_4bit")),
            bnb_4bit_use_double_quant=bool(model.get("bnb_4bit_use_double_quant", True)),
            use_dora=bool(lora and lora.get("use_dora")),
            rl=None if stage in ("sft", "reward") else stage,
            reward_model=stage == "reward",
            # SFTConfig's and DPOConfig's defaults: 1024 tokens, 8 rows per device, gradient checkpointing on.
            sequence_len=int(trainer.get("max_length") or 1024),
            micro_batch_size=int(trainer.get("per_device_train_batch_size") or 8),
            gradient_accumulation_steps=int(trainer.get("gradient_accumulation_steps") or 1),
            sample_packing=bool(trainer.get("packing")),
            gradient_checkpointing=bool(trainer.get("gradient_checkpointing", True)),
            attn_implementation=str(model.get("attn_implementation") or "sdpa"),
            optimizer=str(trainer["optim"]) if trainer.get("optim") else None,
            # transformers' Liger integration swaps the causal-LM loss for its fused linear cross-entropy
            fused_linear_cross_entropy=bool(trainer.get("use_liger_kernel")),
            lora_r=int(lora.get("r") or 8) if lora else None,
            lora_dropout=float(lora.get("lora_dropout") or 0.0) if lora else None,
            lora_target_modules=tuple(targets) if isinstance(targets, list) else None,
            # TRL 1.9's trainers (and this engine) never call prepare_model_for_kbit_training: the embeddings keep
            # their dtype while the model is prepared, so there is no fp32 upcast before training.
            upcasts_embeddings=False,
        )
