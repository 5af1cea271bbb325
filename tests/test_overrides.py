from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, copy_recipe
from ftkit.dotted_keys import apply_overrides, parse_set
from ftkit.errors import ExitCode, FtkitError
from ftkit.recipes.load import LoadedRecipe, load_recipe
from ftkit.recipes.resolve import config_heads, route_sets


def test_set_values_are_parsed_as_yaml_scalars():
    assert parse_set(["lr=1e-4", "steps=5", "flag=true", "name=abc", "lst=[a, b]"]) == [
        ("lr", 1e-4),
        ("steps", 5),
        ("flag", True),
        ("name", "abc"),
        ("lst", ["a", "b"]),
    ]


def test_set_without_equals_is_a_usage_error_with_a_fix():
    with pytest.raises(FtkitError) as exc:
        parse_set(["max_steps"])
    assert "KEY=VALUE" in str(exc.value) and "fix:" in str(exc.value)


def test_dotted_overrides_index_lists_and_leave_the_original_untouched():
    base = {"datasets": [{"path": "hub/id", "type": "chat_template"}], "special_tokens": {"pad_token": "x"}}
    out = apply_overrides(base, {"datasets.0.path": "data/a.jsonl", "special_tokens.pad_token": "y", "new.key": 1})
    assert out["datasets"][0] == {"path": "data/a.jsonl", "type": "chat_template"}
    assert out["special_tokens"]["pad_token"] == "y" and out["new"] == {"key": 1}
    assert base["datasets"][0]["path"] == "hub/id"


def test_override_past_the_end_of_a_list_names_the_key():
    with pytest.raises(FtkitError) as exc:
        apply_overrides({"datasets": [{}]}, {"datasets.3.path": "x"})
    assert "datasets.3.path" in str(exc.value)


def test_sets_route_to_one_stage_when_prefixed_with_its_name():
    routed = route_sets([("sft.max_steps", 3), ("learning_rate", 0.1), ("report_to", "tensorboard")], ["sft", "dpo"])
    assert routed.per_stage == {"sft": {"max_steps": 3}}
    assert routed.common == {"learning_rate": 0.1}
    assert routed.report_to == "tensorboard"


def test_unknown_report_backend_is_rejected():
    with pytest.raises(FtkitError, match="report_to"):
        route_sets([("report_to", "neptune")], [])


@pytest.fixture(scope="module")
def sft_recipe() -> LoadedRecipe:
    """The shipped single-stage Axolotl recipe (stages: sft)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTKIT_RECIPES", str(ROOT / "recipes"))
        return load_recipe("llama8b-qlora-sft", check_profiles=False)


def test_a_set_with_an_unknown_stage_prefix_names_the_stage_and_the_recipes_stages(sft_recipe: LoadedRecipe):
    with pytest.raises(FtkitError) as exc:
        route_sets(parse_set(["nosuchstage.max_steps=1"]), ["sft"], recipe=sft_recipe)
    assert exc.value.code == ExitCode.USAGE
    assert exc.value.title == (
        "--set nosuchstage.max_steps=1: 'nosuchstage' is not a stage of llama8b-qlora-sft (stages: sft); "
        "for an engine-config key of every stage write max_steps=1"
    )
    assert "sft.axolotl.yaml" not in str(exc.value)  # no longer blamed on the engine YAML


def test_a_set_with_a_stage_name_typo_suggests_the_stage(recipes_root: Path):
    copy_recipe("tiny-trl-sft-dpo", recipes_root)
    loaded = load_recipe("tiny-trl-sft-dpo", check_profiles=False)
    with pytest.raises(FtkitError) as exc:
        route_sets(parse_set(["dop.trainer.beta=0.2"]), ["sft", "dpo"], recipe=loaded)
    [p] = exc.value.problems
    assert "(stages: sft, dpo)" in p.message and p.fix and p.fix.startswith("did you mean dpo.trainer.beta=0.2")
    routed = route_sets(parse_set(["trainer.max_steps=3", "dpo.trainer.beta=0.2"]), ["sft", "dpo"], recipe=loaded)
    assert routed.common == {"trainer.max_steps": 3} and routed.per_stage == {"dpo": {"trainer.beta": 0.2}}


def test_nested_engine_keys_still_route_to_every_stage(sft_recipe: LoadedRecipe):
    assert "fsdp_config" not in config_heads(sft_recipe)  # known from Axolotl's schema only
    sets = ["special_tokens.pad_token=<pad>", "datasets.0.path=data/x.jsonl", "fsdp_config.fsdp_offload_params=true"]
    routed = route_sets(parse_set([*sets, "sft.datasets.0.split=train"]), ["sft"], recipe=sft_recipe)
    assert routed.common == {
        "special_tokens.pad_token": "<pad>", "datasets.0.path": "data/x.jsonl", "fsdp_config.fsdp_offload_params": True
    }  # fmt: skip
    assert routed.per_stage == {"sft": {"datasets.0.split": "train"}}
