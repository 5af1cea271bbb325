"""The PII gate: a recipe's pre-flight scans every stage's data and refuses secrets unless --allow-pii."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from conftest import copy_recipe, edit_yaml, write_jsonl
from fakes import FakeEngine
from ftkit.cli import main
from ftkit.errors import FtkitError
from ftkit.pii.findings import ENTITIES
from ftkit.pii.gate import gate_dataset, thresholds
from ftkit.pii.rows import ScanSettings
from ftkit.recipes.schema import PiiEntity

KEY = "AKIAQX4BZ7RW2M5TNV6P"


def plant_key(recipe_dir: Path, line: int = 3) -> None:
    path = recipe_dir / "data" / "sft.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[line - 1]["messages"][-1]["content"] += f" Use AWS_ACCESS_KEY_ID={KEY} to deploy."
    write_jsonl(path, rows)


def run(name: str, runs: Path, *extra: str) -> int:
    return main(["recipe", "run", name, "--profile", "smoke", "--runs-dir", str(runs), *extra])


def test_recipe_schema_knows_every_entity():
    assert set(typing.get_args(PiiEntity)) == set(ENTITIES)


def test_secrets_are_refused_by_default_and_other_entities_only_reported(tmp_path: Path):
    rows = [{"text": f"write to a{i}@b.io"} for i in range(3)] + [{"text": f"key {KEY}"}]
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(FtkitError) as err:
        gate_dataset(src, ScanSettings(ner="off"), thresholds(), report_path=tmp_path / "r.json")
    [problem] = err.value.problems
    assert err.value.code == 3 and problem.line == 4 and problem.field == "text"
    assert "1 of 4 rows carry SECRET (allowed: 0)" in problem.message and KEY not in problem.message
    assert "--allow-pii" in (problem.fix or "")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["gate"]["verdict"] == "refused" and saved["rows_by_entity"] == {"EMAIL": 3, "SECRET": 1}


def test_limits_are_per_entity_rows_and_none_lifts_one(tmp_path: Path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"text": f"write to a{i}@b.io, key {KEY}"} for i in range(3)])
    with pytest.raises(FtkitError):
        gate_dataset(src, ScanSettings(ner="off"), thresholds({"SECRET": None, "EMAIL": 2}))
    result = gate_dataset(src, ScanSettings(ner="off"), thresholds({"SECRET": None, "EMAIL": 3}))
    assert result["gate"]["verdict"] == "passed"
    allowed = gate_dataset(src, ScanSettings(ner="off"), thresholds(), allow=True)
    assert allowed["gate"]["verdict"] == "overridden" and allowed["gate"]["violations"][0]["entity"] == "SECRET"


def test_a_negative_limit_in_recipe_yaml_is_a_schema_error(recipes_root: Path):
    rdir = copy_recipe("llama8b-qlora-dpo", recipes_root)
    edit_yaml(rdir / "recipe.yaml", lambda d: d["pii"]["max_rows"].update(EMAIL=-1))
    assert main(["recipe", "validate", "llama8b-qlora-dpo"]) == 2


@pytest.mark.model
def test_a_planted_aws_key_stops_the_real_recipe_before_training(
    recipes_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    rdir = copy_recipe("llama8b-qlora-dpo", recipes_root)
    plant_key(rdir, line=7)
    assert run("llama8b-qlora-dpo", tmp_path / "runs") == 3
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "PII gate" in err and "training did not start" in err and "sft.jsonl:7" in err
    assert "1 of 48 rows carry SECRET" in err and KEY not in err
    [run_dir] = list((tmp_path / "runs" / "llama8b-qlora-dpo").iterdir())
    assert not (run_dir / "sft" / "adapter").exists() and not list((run_dir / "sft").glob("*.log"))
    assert json.loads((run_dir / "sft" / "pii-sft.json").read_text())["gate"]["verdict"] == "refused"


@pytest.mark.model
def test_allow_pii_trains_anyway_and_records_the_overridden_gate(fake_engine: FakeEngine, tmp_path: Path):
    """Through the fake engine (the gate decides before training; training itself is the engines' tests' job)."""
    plant_key(fake_engine.recipe_dir)
    assert run("tiny-trl-sft-dpo", tmp_path / "refused") == 3
    assert fake_engine.calls == [], "refused before training"
    assert run("tiny-trl-sft-dpo", tmp_path / "runs", "--allow-pii") == 0
    assert [stage for stage, _ in fake_engine.calls] == ["sft", "dpo"], "both stages trained anyway"
    [run_dir] = list((tmp_path / "runs" / "tiny-trl-sft-dpo").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    [pii] = metrics["stages"]["sft"]["pii"]
    assert pii["gate"]["verdict"] == "overridden" and pii["rows_by_entity"] == {"SECRET": 1}
    assert metrics["stages"]["dpo"]["pii"][0]["gate"]["verdict"] == "passed"
