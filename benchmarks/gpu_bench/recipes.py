"""The recipe stages the GPU bench measures, read through ftkit: `load_recipe` and `resolve_stage` (the full profile),
and the method by ftkit's one mapping from engine facts (`ftkit.engines.facts.method_of`).

Where the engine's own validator cannot import here (the GPU machine may lack Axolotl), the stage file is read with
ftkit's YAML loader without that validation, and the record says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The methods each case kind measures, by ftkit's name for them.
MODES = {"qlora": ("qlora",), "lora": ("lora", "dora"), "full": ("full",)}
MODE_PROBLEMS = {
    "qlora": "load_in_4bit/adapter are not QLoRA; this case measures a QLoRA recipe.",
    "lora": "not a bf16 LoRA stage (adapter lora, no 4/8-bit); this case measures one.",
    "full": "not a full fine-tune (no adapter, no 4/8-bit); this case measures one.",
}


def stage_config(path: Path) -> tuple[dict[str, Any], str]:
    """The resolved engine config (profile full) of the recipe stage whose file is `path` (recipes/NAME/FILE), and
    how it was read."""
    from ftkit.errors import FtkitError
    from ftkit.recipes.load import load_recipe
    from ftkit.recipes.resolve import resolve_stage

    if not path.is_file():
        raise SystemExit(f"{path}: not found. Run this script from a checkout of finetune-recipes (repo root).")
    try:
        loaded = load_recipe(str(path.parent), check_profiles=False)
    except ImportError as exc:  # the engine's validator (Axolotl's schema) does not import on this machine
        from ftkit.yaml_load import load_yaml

        data = load_yaml(path).data or {}
        return dict(data), f"ftkit.yaml_load.load_yaml (no engine validation: {type(exc).__name__}: {exc})"[:300]
    except FtkitError as exc:
        raise SystemExit(f"{path.parent.name}: {exc}") from exc
    stage = next((s.name for s in loaded.recipe.stages if s.config == path.name), None)
    if stage is None:
        raise SystemExit(f"{path}: no stage of {path.parent.name}/recipe.yaml uses this file")
    return resolve_stage(loaded, stage, "full").config, "ftkit.recipes.load_recipe + resolve_stage (profile full)"


def read_stage(path: Path, required: tuple[str, ...], mode: str = "qlora") -> tuple[dict[str, Any], str]:
    """The stage's config with the keys the bench needs, of the method `mode` names; SystemExit with the fix if not."""
    from ftkit.engines import get_engine
    from ftkit.engines.facts import method_of

    data, how = stage_config(path)
    missing = [k for k in required if k not in data]
    if missing:
        raise SystemExit(f"{path}: missing keys {missing}. Fix: add them to the recipe's Axolotl YAML.")
    method = method_of(get_engine("axolotl").engine_facts(data))
    if method not in MODES[mode] or data.get("load_in_8bit"):
        raise SystemExit(f"{path}: {MODE_PROBLEMS[mode]} (ftkit reads it as {method})")
    return data, how
