"""Unsloth: the TRL engine with Unsloth's FastLanguageModel as the loader on CUDA.

Run as `python -m ftkit.engines.unsloth_train CONFIG HISTORY`. The config is the TRL engine's YAML plus an
`unsloth:` section (`ftkit.engines.unsloth_config`); validation, data paths, logging, resuming and the estimator's
view are the TRL engine's, with the sequence length and gradient checkpointing read from that section. On a CPU the
same arguments train through transformers + PEFT; the stage's metrics say which loader ran (`loader`).
"""

from __future__ import annotations

from typing import Any

from ftkit.engines.facts import EngineFacts
from ftkit.engines.trl import TrlEngine
from ftkit.engines.trl_config import TrlStageConfig
from ftkit.engines.unsloth_config import UnslothStageConfig, effective_config
from ftkit.errors import Problem
from ftkit.yaml_load import LocatedYaml


class UnslothEngine(TrlEngine):
    name = "unsloth"
    config_model = UnslothStageConfig
    train_module = "ftkit.engines.unsloth_train"

    def config_problems(self, parsed: TrlStageConfig, src: LocatedYaml) -> list[Problem]:
        assert isinstance(parsed, UnslothStageConfig)
        problems = []
        file = str(src.path)
        if parsed.lora is None:
            problems.append(Problem(
                "the unsloth engine trains LoRA/QLoRA adapters (FastLanguageModel.get_peft_model); lora is missing",
                file, src.line_of("lora"), "lora",
                "add a lora: section (r, lora_alpha, target_modules ...), or use engine trl for full fine-tuning",
            ))  # fmt: skip
        if "gradient_checkpointing" in parsed.trainer:
            problems.append(Problem(
                "gradient checkpointing is set once, for both loaders, in unsloth.use_gradient_checkpointing",
                file, src.line_of("trainer.gradient_checkpointing"), "trainer.gradient_checkpointing",
                'remove it; set unsloth.use_gradient_checkpointing: "unsloth", true or false',
            ))  # fmt: skip
        max_length = parsed.trainer.get("max_length")
        if isinstance(max_length, int) and max_length > parsed.unsloth.max_seq_length:
            problems.append(Problem(
                f"trainer.max_length {max_length} is above unsloth.max_seq_length {parsed.unsloth.max_seq_length} "
                "(the length Unsloth prepares the model for)",
                file, src.line_of("trainer.max_length"), "trainer.max_length",
                f"remove trainer.max_length (it defaults to unsloth.max_seq_length) or set it <= "
                f"{parsed.unsloth.max_seq_length}",
            ))  # fmt: skip
        return problems

    def sequence_len(self, cfg: dict[str, Any]) -> int | None:
        return super().sequence_len(effective_config(cfg))

    def engine_facts(self, cfg: dict[str, Any]) -> EngineFacts:
        # "unsloth" checkpointing also offloads the saved layer inputs to CPU RAM and Unsloth picks its own attention
        # kernels, which the estimator does not model: on the Unsloth path its activation term is an upper bound.
        facts = super().engine_facts(effective_config(cfg))
        # Unsloth prepares 4-bit models its own way (not read here): keep the estimator's upcast, an upper bound.
        return facts.model_copy(update={"engine": self.name, "upcasts_embeddings": True})
