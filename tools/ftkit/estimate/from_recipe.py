"""From a model reference or a recipe stage to the estimator's inputs (architecture and setting)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftkit.errors import FtkitError
from ftkit.estimate.from_engine import setting_from_facts
from ftkit.estimate.inputs import Setting
from ftkit.estimate.specs import Architecture
from ftkit.estimate.tokens import StageData, stage_data

FAMILIES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "gemma2": "gemma2", "phi3": "phi3",
            "qwen": "qwen"}  # fmt: skip


def architecture_from_config(cfg: dict[str, Any], name: str, source: str) -> Architecture:
    """An Architecture from a transformers config.json dict (decoder-only models with a gated MLP)."""
    model_type = str(cfg.get("model_type", ""))
    heads = int(cfg["num_attention_heads"])
    # Qwen v1 (model_type "qwen"): intermediate_size is w1 + w2 together (QWenMLP halves it); c_attn has a bias.
    intermediate = int(cfg["intermediate_size"]) // (2 if model_type == "qwen" else 1)
    return Architecture(
        name=name,
        hf_id=str(cfg.get("_name_or_path") or name),
        family=FAMILIES.get(model_type, model_type or "unknown"),
        hidden_size=int(cfg["hidden_size"]),
        intermediate_size=intermediate,
        num_hidden_layers=int(cfg["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or cfg.get("kv_channels") or int(cfg["hidden_size"]) // heads),
        vocab_size=int(cfg["vocab_size"]),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        max_position_embeddings=int(cfg.get("max_position_embeddings") or 0),
        attention_bias=bool(cfg.get("attention_bias", model_type in ("qwen2", "qwen"))),
        source=source,
    )


def resolve_architecture(ref: str) -> Architecture:
    """A catalog name or Hub id (offline, from the built-in catalog), or a local model dir with config.json."""
    from ftkit.estimate.architectures import ARCHITECTURES, lookup

    path = Path(ref).expanduser()
    if (path / "config.json").is_file():
        cfg = json.loads((path / "config.json").read_text())
        missing = [k for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                               "vocab_size") if k not in cfg]  # fmt: skip
        if missing:
            raise FtkitError.one(
                f"config.json lacks {missing}", file=path / "config.json",
                fix="pass a decoder-only causal LM (Llama, Mistral, Qwen2, Gemma-2, Phi-3 ...)",
            )  # fmt: skip
        return architecture_from_config(cfg, path.name, str(path / "config.json"))
    found = lookup(ref)
    if found is None:
        from ftkit.models import BUILTIN_MODELS

        if ref in BUILTIN_MODELS:
            found = lookup(ref.removesuffix("-instruct"))
    if found is None:
        raise FtkitError.one(
            f"unknown model '{ref}': not in the built-in catalog and not a local dir with config.json",
            field="--model",
            fix=f"use a catalog name ({', '.join(sorted(ARCHITECTURES))}) or a local model dir",
        )
    return found


@dataclass
class StagePlan:
    """One recipe stage as the estimator sees it."""

    stage: str
    base_model: str
    arch: Architecture
    setting: Setting
    max_steps: int | None
    epochs: float | None
    config_file: str
    data: StageData | None = None  # its datasets and how its engine reads them (token counts for time and cost)
    nodes: int = 1  # machines the setting's GPUs are spread over (setting.parallel.gpus counts all of them)


def recipe_stage_plans(
    name: str, profile: str = "full", overrides: dict[str, Any] | None = None, loaded: Any = None
) -> list[StagePlan]:
    """Each stage of a recipe, its engine config resolved for `profile`, mapped to a Setting. `loaded`: the
    recipe already loaded by the caller (`ftkit.recipes.load.load_recipe`), so it is not read twice. Nodes: the
    `nodes` override, else the profile's, else `hardware.nodes`; `gpus` (override or `hardware.gpus`) is per node,
    and the setting's GPUs are nodes × gpus (sharding and the global batch span every node)."""
    from ftkit.engines import get_engine
    from ftkit.recipes.load import load_recipe
    from ftkit.recipes.resolve import resolve_stage

    loaded = loaded or load_recipe(name, check_profiles=False)
    engine = get_engine(loaded.recipe.engine)
    overrides = dict(overrides or {})
    nodes = int(overrides.pop("nodes", None) or recipe_nodes(loaded, profile))
    per_node = int(overrides.pop("gpus", None) or loaded.recipe.hardware.gpus)
    plans, root_base = [], None
    for stage in loaded.recipe.stages:
        cfg = resolve_stage(loaded, stage.name, profile).config
        base = root_base if stage.init_from and root_base else engine.base_model(cfg)
        root_base = root_base or base
        try:
            setting = setting_from_facts(engine.engine_facts(cfg), **{"gpus": nodes * per_node, **overrides})
        except ValueError as exc:
            raise FtkitError.one(
                f"stage '{stage.name}': cannot estimate this setting: {exc}",
                file=loaded.dir / stage.config, fix="check the keys named",
            ) from exc  # fmt: skip
        trainer = cfg.get("trainer") or {}
        steps = cfg.get("max_steps") or trainer.get("max_steps")
        epochs = cfg.get("num_epochs") or trainer.get("num_train_epochs")
        plans.append(StagePlan(stage.name, base, resolve_architecture(base), setting,
                               int(steps) if steps else None, float(epochs) if epochs else None,
                               str(loaded.dir / stage.config), stage_data(engine, cfg, loaded.dir), nodes))  # fmt: skip
    return plans


def recipe_nodes(loaded: Any, profile: str) -> int:
    """The nodes a recipe's profile is written for: the profile's `nodes`, else `hardware.nodes`."""
    chosen = loaded.recipe.profiles.get(profile)
    return (chosen.nodes if chosen is not None else None) or loaded.recipe.hardware.nodes
