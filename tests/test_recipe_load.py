"""Bad input gives an error naming file, line or field and a fix; the real recipes load clean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, copy_recipe, edit_yaml
from ftkit.cli import main
from ftkit.errors import FtkitError
from ftkit.recipes.load import list_recipe_dirs, load_recipe
from ftkit.recipes.resolve import resolve_stage

REAL = [d.name for d in list_recipe_dirs(ROOT / "recipes")]


def problems_of(name: str) -> list:
    with pytest.raises(FtkitError) as exc:
        load_recipe(name)
    return exc.value.problems


@pytest.mark.parametrize("name", REAL)
def test_every_shipped_recipe_validates_for_all_profiles(name: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FTKIT_RECIPES", str(ROOT / "recipes"))
    loaded = load_recipe(name)
    assert loaded.expected is not None and {"smoke", "full"} <= set(loaded.recipe.profiles)


def test_shipped_recipes_include_the_two_llama8b_recipes():
    assert {"llama8b-qlora-sft", "llama8b-qlora-dpo"} <= set(REAL)


def test_missing_stage_file_names_the_recipe_field_and_line(recipes_root: Path):
    rdir = copy_recipe("llama8b-qlora-dpo", recipes_root)
    (rdir / "dpo.axolotl.yaml").unlink()
    [p] = problems_of("llama8b-qlora-dpo")
    assert p.file.endswith("recipe.yaml") and p.field == "stages.1.config" and p.line is not None
    assert "dpo.axolotl.yaml" in p.message and p.fix


def test_unknown_key_in_recipe_yaml_suggests_the_right_one(recipes_root: Path):
    rdir = copy_recipe("llama8b-qlora-sft", recipes_root)
    text = (rdir / "recipe.yaml").read_text().replace("base_model: meta-llama", "base_modle: meta-llama", 1)
    (rdir / "recipe.yaml").write_text(text)
    found = problems_of("llama8b-qlora-sft")
    unknown = next(p for p in found if "unknown key" in p.message)
    assert unknown.field == "base_modle" and unknown.fix == "did you mean 'base_model'?"
    assert unknown.line == next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("base_modle"))


def test_wrong_type_names_the_field(recipes_root: Path):
    rdir = copy_recipe("llama8b-qlora-sft", recipes_root)
    edit_yaml(rdir / "recipe.yaml", lambda d: d["hardware"].update(gpus="two"))
    [p] = problems_of("llama8b-qlora-sft")
    assert p.field == "hardware.gpus" and "integer" in p.message and p.line


def test_unknown_axolotl_key_is_caught_although_axolotl_would_ignore_it(recipes_root: Path):
    rdir = copy_recipe("llama8b-qlora-sft", recipes_root)
    cfg = rdir / "sft.axolotl.yaml"
    cfg.write_text(cfg.read_text().replace("learning_rate: 2.0e-4", "learing_rate: 2.0e-4"))
    [p] = problems_of("llama8b-qlora-sft")  # the typo alone: answered before Axolotl's schema is imported
    assert p.file == str(cfg) and p.field == "learing_rate" and p.fix == "did you mean 'learning_rate'?"
    assert p.line == next(i for i, ln in enumerate(cfg.read_text().splitlines(), 1) if ln.startswith("learing_rate"))
    cfg.write_text(cfg.read_text().replace("learing_rate: 2.0e-4\n", ""))
    found = problems_of("llama8b-qlora-sft")
    assert any(q.field == "learning_rate" and "required" in q.message for q in found)  # then Axolotl's own schema


def test_wrong_type_in_a_profile_override_names_where_it_was_set(recipes_root: Path):
    rdir = copy_recipe("llama8b-qlora-sft", recipes_root)
    edit_yaml(rdir / "recipe.yaml", lambda d: d["profiles"]["smoke"]["overrides"].update(micro_batch_size="four"))
    found = problems_of("llama8b-qlora-sft")
    assert any(p.field == "micro_batch_size" and "profiles.smoke" in p.message for p in found)


def test_sample_row_breaking_its_schema_names_the_line_and_field(recipes_root: Path):
    rdir = copy_recipe("llama8b-qlora-dpo", recipes_root)
    rows = (rdir / "data" / "dpo.jsonl").read_text().splitlines()
    bad = json.loads(rows[4])
    del bad["rejected"]
    rows[4] = json.dumps(bad)
    (rdir / "data" / "dpo.jsonl").write_text("\n".join(rows) + "\n")
    [p] = problems_of("llama8b-qlora-dpo")
    assert p.file.endswith("data/dpo.jsonl") and p.line == 5 and "'rejected' is a required property" in p.message


def test_init_from_must_name_an_earlier_stage(recipes_root: Path):
    rdir = copy_recipe("llama8b-qlora-dpo", recipes_root)
    edit_yaml(rdir / "recipe.yaml", lambda d: d["stages"][1].update(init_from="sfft"))
    [p] = problems_of("llama8b-qlora-dpo")
    assert "init_from 'sfft' must name an earlier stage" in p.message


def test_smoke_and_full_differ_only_by_the_overrides_recipe_yaml_lists(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FTKIT_RECIPES", str(ROOT / "recipes"))
    loaded = load_recipe("llama8b-qlora-dpo", check_profiles=False)
    smoke = loaded.recipe.profiles["smoke"]
    for stage in ("sft", "dpo"):
        full = resolve_stage(loaded, stage, "full").config
        resolved = resolve_stage(loaded, stage, "smoke")
        listed = {"base_model", *smoke.overrides, *smoke.stages.get(stage, {})}
        assert {c.key for c in resolved.changes} == listed
        assert full == loaded.stage_files(stage).config.data  # full = the YAML as written
        for key, value in full.items():
            if not any(k == key or k.startswith(key + ".") for k in listed):
                assert resolved.config[key] == value


def test_validate_cli_exit_code_is_2_for_a_broken_recipe(recipes_root: Path, capsys: pytest.CaptureFixture[str]):
    rdir = copy_recipe("llama8b-qlora-sft", recipes_root)
    (rdir / "sft.schema.json").write_text("{ not json")
    assert main(["recipe", "validate", "llama8b-qlora-sft", "--json"]) == 2
    [result] = json.loads(capsys.readouterr().out)
    assert result["valid"] is False and result["problems"][0]["file"].endswith("sft.schema.json")
    assert result["problems"][0]["line"] == 1


def test_report_to_switches_the_engines_tracking_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from ftkit.engines.base import StageContext
    from ftkit.recipes.resolve import route_sets

    monkeypatch.setenv("FTKIT_RECIPES", str(ROOT / "recipes"))
    loaded = load_recipe("llama8b-qlora-sft", check_profiles=False)
    ctx = StageContext("llama8b-qlora-sft", "sft", tmp_path, loaded.dir, "cpu", 0)
    for backend, expected in [
        ("tensorboard", {"use_tensorboard": True}),
        ("wandb", {"use_wandb": True, "wandb_project": "llama8b-qlora-sft"}),
        ("mlflow", {"use_mlflow": True}),
    ]:
        sets = route_sets([("report_to", backend)], ["sft"])
        cfg = resolve_stage(loaded, "sft", "smoke", sets, ctx=ctx).config
        assert expected.items() <= cfg.items()
        assert cfg["output_dir"] == str(tmp_path / "output")


def test_recipe_list_json_names_both_recipes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("FTKIT_RECIPES", str(ROOT / "recipes"))
    assert main(["recipe", "list", "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["llama8b-qlora-dpo"]["stages"] == ["sft", "dpo"]
    assert listed["llama8b-qlora-sft"]["engine"] == "axolotl"


def test_trust_remote_code_in_an_engine_yaml_needs_a_reason_in_recipe_yaml(recipes_root: Path):
    rdir = copy_recipe("llama8b-qlora-sft", recipes_root)
    cfg = rdir / "sft.axolotl.yaml"
    cfg.write_text(cfg.read_text().replace("trust_remote_code: false", "trust_remote_code: true"))
    [p] = problems_of("llama8b-qlora-sft")
    assert "trust_remote_code is on" in p.message and p.file == str(cfg)
    assert p.line == next(i for i, ln in enumerate(cfg.read_text().splitlines(), 1) if ln.startswith("trust_remote"))
    edit_yaml(rdir / "recipe.yaml", lambda d: d.update(trust_remote_code_reason="the model ships custom code"))
    assert load_recipe("llama8b-qlora-sft").recipe.trust_remote_code_reason
