"""The run record: metrics.json written from one typed `RunRecord` and read back without loss, and a run that
resolves each stage's engine config once (in the pre-flight) and trains on exactly that config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fakes import RECIPE, FakeEngine, run
from ftkit.pipeline import run as pipeline_run
from ftkit.run_record import METRICS_FILE, RunRecord


def _record(**changes: object) -> RunRecord:
    base = RunRecord(
        recipe="r", recipe_dir="/r", profile="smoke", sets=["lr=1"], run_dir="/runs/r/1", checkpoint_dir=None,
        started="2026-12-07T10:00:00+00:00", git_commit="abc", hardware={"device": "cpu"}, hardware_label="cpu",
        versions={"torch": "2.13.0"}, engine="trl", image={"running_digest": None},
    )  # fmt: skip
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_a_new_record_writes_no_optional_keys_until_they_are_set():
    data = _record().to_dict()
    assert data["status"] == "running" and data["stages"] == {} and data["interruptions"] == []
    assert not {"export", "finished", "checks", "model_card", "refused"} & data.keys()
    assert "extra" not in data


def test_a_record_read_back_from_metrics_json_writes_the_same_json_unknown_keys_included(tmp_path: Path):
    record = _record(status="passed", finished="2026-12-07T10:05:00+00:00", checks=[{"metric": "eval_loss"}])
    record.stages["sft"] = {"steps": 5, "train_loss_first": 2.5}
    record.write(tmp_path, None)
    written = json.loads((tmp_path / METRICS_FILE).read_text())
    written["written_by_a_newer_ftkit"] = {"x": 1}
    again = RunRecord.from_dict(written)
    assert again.status == "passed" and again.stages["sft"]["steps"] == 5
    assert again.extra == {"written_by_a_newer_ftkit": {"x": 1}}
    assert again.to_dict() == written


def test_the_record_is_copied_beside_the_checkpoints(tmp_path: Path):
    ckpt = tmp_path / "ckpt"
    _record().write(tmp_path, ckpt)
    assert (ckpt / METRICS_FILE).read_text() == (tmp_path / METRICS_FILE).read_text()


@pytest.mark.model  # the runner loads the tiny model's tokenizer in the pre-flight
def test_a_run_resolves_each_stage_once_and_trains_on_that_config(
    fake_engine: FakeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls: list[tuple[str, str | None]] = []
    real = pipeline_run.resolve_stage

    def counting(loaded, stage_name, profile_name, sets=None, **kw):  # type: ignore[no-untyped-def]
        calls.append((stage_name, kw.get("init_model")))
        return real(loaded, stage_name, profile_name, sets, **kw)

    monkeypatch.setattr(pipeline_run, "resolve_stage", counting)
    assert run(tmp_path / "runs") == 0
    assert [c[0] for c in calls] == ["sft", "dpo"]  # once each: the pre-flight's resolution is the one trained on
    run_dir = next((tmp_path / "runs" / RECIPE).iterdir())
    dpo = yaml.safe_load((run_dir / "resolved" / "dpo.yaml").read_text())
    merged_sft = json.loads((run_dir / METRICS_FILE).read_text())["stages"]["sft"]["merged_dir"]
    assert dpo["base_model"] == merged_sft == calls[1][1]  # the path named before sft trained is where it merged
