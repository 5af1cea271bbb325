"""A full fine-tune has no adapter: its trained checkpoint is re-saved as the final model and verified against it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ftkit.errors import ExitCode, FtkitError
from ftkit.export.merge import save_trained_model
from ftkit.export.model_card import CardFacts, render_model_card
from ftkit.export.verify_merge import describe_merge_check, verify_resaved


@pytest.fixture(scope="module")
def trained(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a trainer leaves in its output dir: the model in fp32, plus a checkpoint and its state."""
    out = tmp_path_factory.mktemp("full") / "output"
    shutil.copytree(tiny_llama, out)
    (out / "checkpoint-8").mkdir()
    (out / "checkpoint-8" / "optimizer.pt").write_bytes(b"state")
    (out / "training_args.bin").write_bytes(b"args")
    return out


@pytest.mark.model
def test_the_trained_model_is_resaved_in_the_export_dtype_without_the_trainers_state(trained: Path, tmp_path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    result = save_trained_model(trained, tmp_path / "merged", "bfloat16")
    assert result.kind == "full" and result.shards and (tmp_path / "merged" / "tokenizer_config.json").is_file()
    assert (
        not (tmp_path / "merged" / "checkpoint-8").exists() and not (tmp_path / "merged" / "training_args.bin").exists()
    )
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert result.parameters == sum(p.numel() for p in model.parameters())


@pytest.mark.model
def test_the_saved_model_is_checked_against_the_trained_checkpoint(trained: Path, tmp_path: Path):
    result = save_trained_model(trained, tmp_path / "merged", "float32")
    check = verify_resaved(trained, result.out_dir, "float32")
    assert check["passed"] and check["max_abs_diff"] == 0.0 and check["top1_agreement"] == 1.0
    assert describe_merge_check(check).startswith("logits in float32 vs the trained checkpoint: max |diff| 0")


@pytest.mark.model
def test_a_saved_model_that_is_not_the_trained_one_fails_its_check(trained: Path, tiny_llama: Path, tmp_path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    other = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    other.save_pretrained(tmp_path / "other")
    shutil.copy(trained / "tokenizer_config.json", tmp_path / "other")
    shutil.copy(trained / "tokenizer.json", tmp_path / "other")
    check = verify_resaved(trained, tmp_path / "other", "bfloat16", tolerance=0.01)
    assert not check["passed"] and describe_merge_check(check).endswith("FAILED")


def test_an_output_dir_without_a_model_is_an_engine_failure_that_names_the_fix(tmp_path: Path):
    (tmp_path / "output").mkdir()
    with pytest.raises(FtkitError) as err:
        save_trained_model(tmp_path / "output", tmp_path / "merged")
    assert err.value.code == ExitCode.ENGINE_FAILED
    assert "stage3_gather_16bit_weights_on_model_save" in str(err.value.problems[0].fix)


def test_the_model_card_of_a_full_fine_tune_says_so():
    check = {"prompts": 4, "max_abs_diff": 0.3, "tolerance": 5.0, "top1_agreement": 1.0, "passed": True}
    facts = CardFacts(
        "full", "meta-llama/Llama-3.1-8B-Instruct", merge={"kind": "full", "dtype": "bfloat16", "check": check}
    )
    card = render_model_card(facts)
    assert "## Final weights" in card and "no adapter" in card and "vs the trained checkpoint" in card
    assert "merged into the unquantized base" not in card


@pytest.mark.model
def test_export_merge_of_a_full_fine_tunes_output_dir_resaves_and_verifies_it(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    import json

    from ftkit.cli import main

    assert main(["export", "merge", str(trained), "--out", str(tmp_path / "final"), "--dtype", "float32",
                 "--json"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "full" and result["check"]["passed"] and result["check"]["max_abs_diff"] == 0.0
    assert (tmp_path / "final" / "config.json").is_file() and not (tmp_path / "final" / "checkpoint-8").exists()


def test_export_merge_of_a_dir_with_neither_adapter_nor_model_names_the_fix(tmp_path: Path):
    from ftkit.export.merge import MergeSource, check_adapter

    (tmp_path / "out").mkdir()
    with pytest.raises(FtkitError) as err:
        check_adapter(MergeSource(tmp_path / "out", "base", "base"))
    assert "neither an adapter nor a model" in str(err.value) and "train.log" in str(err.value.problems[0].fix)
