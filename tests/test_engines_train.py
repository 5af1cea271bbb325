"""Both engines really train: SFT loss falls, the adapter changes the model, DPO rewards separate.

A tiny random Llama (built offline in a fixture) goes SFT -> merge -> DPO (init_from) through the
full `ftkit recipe run` path, once per engine (TRL's run is the session's `tiny_trl_run`, shared).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from ftkit.cli import main

pytestmark = pytest.mark.slow


def run(name: str, runs: Path, *extra: str) -> int:
    return main(["recipe", "run", name, "--profile", "smoke", "--runs-dir", str(runs), *extra])


def only_run_dir(runs: Path, name: str) -> Path:
    [d] = list((runs / name).iterdir())
    return d


def logits(model_dir: str | Path, text: str = "<|im_start|>user\nWho are you?<|im_end|>\n"):  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        return model(**tok(text, return_tensors="pt")).logits


# The TRL case reads the session's one trained run: under pytest-xdist it shares a worker with the other reader.
@pytest.mark.parametrize("engine", [pytest.param("trl", marks=pytest.mark.xdist_group("tiny_trl_run")), "axolotl"])
def test_sft_then_dpo_trains_and_the_adapters_change_the_model(
    engine: str, request: pytest.FixtureRequest, tiny_llama: Path, tmp_path: Path
):
    if engine == "trl":  # the session's one trained run of tiny-trl-sft-dpo (its exports too: test_export_recipe.py)
        trained = request.getfixturevalue("tiny_trl_run")
        code, run_dir = trained.code, trained.dir
    else:
        name = f"tiny-{engine}-sft-dpo"
        request.getfixturevalue("tiny_recipe")(name)
        code = run(name, tmp_path / "runs")
        run_dir = only_run_dir(tmp_path / "runs", name)
    assert code == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    sft, dpo = metrics["stages"]["sft"], metrics["stages"]["dpo"]

    assert sft["train_loss_tail"] < sft["train_loss_first"] - 0.5, "SFT loss must fall"
    assert dpo["rewards_margin_tail"] > dpo["rewards_margin_first"], "DPO margin must rise"
    assert dpo["rewards_accuracy_tail"] > 0.5
    assert metrics["status"] == "passed" and all(c["passed"] for c in metrics["checks"])

    # DPO starts from the SFT adapter merged into the base, and the merged models differ from the base.
    assert dpo["base_model"] == sft["merged_dir"]
    base, after_sft, after_dpo = logits(tiny_llama), logits(sft["merged_dir"]), logits(dpo["merged_dir"])
    assert (after_sft - base).abs().max() > 1e-2
    assert (after_dpo - after_sft).abs().max() > 1e-3

    # The run dir holds what a person needs to read it.
    for rel in ("resolved/sft.yaml", "resolved/dpo.changes.yaml", "sft/train.log", "report.md", "curves.png"):
        assert (run_dir / rel).is_file(), rel
    changes = yaml.safe_load((run_dir / "resolved/dpo.changes.yaml").read_text())
    assert any(c["key"] == "base_model" and c["origin"].startswith("init_from") for c in changes)


def test_a_set_key_the_engine_does_not_know_is_refused_before_training(tiny_recipe, tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    tiny_recipe("tiny-trl-sft-dpo")
    assert run("tiny-trl-sft-dpo", tmp_path / "runs", "--set", "sft.max_stesp=3") == 2
    err = capsys.readouterr().err
    assert "unknown key 'max_stesp'" in err and "--set sft.max_stesp" in err
    assert not (tmp_path / "runs").exists()


def test_a_dataset_row_that_breaks_its_schema_stops_the_run_before_training(tiny_recipe, tmp_path: Path):
    rdir = tiny_recipe("tiny-axolotl-sft-dpo")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "messages": [{"role": "user", "content": "no answer"}]}) + "\n")
    code = run("tiny-axolotl-sft-dpo", tmp_path / "runs", "--set", f"sft.datasets.0.path={bad}")
    assert code == 3
    run_dir = only_run_dir(tmp_path / "runs", "tiny-axolotl-sft-dpo")
    assert not (run_dir / "sft" / "train.log").exists(), "training must not start on invalid data"
    assert (run_dir / "sft" / "quarantine-bad.jsonl").is_file()
    assert rdir.is_dir()


def test_a_base_model_dir_without_safetensors_is_refused(tiny_recipe, tiny_llama: Path, tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    import shutil

    pickled = tmp_path / "pickled-model"
    shutil.copytree(tiny_llama, pickled)
    for f in pickled.glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    tiny_recipe("tiny-trl-sft-dpo")
    code = run("tiny-trl-sft-dpo", tmp_path / "runs", "--set", f"sft.base_model={pickled}")
    assert code == 2
    assert "no *.safetensors weights" in capsys.readouterr().err


def test_trust_remote_code_stays_off_unless_the_recipe_says_why(tiny_recipe, tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    tiny_recipe("tiny-trl-sft-dpo")
    assert run("tiny-trl-sft-dpo", tmp_path / "runs", "--set", "model.trust_remote_code=true") == 2
    assert "trust_remote_code is on" in capsys.readouterr().err


def test_rows_whose_answer_the_sequence_length_would_cut_stop_the_run(tiny_recipe, tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    tiny_recipe("tiny-trl-sft-dpo")
    assert run("tiny-trl-sft-dpo", tmp_path / "runs", "--set", "sft.trainer.max_length=6") == 3
    err = capsys.readouterr().err
    assert "cut off entirely" in err and "training did not start" in err
    assert not (only_run_dir(tmp_path / "runs", "tiny-trl-sft-dpo") / "sft" / "train.log").exists()


def test_full_profile_without_a_gpu_exits_5_and_says_how_to_run_the_smoke_profile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from conftest import ROOT

    monkeypatch.setenv("FTKIT_RECIPES", str(ROOT / "recipes"))
    monkeypatch.setattr("ftkit.envinfo.gpus", lambda: [])
    code = main(["recipe", "run", "llama8b-qlora-dpo", "--profile", "full", "--runs-dir", str(tmp_path)])
    assert code == 5
    err = capsys.readouterr().err
    assert "PROFILE=smoke" in err and "needs 1 GPU" in err
