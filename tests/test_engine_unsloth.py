"""The unsloth engine: which loader runs where, what reaches FastLanguageModel, config errors, the estimator's view,
and a tiny training run whose metrics.json names the loader.

Unsloth itself is not installed here (it would replace the CPU torch with a CUDA build): the Unsloth path is
checked with a fake `unsloth` module whose FastLanguageModel records its arguments and builds the model with
transformers + PEFT, so the same code path (adapter attached by the loader, not by the trainer) really trains.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest
import yaml
from conftest import ROOT, copy_recipe, edit_yaml
from ftkit.engines import get_engine
from ftkit.engines.unsloth import UnslothEngine
from ftkit.engines.unsloth_config import UnslothStageConfig
from ftkit.engines.unsloth_train import LoaderUnavailable, choose_loader
from ftkit.yaml_load import load_yaml

RECIPE = ROOT / "recipes" / "mistral7b-qlora-sft-unsloth"
SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def never(*_: Any) -> str:
    raise AssertionError("unsloth must not be imported here")


# ---------------------------------------------------------------- loader selection


def test_on_cpu_auto_picks_transformers_peft_without_importing_unsloth():
    loader, reason = choose_loader("auto", cuda=False, import_error=never)
    assert (loader, reason) == ("transformers+peft", "no CUDA GPU (Unsloth needs one)")


def test_on_cuda_auto_picks_unsloth_when_it_imports_and_falls_back_when_it_does_not():
    assert choose_loader("auto", cuda=True, import_error=lambda: None)[0] == "unsloth"
    loader, reason = choose_loader("auto", cuda=True, import_error=lambda: "ImportError: no module named unsloth")
    assert loader == "transformers+peft" and "no module named unsloth" in reason


def test_loader_unsloth_refuses_a_machine_where_unsloth_cannot_run():
    with pytest.raises(LoaderUnavailable, match="no CUDA GPU"):
        choose_loader("unsloth", cuda=False, import_error=never)
    with pytest.raises(LoaderUnavailable, match=r"`import unsloth` failed: RuntimeError: broken"):
        choose_loader("unsloth", cuda=True, import_error=lambda: "RuntimeError: broken")


def test_loader_transformers_peft_never_imports_unsloth_even_on_cuda():
    assert choose_loader("transformers+peft", cuda=True, import_error=never)[0] == "transformers+peft"


def test_the_training_entry_point_imports_neither_torch_nor_transformers_before_unsloth():
    """Unsloth patches transformers/TRL/PEFT when imported: it must come first in the training process."""
    code = (
        "import sys, ftkit.engines.unsloth_train\n"
        "print(sorted({'torch', 'transformers', 'trl', 'peft'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- the Unsloth path, with a fake `unsloth` module


class FakeFastLanguageModel:
    """Records the arguments; builds what Unsloth would hand back (a model + tokenizer, then a PeftModel)."""

    calls: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def from_pretrained(cls, **kw: Any) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cls.calls["from_pretrained"] = kw
        model = AutoModelForCausalLM.from_pretrained(kw["model_name"], dtype=kw["dtype"] or "float32")
        return model, AutoTokenizer.from_pretrained(kw["model_name"])

    @classmethod
    def get_peft_model(cls, model: Any, **kw: Any) -> Any:
        from peft import LoraConfig, get_peft_model
        from transformers import set_seed

        cls.calls["get_peft_model"] = kw
        set_seed(kw["random_state"])
        lora = {k: v for k, v in kw.items() if k not in ("use_gradient_checkpointing", "random_state")}
        return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora))


@pytest.fixture
def fake_unsloth_on_cuda(monkeypatch: pytest.MonkeyPatch) -> type[FakeFastLanguageModel]:
    module = ModuleType("unsloth")
    module.FastLanguageModel = FakeFastLanguageModel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "unsloth", module)
    monkeypatch.setattr("ftkit.engines.unsloth_train.cuda_available", lambda: True)
    FakeFastLanguageModel.calls = {}
    return FakeFastLanguageModel


def tiny_config(tiny_llama: Path, data: Path, **unsloth: Any) -> UnslothStageConfig:
    return UnslothStageConfig.model_validate({
        "base_model": str(tiny_llama),
        "stage": "sft",
        "model": {"dtype": "float32", "pad_token": "<|endoftext|>"},
        "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "bias": "none", "target_modules": SEVEN,
                 "use_rslora": True, "modules_to_save": ["lm_head"]},
        "unsloth": {"max_seq_length": 128, "use_gradient_checkpointing": False, **unsloth},
        "dataset": {"path": str(data)},
        "trainer": {"max_steps": 12, "per_device_train_batch_size": 4, "learning_rate": 5e-3,
                    "lr_scheduler_type": "constant", "logging_steps": 1, "save_strategy": "no", "report_to": [],
                    "seed": 7},
    })  # fmt: skip


SFT_DATA = ROOT / "tests" / "fixtures" / "recipes" / "tiny-trl-sft-dpo" / "data" / "sft.jsonl"


@pytest.mark.model
def test_on_cuda_the_config_reaches_fastlanguagemodel_as_unsloths_arguments(fake_unsloth_on_cuda, tiny_llama: Path):
    from ftkit.engines.unsloth_train import pick_loader

    cfg = tiny_config(tiny_llama, SFT_DATA, random_state=3407, use_gradient_checkpointing="unsloth")
    loaded = pick_loader(cfg)(cfg)

    assert fake_unsloth_on_cuda.calls["from_pretrained"] == {
        "model_name": str(tiny_llama), "max_seq_length": 128, "dtype": __import__("torch").float32,
        "load_in_4bit": False, "trust_remote_code": False, "use_gradient_checkpointing": "unsloth",
    }  # fmt: skip
    assert fake_unsloth_on_cuda.calls["get_peft_model"] == {
        "r": 8, "target_modules": SEVEN, "lora_alpha": 16, "lora_dropout": 0.0, "bias": "none",
        "use_gradient_checkpointing": "unsloth", "random_state": 3407, "use_rslora": True, "loftq_config": None,
        "modules_to_save": ["lm_head"],
    }  # fmt: skip
    assert loaded.loader == "unsloth" and loaded.peft_config is None, "the loader attached the adapter itself"
    assert loaded.trainer_args == {"max_length": 128, "gradient_checkpointing": True}
    tok = loaded.tokenizer
    assert tok.pad_token == "<|endoftext|>" and loaded.model.config.pad_token_id == tok.pad_token_id


@pytest.mark.model
def test_dtype_auto_lets_unsloth_choose_and_random_state_defaults_to_the_trainer_seed(
    fake_unsloth_on_cuda, tiny_llama: Path
):
    from ftkit.engines.unsloth_train import load_unsloth

    cfg = tiny_config(tiny_llama, SFT_DATA)
    cfg.model.dtype = "auto"
    load_unsloth(cfg)
    assert fake_unsloth_on_cuda.calls["from_pretrained"]["dtype"] is None
    assert fake_unsloth_on_cuda.calls["get_peft_model"]["random_state"] == 7


@pytest.mark.model
def test_on_cpu_the_same_lora_arguments_go_to_peft(tiny_llama: Path, monkeypatch: pytest.MonkeyPatch):
    from ftkit.engines.unsloth_train import pick_loader

    monkeypatch.setattr("ftkit.engines.unsloth_train.cuda_available", lambda: False)
    monkeypatch.setitem(sys.modules, "unsloth", None)  # an import would raise
    cfg = tiny_config(tiny_llama, SFT_DATA, random_state=11)
    loaded = pick_loader(cfg)(cfg)
    assert loaded.loader == "transformers+peft" and loaded.reason == "no CUDA GPU (Unsloth needs one)"
    lora = loaded.peft_config
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.bias, lora.use_rslora) == (8, 16, 0.0, "none", True)
    assert set(lora.target_modules) == set(SEVEN) and lora.modules_to_save == ["lm_head"]
    assert loaded.adapter_seed == 11 and loaded.trainer_args == {"max_length": 128, "gradient_checkpointing": False}


@pytest.mark.slow
def test_the_unsloth_path_trains_and_writes_its_loader_record(fake_unsloth_on_cuda, tiny_llama: Path, tmp_path: Path):
    from ftkit.engines.forward_sigterm import StopRequest
    from ftkit.engines.trl_train import train
    from ftkit.engines.unsloth_train import pick_loader

    cfg = tiny_config(tiny_llama, SFT_DATA)
    cfg.trainer["output_dir"] = str(tmp_path / "out")
    history = tmp_path / "history.jsonl"
    train(cfg, history, StopRequest(), pick_loader(cfg))
    losses = [r["loss"] for r in map(json.loads, history.read_text().splitlines()) if "loss" in r]
    assert losses[-1] < losses[0] - 0.5, losses
    record = json.loads((tmp_path / "loader.json").read_text())
    assert record["loader"] == "unsloth" and record["trainer_args"]["max_length"] == 128
    assert (tmp_path / "out" / "adapter_config.json").is_file()


# ---------------------------------------------------------------- config validation


def problems_of(tmp_path: Path, text: str) -> list[Any]:
    path = tmp_path / "sft.unsloth.yaml"
    path.write_text(text)
    located = load_yaml(path)
    return get_engine("unsloth").validate(located.data, located, path.name)


BASE = """\
base_model: some/model
stage: sft
lora: {r: 8, lora_alpha: 16, target_modules: all-linear}
dataset: {path: data/sft.jsonl}
"""


def test_a_typo_in_the_unsloth_section_is_named_with_file_line_and_a_suggestion(tmp_path: Path):
    [p] = problems_of(tmp_path, BASE + "unsloth:\n  max_seq_lenght: 4096\n")
    assert (Path(p.file).name, p.line, p.field) == ("sft.unsloth.yaml", 6, "unsloth.max_seq_lenght")
    assert "did you mean 'max_seq_length'" in p.fix


def test_an_unknown_loader_is_refused_with_its_line(tmp_path: Path):
    [p] = problems_of(tmp_path, BASE + "unsloth:\n  loader: cuda\n")
    assert (p.line, p.field) == (6, "unsloth.loader") and "'unsloth'" in p.message


def test_gradient_checkpointing_in_trainer_is_refused_in_favour_of_the_unsloth_key(tmp_path: Path):
    [p] = problems_of(tmp_path, BASE + "trainer:\n  learning_rate: 2.0e-4\n  gradient_checkpointing: true\n")
    assert (p.line, p.field) == (7, "trainer.gradient_checkpointing")
    assert "unsloth.use_gradient_checkpointing" in p.fix


def test_a_max_length_above_max_seq_length_and_a_missing_lora_are_refused(tmp_path: Path):
    text = BASE.replace("lora: {r: 8, lora_alpha: 16, target_modules: all-linear}\n", "")
    found = problems_of(tmp_path, text + "unsloth: {max_seq_length: 512}\ntrainer:\n  max_length: 1024\n")
    by_field = {p.field: p for p in found}
    assert set(by_field) == {"lora", "trainer.max_length"}
    assert by_field["trainer.max_length"].line == 6 and "<= 512" in by_field["trainer.max_length"].fix
    assert "engine trl" in by_field["lora"].fix


def test_trainer_and_lora_keys_are_still_checked_against_trl_and_peft(tmp_path: Path):
    [p] = problems_of(tmp_path, BASE + "trainer:\n  learing_rate: 2.0e-4\n")
    assert (p.field, p.line) == ("trainer.learing_rate", 6) and "learning_rate" in p.fix


# ---------------------------------------------------------------- the engine's view of the recipe


def recipe_config() -> dict[str, Any]:
    return yaml.safe_load((RECIPE / "sft.unsloth.yaml").read_text())


def test_the_engine_is_registered_and_trains_through_its_own_entry_point(tmp_path: Path):
    from ftkit.engines.base import StageContext

    engine = get_engine("unsloth")
    assert isinstance(engine, UnslothEngine)
    ctx = StageContext("r", "sft", tmp_path, tmp_path, "cpu", 0)
    assert engine.command(tmp_path / "c.yaml", ctx)[1:3] == ["-m", "ftkit.engines.unsloth_train"]


def test_engine_facts_and_sequence_len_read_the_unsloth_section():
    from ftkit.estimate.from_engine import setting_from_facts

    engine = get_engine("unsloth")
    cfg = recipe_config()
    assert engine.sequence_len(cfg) == 2048
    facts = engine.engine_facts(cfg)
    assert (facts.engine, facts.adapter, facts.load_in_4bit, facts.upcasts_embeddings) == (
        "unsloth",
        "lora",
        True,
        True,
    )
    setting = setting_from_facts(facts).flat()
    expected = {
        "method": "qlora", "stage": "sft", "seq_len": 2048, "micro_batch": 2, "grad_accum": 4,
        "gradient_checkpointing": True, "attention": "sdpa", "optimizer": "adamw_8bit", "adamw_kernel": "fused",
        "sample_packing": False, "double_quant": True, "loss": "standard", "lora_rank": 16, "lora_dropout": 0.0,
        "lora_targets": tuple(SEVEN), "embedding_upcast": True,
    }  # fmt: skip
    assert {key: setting[key] for key in expected} == expected
    cfg["unsloth"] |= {"use_gradient_checkpointing": False, "max_seq_length": 4096}
    cfg["trainer"]["max_length"] = 1024
    changed = setting_from_facts(engine.engine_facts(cfg))
    assert (changed.compute.gradient_checkpointing, changed.batch.seq_len, engine.sequence_len(cfg)) == (
        False,
        1024,
        1024,
    )


def test_the_recipe_names_the_unsloth_image_the_locks_build():
    from ftkit_release.images import plan

    container = yaml.safe_load((RECIPE / "recipe.yaml").read_text())["container"]
    unsloth = next(b.ref for b in plan(ROOT) if b.name == "unsloth")
    assert (container["image"], container["tag"]) == (unsloth.image, unsloth.tag)


def test_the_smoke_profile_uses_the_transformers_peft_loader_and_full_insists_on_unsloth():
    from ftkit.recipes.load import load_recipe
    from ftkit.recipes.resolve import resolve_stage

    loaded = load_recipe(str(RECIPE))
    smoke = resolve_stage(loaded, "sft", "smoke").config
    full = resolve_stage(loaded, "sft", "full").config
    assert smoke["unsloth"]["loader"] == "transformers+peft" and full["unsloth"]["loader"] == "unsloth"
    assert smoke["lora"] == full["lora"], "the smoke run trains the same adapter"


# ---------------------------------------------------------------- a whole recipe run: metrics.json names the loader


@pytest.mark.slow
def test_a_tiny_unsloth_recipe_trains_on_cpu_and_metrics_json_says_transformers_peft(
    recipes_root: Path, tiny_llama: Path, tmp_path: Path
):
    from ftkit.cli import main

    rdir = copy_recipe("tiny-trl-sft-dpo", recipes_root, "tiny-unsloth-sft")
    cfg = yaml.safe_load((rdir / "sft.trl.yaml").read_text())
    cfg["lora"]["target_modules"] = SEVEN
    cfg["unsloth"] = {"loader": "auto", "max_seq_length": 128, "use_gradient_checkpointing": False}
    del cfg["trainer"]["max_length"]
    (rdir / "sft.unsloth.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    def one_stage(d: dict[str, Any]) -> None:
        d.update(engine="unsloth", export={"merge": False})
        d["stages"] = [{**d["stages"][0], "config": "sft.unsloth.yaml"}]
        d["profiles"]["smoke"]["base_model"] = str(tiny_llama)

    edit_yaml(rdir / "recipe.yaml", one_stage)
    edit_yaml(rdir / "expected-metrics.yaml", lambda d: d["profiles"]["smoke"].pop("dpo"))
    code = main(["recipe", "run", "tiny-unsloth-sft", "--profile", "smoke", "--runs-dir", str(tmp_path / "runs")])
    assert code == 0
    [run_dir] = list((tmp_path / "runs" / "tiny-unsloth-sft").iterdir())
    sft = json.loads((run_dir / "metrics.json").read_text())["stages"]["sft"]
    assert sft["loader"] == "transformers+peft"
    assert sft["train_loss_tail"] < sft["train_loss_first"] - 0.5 and sft["sequence_len"] == 128
    assert "ftkit: loader transformers+peft (no CUDA GPU" in (run_dir / "sft" / "train.log").read_text()
