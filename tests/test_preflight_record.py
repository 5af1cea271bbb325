"""What the pre-flight decided stays in the run dir: a refused run's metrics.json and report.md (status `refused`,
which check, its problems and fixes), `ftkit doctor` explaining it, `--resume` and `metrics check` refusing it, a
refused resume that stays resumable, and gates passed with --allow-pii / --force in report.md and the model card.

The refusals are real: a secret planted in the fixture recipe's data, a row that breaks its schema, a GPU profile on
this CPU machine. Training never starts in them, so the engine is the fast fake of tests/fakes.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import edit_yaml, write_jsonl
from fakes import RECIPE, FakeEngine, metrics, only, run
from ftkit.cli import main
from ftkit.errors import ExitCode
from ftkit.export.model_card import card_facts_from_run, render_model_card
from ftkit.pipeline.resume import find_resumable
from ftkit.pipeline.run_report import describe_override, gate_overrides
from test_pii_gate import KEY, plant_key


@pytest.fixture
def fake(fake_engine: FakeEngine) -> tuple[FakeEngine, Path]:
    return fake_engine, fake_engine.recipe_dir


def doctor(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["doctor", str(run_dir), "--json"]) == 0
    triage: dict[str, Any] = json.loads(capsys.readouterr().out)["run"]
    return triage


def flat(text: str) -> str:
    """Console output with its line wrapping undone."""
    return " ".join(text.split())


@pytest.mark.model
def test_a_run_the_pii_gate_refuses_is_recorded_and_doctor_explains_it(fake, tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    engine, rdir = fake
    plant_key(rdir, line=3)
    assert run(tmp_path / "runs") == ExitCode.DATA_INVALID, "the exit code the user gets is the gate's"
    run_dir = only(tmp_path / "runs")
    state = metrics(run_dir)
    assert state["status"] == "refused" and engine.calls == [] and state["stages"] == {}
    refused = state["refused"]
    assert (refused["check"], refused["stage"], refused["exit_code"]) == ("pii", "sft", 3)
    [problem] = refused["problems"]
    assert problem["file"] == str(rdir / "data" / "sft.jsonl") and problem["line"] == 3
    assert "1 of 20 rows carry SECRET (allowed: 0)" in problem["message"] and "--allow-pii" in problem["fix"]
    assert KEY not in (run_dir / "metrics.json").read_text() + (run_dir / "report.md").read_text()
    report = (run_dir / "report.md").read_text()
    assert "## Refused before training" in report and "## Stages" not in report
    assert "The PII gate refused the run on stage 'sft' (exit code 3)" in report
    assert f"`{problem['file']}:3` field `messages.1.content`: 1 of 20 rows carry SECRET" in report

    triage = doctor(run_dir, capsys)
    assert triage["status"] == "refused" and triage["refused"]["check"] == "pii"
    [finding] = triage["findings"]
    assert finding["id"] == "refused-pii" and finding["severity"] == "error"
    assert finding["title"] == "the PII gate refused the run on stage 'sft' before training (exit code 3)"
    assert finding["where"] == f"{problem['file']}:3" and finding["excerpt"] == problem["message"]
    assert finding["detail"] == refused["message"] and "carries PII over the recipe's limits" in finding["detail"]
    assert "--allow-pii" in finding["fix"][0]
    assert finding["fix"][-1].startswith(f"then start a new run: ftkit recipe run {RECIPE} --profile smoke")
    assert main(["doctor", str(run_dir)]) == 0
    out = flat(capsys.readouterr().out)
    assert "run " in out and "status refused" in out and "the PII gate refused the run on stage 'sft'" in out
    assert "not a run dir" not in out

    assert main(["recipe", "run", "--resume", str(run_dir)]) == ExitCode.USAGE
    err = flat(capsys.readouterr().err)
    assert "cannot resume: the PII gate refused this run before training" in err
    assert "nothing trained, nothing to resume" in err and "ftkit doctor" in err
    assert main(["metrics", "check", str(run_dir)]) == ExitCode.USAGE
    assert "nothing trained, nothing to check" in flat(capsys.readouterr().err)
    assert engine.calls == [] and metrics(run_dir) == state, "refusing a resume changes nothing"
    assert find_resumable(tmp_path / "runs", RECIPE, "smoke", []) is None, "a restarted pod starts a new run"


@pytest.mark.model
def test_a_row_that_breaks_the_schema_is_a_refused_data_check_located_at_its_line(fake, tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    _, rdir = fake
    rows = [json.loads(line) for line in (rdir / "data" / "sft.jsonl").read_text().splitlines()]
    bad = {"id": "x", "messages": [{"role": "user", "content": "no answer"}]}
    path = write_jsonl(tmp_path / "mine.jsonl", [*rows[:6], bad, *rows[6:]])  # the recipe's sample stays valid
    assert run(tmp_path / "runs", "--set", f"sft.dataset.path={path}") == ExitCode.DATA_INVALID
    run_dir = only(tmp_path / "runs")
    refused = metrics(run_dir)["refused"]
    assert (refused["check"], refused["stage"]) == ("data", "sft") and refused["problems_total"] >= 1
    assert refused["problems"][0]["line"] == 7 and refused["problems"][0]["file"] == str(path)
    [finding] = doctor(run_dir, capsys)["findings"]
    assert finding["id"] == "refused-data" and finding["where"] == f"{path}:7"
    assert finding["title"].startswith("the data check (rows that break the stage's schema) refused the run")


@pytest.mark.model
def test_a_gpu_profile_on_a_machine_without_one_is_a_refused_hardware_check(fake, tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("ftkit.envinfo.gpus", lambda: [])
    assert run(tmp_path / "runs", "--profile", "full") == ExitCode.ENVIRONMENT
    refused = metrics(only(tmp_path / "runs"))["refused"]
    assert refused["check"] == "hardware" and refused["stage"] is None and refused["exit_code"] == 5
    assert "PROFILE=smoke" in refused["problems"][0]["fix"]
    [finding] = doctor(only(tmp_path / "runs"), capsys)["findings"]
    assert finding["id"] == "refused-hardware" and "needs 1 GPU" in finding["detail"]


@pytest.mark.model
def test_a_heldout_file_that_leaks_training_rows_is_a_refused_leakage_check(fake, tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    _, rdir = fake
    leaked = (rdir / "data" / "dpo.jsonl").read_text().splitlines()[0]
    (rdir / "data" / "heldout.jsonl").write_text(leaked + "\n")
    edit_yaml(rdir / "recipe.yaml", lambda d: d["profiles"]["smoke"].update(export={"eval": {
        "heldout": "data/heldout.jsonl", "general_prompts": None, "gate": False}}))  # fmt: skip
    code = run(tmp_path / "runs")
    assert code == ExitCode.DATA_INVALID  # held-out rows that are trained on are a data problem
    refused = metrics(only(tmp_path / "runs"))["refused"]
    assert refused["check"] == "leakage" and refused["stage"] is None and refused["exit_code"] == code
    assert refused["problems"][0]["field"] == "export.eval.heldout"
    [finding] = doctor(only(tmp_path / "runs"), capsys)["findings"]
    assert finding["id"] == "refused-leakage" and finding["excerpt"] == refused["problems"][0]["message"]
    assert finding["where"].startswith(str(rdir / "data" / "heldout.jsonl"))


@pytest.mark.model
def test_a_refused_resume_keeps_the_run_resumable_and_the_finished_run_remembers_it(fake, tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    engine, rdir = fake
    engine.stop_at = {"dpo": 5}
    assert run(tmp_path / "runs") == ExitCode.INTERRUPTED
    run_dir = only(tmp_path / "runs")
    clean = (rdir / "data" / "sft.jsonl").read_text()
    plant_key(rdir, line=4)
    engine.stop_at = {}
    assert main(["recipe", "run", "--resume", str(run_dir)]) == ExitCode.DATA_INVALID
    state = metrics(run_dir)
    assert state["status"] == "interrupted" and state["stages"]["sft"]["status"] == "done", "still resumable"
    assert state["refused"]["check"] == "pii" and state["refused"]["problems"][0]["line"] == 4
    report = (run_dir / "report.md").read_text()
    assert "## Resume refused" in report and "The run is still resumable (status interrupted)" in report
    assert "## Stages" in report, "what trained before is still reported"
    [finding] = [f for f in doctor(run_dir, capsys)["findings"] if f["id"].startswith("refused")]
    assert finding["title"].startswith("the PII gate refused a resume on stage 'sft'")
    assert finding["fix"][-1] == f"then resume again: ftkit recipe run --resume {run_dir} (the run stays interrupted)"

    (rdir / "data" / "sft.jsonl").write_text(clean)
    assert main(["recipe", "run", "--resume", str(run_dir)]) == 0
    assert engine.calls == [("sft", 0), ("dpo", 0), ("dpo", 5)]
    done = metrics(run_dir)
    assert done["status"] == "passed" and "refused" not in done
    assert [r["check"] for r in done["refusals"]] == ["pii"]
    assert "resume refused by the PII gate (stage sft)" in (run_dir / "report.md").read_text()
    assert [f for f in doctor(run_dir, capsys)["findings"] if f["id"].startswith("refused")] == []


@pytest.mark.model
def test_allow_pii_puts_what_the_gate_let_through_in_the_report_and_the_model_card(fake, tmp_path: Path):  # type: ignore[no-untyped-def]
    _, rdir = fake
    plant_key(rdir, line=3)
    assert run(tmp_path / "runs", "--allow-pii") == 0
    run_dir = only(tmp_path / "runs")
    line = (f"sft: the PII gate found SECRET in 1 of 20 rows (allowed: 0; first at line 3) in "
            f"`{rdir / 'data' / 'sft.jsonl'}` and let it through (--allow-pii)")  # fmt: skip
    report = (run_dir / "report.md").read_text()
    assert f"## Gates overridden\n\n- {line}" in report and KEY not in report
    card = render_model_card(card_facts_from_run(metrics(run_dir), license_id=None, container=None, datasets=[],
                                                 methods={}))  # fmt: skip
    assert "## Pre-flight gates overridden" in card and f"- {line}" in card and KEY not in card
    assert "dpo: the PII gate" not in report, "dpo's data passed the gate"


def test_a_forced_vram_preflight_is_described_with_its_estimate():
    stages = {"sft": {"vram_estimate": {"verdict": "forced", "need_gib": 30.25, "budget_gib": 22.5}},
              "dpo": {"vram_estimate": {"verdict": "fits", "need_gib": 12.0, "budget_gib": 22.5}}}  # fmt: skip
    [forced] = gate_overrides({"stages": stages})
    text = describe_override(forced)
    assert text == ("sft: the VRAM pre-flight estimated 30.25 GiB per GPU on a 22.5 GiB GPU (it refuses what will "
                    "not fit) and was overridden (--force)")  # fmt: skip
    facts = card_facts_from_run({"stages": stages, "recipe": RECIPE}, license_id=None, container=None, datasets=[],
                                methods={})  # fmt: skip
    assert f"- {text}" in render_model_card(facts)
