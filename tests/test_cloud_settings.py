"""SageMaker hyperparameters and RunPod environment -> recipe, profile and `--set` values, through the `--set`
checks; SageMaker input channels -> the stages' dataset paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ftkit.cloud.channels import channel_sets, input_channels
from ftkit.cloud.settings import CloudRun, parse_hyperparameters, parse_runpod_env, validate_run
from ftkit.dotted_keys import parse_set
from ftkit.errors import FtkitError
from ftkit.recipes.load import load_recipe
from ftkit.recipes.resolve import resolve_stage, route_sets

HP = Path("/opt/ml/input/config/hyperparameters.json")


def test_hyperparameters_are_strings_typed_by_the_set_parser() -> None:
    raw = {
        "recipe": "tiny-trl-sft-dpo",
        "profile": '"smoke"',  # framework estimators JSON-encode every value once more
        "sft.trainer.max_steps": "5",
        "trainer.learning_rate": "1e-4",
        "lora.target_modules": "[q_proj, v_proj]",
        "report_to": "none",
        "model.load_in_4bit": "false",
        "sagemaker_region": '"us-east-1"',  # SageMaker's own keys are left out
    }
    run = parse_hyperparameters(raw, HP)
    assert (run.recipe, run.profile) == ("tiny-trl-sft-dpo", "smoke")
    assert run.sets == ["sft.trainer.max_steps=5", "trainer.learning_rate=1e-4", "lora.target_modules=[q_proj, v_proj]",
                        "report_to=none", "model.load_in_4bit=false"]  # fmt: skip
    assert dict(parse_set(run.sets)) == {
        "sft.trainer.max_steps": 5, "trainer.learning_rate": 1e-4, "lora.target_modules": ["q_proj", "v_proj"],
        "report_to": "none", "model.load_in_4bit": False,
    }  # fmt: skip
    assert parse_hyperparameters({"recipe": "r", "steps": 5}, HP).sets == ["steps=5"], "non-strings as JSON"
    assert parse_hyperparameters({"recipe": "r"}, HP).profile == "full"


def test_the_recipe_fingerprint_is_no_set_override() -> None:
    run = parse_hyperparameters({"recipe": "r", "recipe_sha256": "ab" * 32, "report_to": "none"}, HP)
    assert run.fingerprint == "ab" * 32 and run.sets == ["report_to=none"]
    pod = parse_runpod_env({"RECIPE": "r", "RECIPE_SHA256": "cd" * 32, "SET": "report_to=none"})
    assert pod.fingerprint == "cd" * 32 and pod.sets == ["report_to=none"]
    assert parse_runpod_env({"RECIPE": "r"}).fingerprint == "", "an older launcher: nothing to check"


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"profile": "full"}, "recipe", "no 'recipe' hyperparameter"),
        ({"recipe": " "}, "recipe", "no 'recipe' hyperparameter"),
        ({"recipe": "r", "sft.trainer.max_steps": "[1, 2"}, "sft.trainer.max_steps", "not valid YAML"),
        (["recipe", "r"], None, "not a JSON object"),
    ],
)
def test_bad_hyperparameters_name_the_hyperparameter_and_the_file(raw: object, field: str | None, words: str) -> None:
    with pytest.raises(FtkitError) as err:
        parse_hyperparameters(raw, HP)
    [problem] = err.value.problems
    assert problem.field == field and problem.file == str(HP) and words in problem.message
    if field and field != "recipe":
        assert f"hyperparameter '{field}'" in problem.message


def test_an_unknown_key_in_a_hyperparameter_is_refused_with_its_name(stub_recipe) -> None:  # type: ignore[no-untyped-def]
    stub_recipe("tiny-trl-sft-dpo")
    loaded = load_recipe("tiny-trl-sft-dpo", check_profiles=False)
    run = parse_hyperparameters({"recipe": loaded.name, "sft.trainer.max_stesp": "3"}, HP)
    with pytest.raises(FtkitError) as err:
        validate_run(loaded, run, str(HP))
    [problem] = err.value.problems
    assert problem.file == str(HP) and problem.field == "sft.trainer.max_stesp"
    assert "max_stesp" in problem.message and "hyperparameter 'sft.trainer.max_stesp'" in problem.message
    with pytest.raises(FtkitError, match="no profile 'fast'") as err:
        validate_run(loaded, CloudRun(loaded.name, "fast"), str(HP))
    assert err.value.problems[0].field == "profile"
    validate_run(loaded, parse_hyperparameters({"recipe": loaded.name, "sft.trainer.max_steps": "3"}, HP), str(HP))


def test_runpod_environment() -> None:
    run = parse_runpod_env({"RECIPE": "llama8b-qlora-dpo", "SET": "sft.learning_rate=1e-4 'run_name=a b'"})
    assert (run.recipe, run.profile, run.sets) == (
        "llama8b-qlora-dpo",
        "full",
        ["sft.learning_rate=1e-4", "run_name=a b"],
    )
    assert parse_runpod_env({"RECIPE": "r", "PROFILE": "smoke"}).profile == "smoke"
    with pytest.raises(FtkitError) as err:
        parse_runpod_env({"PROFILE": "full"})
    assert err.value.problems[0].field == "RECIPE"
    with pytest.raises(FtkitError) as err:
        parse_runpod_env({"RECIPE": "r", "SET": "lr=1 oops"})
    assert "environment variable SET" in err.value.problems[0].message and "oops" in err.value.problems[0].message
    with pytest.raises(FtkitError, match="not a valid space-separated list"):
        parse_runpod_env({"RECIPE": "r", "SET": "a='b"})


def _channel(root: Path, name: str, *files: str) -> Path:
    d = root / "input" / "data" / name
    d.mkdir(parents=True)
    for f in files:
        (d / f).write_text('{"x": 1}\n')
    return d


@pytest.mark.parametrize(("recipe", "key"), [("tiny-trl-sft-dpo", "dataset"), ("tiny-axolotl-sft-dpo", "datasets.0")])
def test_a_channel_replaces_its_stages_dataset_through_set_overrides(  # type: ignore[no-untyped-def]
    recipe: str, key: str, stub_recipe, tmp_path: Path
):
    stub_recipe(recipe)
    loaded = load_recipe(recipe, check_profiles=False)
    channel = _channel(tmp_path, "dpo", "pairs.jsonl")
    (channel / ".manifest").write_text("hidden files are not data")
    sets = channel_sets(loaded, "smoke", [], input_channels(tmp_path / "input" / "data"))
    path = str(channel / "pairs.jsonl")
    assert sets == [f"dpo.{key}.path={json.dumps(path)}", f'dpo.{key}.split="train"']
    routed = route_sets(parse_set(sets), ["sft", "dpo"])
    config = resolve_stage(loaded, "dpo", "smoke", routed).config
    from ftkit.engines import get_engine

    assert get_engine(loaded.recipe.engine).dataset_paths(config) == [path]
    assert resolve_stage(loaded, "sft", "smoke", routed).config == resolve_stage(loaded, "sft", "smoke").config


def test_channel_errors_name_the_channel(stub_recipe, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stub_recipe("tiny-trl-sft-dpo")
    loaded = load_recipe("tiny-trl-sft-dpo", check_profiles=False)
    cases = [
        ("eval", ["a.jsonl"], "not a stage of tiny-trl-sft-dpo"),
        ("sft", [], "is empty"),
        ("dpo", ["a.jsonl", "b.jsonl"], "none of ['a.jsonl', 'b.jsonl'] is dataset 0"),
    ]
    for i, (name, files, words) in enumerate(cases):
        channel = _channel(tmp_path / str(i), name, *files)
        with pytest.raises(FtkitError, match=words.replace("[", r"\[").replace("]", r"\]")) as err:
            channel_sets(loaded, "smoke", [], {name: channel})
        assert err.value.problems[0].field == name
    both = _channel(tmp_path / "named", "dpo", "dpo.jsonl", "other.jsonl")  # the recipe's file name picks one
    assert channel_sets(loaded, "smoke", [], {"dpo": both})[0].endswith('/dpo/dpo.jsonl"')


@pytest.mark.parametrize(
    ("split", "becomes"),
    [("train_prefs", "train"), ("train[:16]", "train[:16]"), ("train_sft[:1000]", "train[:1000]"), ("test", "train")],
)
def test_a_local_file_replaces_a_named_split_by_train_and_keeps_its_slice(split: str, becomes: str) -> None:
    from ftkit.engines import get_engine

    cfg = {"datasets": [{"path": "HuggingFaceH4/ultrafeedback_binarized", "split": split}]}
    keys = get_engine("axolotl").local_dataset_keys(cfg, "/opt/ml/input/data/dpo/dpo.jsonl")
    assert keys == {"datasets.0.path": "/opt/ml/input/data/dpo/dpo.jsonl", "datasets.0.split": becomes}
