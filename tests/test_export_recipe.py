"""A recipe's `export:` section at the end of `recipe run`: merge + verify, GGUF, eval, model card;
and the pre-flight that refuses exports this machine cannot make before any training starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from ftkit.cli import main
from trained_run import NAME, TrainedRun, with_exports


def _recipe_with_exports(tiny_recipe, export: dict) -> Path:  # type: ignore[no-untyped-def]
    return with_exports(tiny_recipe(NAME), export)


def _run(runs: Path, *extra: str) -> int:
    return main(["recipe", "run", "tiny-trl-sft-dpo", "--profile", "smoke", "--runs-dir", str(runs), *extra])


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_trl_run")  # the session's trained run: one worker trains it (conftest.py)
def test_recipe_run_ends_with_verified_merge_gguf_eval_and_model_card(tiny_trl_run: TrainedRun, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]):  # fmt: skip
    # The session's one trained run (tests/trained_run.py): its smoke profile's steps, then trained_run.EXPORTS.
    assert tiny_trl_run.code in (0, 1)
    monkeypatch.setenv("FTKIT_RECIPES", str(tiny_trl_run.recipes))
    run_dir, metrics = tiny_trl_run.dir, tiny_trl_run.metrics

    for stage in ("sft", "dpo"):  # every merge is verified against base + adapter
        check = metrics["stages"][stage]["merge"]["check"]
        assert check["passed"] and check["max_abs_diff"] < 1e-3, check  # float32 merges (the fixture's dtype)
    artifacts = {a["quant"]: a for a in metrics["export"]["artifacts"]}
    assert set(artifacts) == {"f16", "q8_0"}
    for art in artifacts.values():
        assert Path(art["path"]).is_file() and art["backend"] == "python" and art["check"]["passed"]
        assert art["check"]["tokenizer_match"]

    report = json.loads((run_dir / "eval.json").read_text())
    assert metrics["export"]["eval"]["perplexity"] == report["perplexity"]
    assert report["perplexity"]["rows_scored"] == 1 and report["perplexity"]["preference_pairs"] == 1
    assert report["forgetting"]["overall"]["prompts"] == 8  # the recipe's general prompt file
    assert report["base_model_dir"] == metrics["stages"]["sft"]["base_model"]  # forgetting vs the first base

    card = Path(metrics["model_card"]).read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["recipe"]["name"] == "tiny-trl-sft-dpo" and {"sft", "dpo"} <= set(meta["tags"])
    assert "make recipe NAME=tiny-trl-sft-dpo PROFILE=smoke" in card and "q8_0" in card

    # `ftkit export merge RUN_DIR` merges any stage again, verified, with the run's model card.
    capsys.readouterr()
    assert main(["export", "merge", str(run_dir), "--stage", "sft", "--dtype", "float32",
                 "--out", str(tmp_path / "sft-merged"), "--json"]) == 0  # fmt: skip
    merged = json.loads(capsys.readouterr().out)
    assert merged["check"]["passed"] and merged["adapter_dir"] == metrics["stages"]["sft"]["adapter_dir"]
    sft_card = yaml.safe_load((tmp_path / "sft-merged" / "README.md").read_text().split("---\n")[1])
    assert sft_card["recipe"]["name"] == "tiny-trl-sft-dpo" and sft_card["metrics"] == meta["metrics"]

    capsys.readouterr()
    assert main(["serve-cmd", str(run_dir), "--json"]) == 0
    served = json.loads(capsys.readouterr().out)
    assert [c["what"] for c in served if c["server"] == "llama.cpp"] == [
        "GGUF tiny-trl-sft-dpo.f16.gguf", "GGUF tiny-trl-sft-dpo.q8_0.gguf"]  # fmt: skip


@pytest.mark.model
def test_preflight_refuses_k_quants_without_llama_cpp_before_training(tiny_recipe, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path / "no-llama-cpp"))
    monkeypatch.setattr("ftkit.export.gguf.find_llama_cpp", lambda env=None: None)
    _recipe_with_exports(tiny_recipe, {"gguf": ["q4_k_m"]})
    assert _run(tmp_path / "runs") == 5
    [run_dir] = list((tmp_path / "runs" / "tiny-trl-sft-dpo").iterdir())
    assert not (run_dir / "sft" / "output").exists()
    refused = json.loads((run_dir / "metrics.json").read_text())
    assert refused["status"] == "refused" and refused["refused"]["check"] == "exports"


@pytest.mark.model
def test_preflight_refuses_awq_without_a_gpu(tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    _recipe_with_exports(tiny_recipe, {"quantize": ["awq"]})
    assert _run(tmp_path / "runs") == 5
    assert "AWQ calibration needs a CUDA GPU" in " ".join(capsys.readouterr().err.split())


@pytest.mark.model
def test_preflight_refuses_a_heldout_file_that_leaks_training_rows(tiny_recipe, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]):  # fmt: skip
    rdir = _recipe_with_exports(tiny_recipe, {"eval": {"heldout": "data/dpo-heldout.jsonl"}})
    first_train_row = (rdir / "data" / "dpo.jsonl").read_text().splitlines()[0]
    with (rdir / "data" / "dpo-heldout.jsonl").open("a") as fh:
        fh.write(first_train_row + "\n")
    assert _run(tmp_path / "runs") == 3  # a data problem: the held-out rows, with the leaking row's line
    err = " ".join(capsys.readouterr().err.split())
    assert "1 exact + 0 near of 2 held-out rows are also rows of" in err and "dpo-heldout.jsonl:2" in err
    assert "--heldout" in err and "ftkit data split" in err


@pytest.mark.model
def test_a_profile_export_with_an_unknown_key_is_refused_at_load(tiny_recipe, capsys: pytest.CaptureFixture[str]):
    _recipe_with_exports(tiny_recipe, {"ggfu": ["f16"]})
    assert main(["recipe", "validate", "tiny-trl-sft-dpo"]) == 2
    assert "unknown key(s) ['ggfu']" in " ".join(capsys.readouterr().out.split())


def test_a_failed_export_check_fails_the_run_even_when_every_bound_passes(tmp_path: Path):
    from ftkit.pipeline.run import RunResult

    assert RunResult(tmp_path, {"status": "passed"}, []).passed
    assert not RunResult(tmp_path, {"status": "failed-export"}, []).passed
