from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import copy_recipe
from fakes import RECIPE, FakeEngine, metrics, only, run
from ftkit.cli import main
from ftkit.pipeline.metrics_gate import check_metrics, summarize
from ftkit.recipes.schema import Bound, ExpectedMetrics

HISTORY = [
    {"loss": 4.0, "step": 1, "rewards/accuracies": 0.0, "rewards/margins": 0.0, "tokens/total": 100},
    {"loss": 3.0, "step": 2, "rewards/accuracies": 0.5, "rewards/margins": 0.1, "tokens/total": 200},
    {"loss": 2.0, "step": 3, "rewards/accuracies": 1.0, "rewards/margins": 0.3, "tokens/total": 300},
    {"loss": 1.0, "step": 4, "rewards/accuracies": 1.0, "rewards/margins": 0.5, "tokens/total": 400},
    {"eval_loss": 1.5, "step": 4},
    {"train_runtime": 8.0, "train_loss": 2.5, "step": 4},
]


def test_summarize_reduces_a_history_to_first_tail_and_rates():
    m = summarize(HISTORY)
    assert m["train_loss_first"] == 4.0 and m["train_loss_last"] == 1.0 and m["train_loss_min"] == 1.0
    assert m["train_loss_tail"] == 1.0 and m["train_loss_drop"] == 3.0  # tail = last quarter (1 of 4 steps)
    assert m["eval_loss"] == 1.5
    assert m["rewards_accuracy_tail"] == 1.0 and m["rewards_margin_delta"] == 0.5
    assert m["tokens_per_second"] == 50.0 and m["steps"] == 4


def test_a_bound_fails_when_broken_or_not_measured():
    expected = ExpectedMetrics(
        recipe="r",
        profiles={
            "smoke": {
                "sft": {
                    "train_loss_drop": Bound(min=1.0, source="estimate"),
                    "train_loss_last": Bound(max=0.5, source="estimate"),
                    "eval_loss": Bound(max=9.0, source="estimate"),
                }
            }
        },
    )
    rows = check_metrics(
        {"sft": {"train_loss_drop": 3.0, "train_loss_last": 1.0, "eval_loss": None}}, expected, "smoke"
    )
    assert [r.passed for r in rows] == [True, False, False]
    assert rows[1].reason == "1 > max 0.5" and rows[2].reason == "not measured in this run"


def test_measured_source_requires_provenance():
    with pytest.raises(ValueError, match=r"source: measured needs"):
        Bound(min=1, source="measured")


def test_metrics_check_exits_1_with_a_readable_table_when_a_bound_breaks(
    recipes_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    rdir = copy_recipe("llama8b-qlora-sft", recipes_root)
    run = tmp_path / "run"
    run.mkdir()
    stages = {"sft": {"train_loss_drop": 0.01}}
    run_json = {"recipe": "llama8b-qlora-sft", "recipe_dir": str(rdir), "profile": "smoke", "stages": stages}
    (run / "metrics.json").write_text(json.dumps(run_json))
    assert main(["metrics", "check", str(run)]) == 1
    printed = capsys.readouterr().out
    assert "train_loss_drop" in printed and "FAIL" in printed and "min" in printed

    bounds = yaml.safe_load((rdir / "expected-metrics.yaml").read_text())
    stages["sft"] = {k: (b.get("min") or 0) + 1 for k, b in bounds["profiles"]["smoke"]["sft"].items()}
    for k, b in bounds["profiles"]["smoke"]["sft"].items():
        if b.get("max") is not None:
            stages["sft"][k] = b["max"] - 1e-6
    (run / "metrics.json").write_text(json.dumps(run_json))
    assert main(["metrics", "check", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True


@pytest.mark.model
def test_a_bound_the_run_breaks_fails_the_run_with_exit_1(
    fake_engine: FakeEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Through the fake engine (loss 3/step: 1.0 at step 3); the engines' own histories: tests/test_engines_train.py."""
    expected = yaml.safe_load((fake_engine.recipe_dir / "expected-metrics.yaml").read_text())
    expected["profiles"]["smoke"]["sft"]["train_loss_last"] = {"max": 0.001, "source": "estimate"}
    (fake_engine.recipe_dir / "expected-metrics.yaml").write_text(yaml.safe_dump(expected))
    assert run(tmp_path / "runs", "--set", "sft.trainer.max_steps=3", "--set", "dpo.trainer.max_steps=2") == 1
    out = capsys.readouterr().out
    assert "train_loss_last" in out and "FAIL" in out and "> max 0.001" in out
    result = metrics(only(tmp_path / "runs"))
    assert result["status"] == "failed-metrics" and result["recipe"] == RECIPE
    failed = [c for c in result["checks"] if not c["passed"]]
    assert ("train_loss_last", [">", "max", "0.001"]) in [(c["metric"], c["reason"].split(" ")[1:]) for c in failed]
