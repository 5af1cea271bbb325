"""One real training run of the fixture recipe `tiny-trl-sft-dpo` (SFT → merge → DPO → merge, then GGUF f16 and
q8_0, held-out perplexity and forgetting, model card), made once per session by conftest's `tiny_trl_run` for the
tests that only read a trained run: the engines' SFT → DPO check and the export pipeline's. Each used to train its
own copy (two engine processes and two merges each)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ftkit.cli import main

NAME = "tiny-trl-sft-dpo"
HELDOUT = [
    {"id": "held-0", "prompt": [{"role": "user", "content": "Which colour is a clear sky at noon?"}],
     "chosen": [{"role": "user", "content": "Which colour is a clear sky at noon?"},
                {"role": "assistant", "content": "A clear sky at noon is blue."}],
     "rejected": [{"role": "user", "content": "Which colour is a clear sky at noon?"},
                  {"role": "assistant", "content": "Bake it with flour and water."}]},
]  # fmt: skip
EVAL_PLAN = {"heldout": "data/dpo-heldout.jsonl", "general_prompts": "data/general-prompts.jsonl",
             "max_new_tokens": 16, "gate": False}  # a tiny random model: its answers are not judged  # fmt: skip
EXPORTS = {"gguf": ["f16", "q8_0"], "eval": EVAL_PLAN}


@dataclass(frozen=True)
class TrainedRun:
    code: int  # `ftkit recipe run`'s exit code
    dir: Path  # the run folder
    recipes: Path  # the FTKIT_RECIPES folder holding the recipe
    metrics: dict[str, Any]


def with_exports(rdir: Path, export: dict[str, Any]) -> Path:
    """The recipe folder with the held-out pairs, the general prompts and `export` as its smoke profile's exports."""
    from conftest import FIXTURES, edit_yaml, write_jsonl

    write_jsonl(rdir / "data" / "dpo-heldout.jsonl", HELDOUT)
    shutil.copy(FIXTURES / "general-prompts.jsonl", rdir / "data" / "general-prompts.jsonl")
    edit_yaml(rdir / "recipe.yaml", lambda d: d["profiles"]["smoke"].update(export=export))
    return rdir


def train(root: Path, tiny_llama: Path) -> TrainedRun:
    """Copy the recipe under `root`, point it at the tiny Llama, add EXPORTS and run its smoke profile as it is."""
    from conftest import copy_recipe, edit_yaml

    recipes, runs = root / "recipes", root / "runs"
    recipes.mkdir(parents=True)
    rdir = copy_recipe(NAME, recipes)
    edit_yaml(rdir / "recipe.yaml", lambda d: d["profiles"]["smoke"].update(base_model=str(tiny_llama)))
    with_exports(rdir, EXPORTS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTKIT_RECIPES", str(recipes))
        code = main(["recipe", "run", NAME, "--profile", "smoke", "--runs-dir", str(runs)])
    [run_dir] = list((runs / NAME).iterdir())
    return TrainedRun(code, run_dir, recipes, json.loads((run_dir / "metrics.json").read_text()))
