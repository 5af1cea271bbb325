"""Engines report what their configs say (`EngineFacts`); one mapping (`estimate.from_engine`) makes the Setting."""

from __future__ import annotations

import re
from pathlib import Path

from ftkit.engines import get_engine
from ftkit.engines.facts import EngineFacts
from ftkit.estimate.from_engine import method_of, setting_from_facts

ENGINES = Path(__file__).resolve().parents[1] / "tools" / "ftkit" / "engines"


def test_no_engine_module_knows_the_estimators_setting():
    for path in sorted(ENGINES.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        imports = re.search(r"^\s*(from|import) ftkit\.estimate", text, re.M)
        assert not imports, f"{path.name} imports the estimator: report EngineFacts instead"
        assert not re.search(r"\b(estimate_setting|lora_rank|seq_len|micro_batch)\b", text), path.name
    for name in ("axolotl", "trl", "unsloth"):
        assert not hasattr(get_engine(name), "estimate_setting")


def test_the_same_run_said_by_axolotl_and_by_trl_is_the_same_setting():
    axolotl = {"adapter": "lora", "load_in_4bit": True, "lora_r": 32, "lora_dropout": 0.05, "sequence_len": 4096,
               "micro_batch_size": 2, "gradient_accumulation_steps": 8, "gradient_checkpointing": True,
               "optimizer": "paged_adamw_8bit", "rl": "dpo", "attn_implementation": "sdpa"}  # fmt: skip
    trl = {"stage": "dpo", "model": {"load_in_4bit": True, "attn_implementation": "sdpa"},
           "lora": {"r": 32, "lora_dropout": 0.05},
           "trainer": {"max_length": 4096, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 8,
                       "gradient_checkpointing": True, "optim": "paged_adamw_8bit"}}  # fmt: skip
    a = setting_from_facts(get_engine("axolotl").engine_facts(axolotl)).flat()
    t = setting_from_facts(get_engine("trl").engine_facts(trl)).flat()
    # The one difference is the engines' own: Axolotl's loader upcasts the embeddings while preparing, TRL's not.
    assert {k: (a[k], t[k]) for k in a if a[k] != t[k]} == {"embedding_upcast": (True, False)}


def test_the_method_comes_from_the_adapter_the_4bit_base_and_dora():
    def facts(**kw: object) -> EngineFacts:
        return EngineFacts(engine="x", sequence_len=8, micro_batch_size=1, **kw)  # type: ignore[arg-type]

    assert method_of(facts()) == "full"
    assert method_of(facts(adapter="lora")) == "lora"
    assert method_of(facts(adapter="lora", load_in_4bit=True)) == method_of(facts(adapter="qlora")) == "qlora"
    assert method_of(facts(adapter="lora", load_in_4bit=True, use_dora=True)) == "dora"


def test_the_run_preflight_of_a_sharded_recipe_estimates_it_on_the_gpus_at_hand():
    """A sharded config is no valid setting on the default one GPU: the pre-flight builds it on the GPUs it has."""
    from ftkit.pipeline.run import _vram_preflight
    from ftkit.recipes.load import load_recipe
    from ftkit.recipes.resolve import resolve_stage

    class Events:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def message(self, text: str) -> None:
            self.lines.append(text)

    loaded = load_recipe("llama8b-full-fsdp", check_profiles=False)
    resolved = resolve_stage(loaded, "sft", "full")
    engine = get_engine(loaded.recipe.engine)
    hw = {"gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.6}] * 8}
    events = Events()
    result = _vram_preflight(engine, resolved, engine.base_model(resolved.config), hw, True, "sft.yaml", events)
    assert result is not None and result["verdict"] and events.lines[0].startswith("vram: sft: needs about")
