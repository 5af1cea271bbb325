"""The library behind the preference recipes (ORPO, KTO, reward model): a sequence-classification (reward
model) adapter merges into a classifier and is verified on its scores; KTO rows are detected and checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from ftkit.data.formats import check_format, detect_format
from ftkit.export.merge import MergeResult, adapter_task_type, merge_adapter
from ftkit.export.verify_merge import verify_merge


def _reward_adapter(base: Path, out: Path, seed: int = 3, lora_b_std: float = 0.3) -> Path:
    """A SEQ_CLS LoRA adapter on the tiny Llama with a trained-looking score head (saved whole by PEFT); a small
    `lora_b_std` gives the small deltas of a short reward-model run (most below half a bf16 step of the weight)."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, dtype=torch.float32, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False,
                     task_type=TaskType.SEQ_CLS, modules_to_save=["score"])  # fmt: skip
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.normal_(0, lora_b_std if "lora_B" in name else 0.3)
    peft_model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _scores(model_dir: Path | str, adapter: Path | None, texts: list[str]) -> list[float]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(adapter or model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        return [model(**tok(t, return_tensors="pt")).logits[0, 0].item() for t in texts]


@pytest.fixture(scope="module")
def reward_adapter(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _reward_adapter(tiny_llama, tmp_path_factory.mktemp("rm") / "adapter")


TEXTS = ["Who are you? I am a tiny assistant.", "How do I bake bread? Mix flour and water.", "No idea."]


@pytest.mark.model
def test_a_reward_model_adapter_merges_into_a_classifier_with_the_scores_of_base_plus_adapter(
    tiny_llama: Path, reward_adapter: Path, tmp_path: Path
):
    from transformers import AutoConfig

    assert adapter_task_type(reward_adapter) == "SEQ_CLS"
    result = merge_adapter(str(tiny_llama), reward_adapter, tmp_path / "merged", "float32")
    assert result.task_type == "SEQ_CLS"
    config = AutoConfig.from_pretrained(tmp_path / "merged")
    assert config.architectures == ["LlamaForSequenceClassification"] and config.num_labels == 1
    assert config.pad_token_id is not None  # batched scoring finds each row's last real token
    merged = _scores(tmp_path / "merged", None, TEXTS)
    reference = _scores(tiny_llama, reward_adapter, TEXTS)
    assert merged == pytest.approx(reference, abs=1e-4)
    assert len({round(s, 3) for s in merged}) == len(TEXTS)  # the head really scores (not a constant)


@pytest.mark.model
def test_verification_of_a_reward_model_merge_compares_scores_and_passes(
    tiny_llama: Path, reward_adapter: Path, tmp_path: Path
):
    merge_adapter(str(tiny_llama), reward_adapter, tmp_path / "merged", "float32")
    check = verify_merge(str(tiny_llama), reward_adapter, tmp_path / "merged", "float32")
    assert check["task_type"] == "SEQ_CLS" and check["compared"].startswith("scores")
    assert check["passed"] and check["max_abs_diff"] < 1e-3 and check["top1_agreement"] == 1.0
    assert check["adapter_effect_mean"] > 10 * check["mean_abs_diff"]


@pytest.mark.model
def test_verification_fails_a_reward_model_merge_that_lost_the_lora_weights(
    tiny_llama: Path, reward_adapter: Path, tmp_path: Path
):
    """Only the score head carried over (the LoRA deltas dropped): the scores move by the LoRA's effect."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama, dtype=torch.float32, num_labels=1)
    peft_model = PeftModel.from_pretrained(model, str(reward_adapter))
    head = peft_model.base_model.model.score.modules_to_save["default"].weight.detach().clone()
    lost = AutoModelForSequenceClassification.from_pretrained(tiny_llama, dtype=torch.float32, num_labels=1)
    with torch.no_grad():
        lost.score.weight.copy_(head)
    tok = AutoTokenizer.from_pretrained(reward_adapter)
    lost.config.pad_token_id = tok.pad_token_id
    lost.save_pretrained(tmp_path / "lost")
    tok.save_pretrained(tmp_path / "lost")
    check = verify_merge(str(tiny_llama), reward_adapter, tmp_path / "lost", "float32")
    assert not check["passed"] and not check["holds_adapter"]


@pytest.mark.model
def test_a_bf16_merge_rounds_away_a_reward_adapters_small_deltas_and_the_default_float32_keeps_them(
    tiny_llama: Path, tmp_path: Path
):
    """The cause of the reward recipe's failing merge check: deltas below half a bf16 step of W vanish when W + delta
    is rounded to bf16, so the check fails a bf16 merge; `export merge` without --dtype merges a SEQ_CLS adapter in
    float32, which holds them."""
    from ftkit.cli import main

    adapter = _reward_adapter(tiny_llama, tmp_path / "small", lora_b_std=3e-5)
    merge_adapter(str(tiny_llama), adapter, tmp_path / "bf16", "bfloat16")
    lossy = verify_merge(str(tiny_llama), adapter, tmp_path / "bf16", "bfloat16")
    assert not lossy["holds_adapter"] and not lossy["passed"]
    assert main(["export", "merge", str(adapter), "--out", str(tmp_path / "default"), "--json"]) == 0
    import json

    provenance = json.loads((tmp_path / "default" / "ftkit-merge.json").read_text())
    assert provenance["dtype"] == "float32" and provenance["check"]["holds_adapter"]


@pytest.mark.model
def test_a_recipe_that_names_no_export_dtype_merges_a_reward_adapter_in_float32_and_a_causal_lm_in_bf16(
    tiny_llama: Path, reward_adapter: Path, tmp_path: Path
):
    """The recipe runner and `export merge` share one default (`final_dtype`); an explicit dtype always wins."""
    from ftkit.export.merge import final_dtype
    from ftkit.recipes.schema import Export
    from test_export_merge import _make_adapter

    unset = Export().dtype
    assert unset is None
    assert final_dtype(unset, reward_adapter) == "float32"
    assert final_dtype(unset, _make_adapter(tiny_llama, tmp_path / "lm")) == "bfloat16"
    assert final_dtype(unset, reward_adapter, full=True) == "bfloat16"
    assert final_dtype("bfloat16", reward_adapter) == "bfloat16"


@pytest.mark.model
def test_a_causal_lm_merge_still_records_its_task_type(tiny_llama: Path, tmp_path: Path):
    from test_export_merge import _make_adapter

    adapter = _make_adapter(tiny_llama, tmp_path / "lm-adapter")
    result = merge_adapter(str(tiny_llama), adapter, tmp_path / "merged", "float32")
    assert isinstance(result, MergeResult) and result.task_type == "CAUSAL_LM"
    assert (tmp_path / "merged" / "generation_config.json").is_file()


KTO_ROW = {"id": "kto-1", "prompt": "What is a haiku?", "completion": "A short poem.", "label": True}


def test_kto_rows_are_detected_and_a_string_or_missing_label_is_named():
    assert detect_format(KTO_ROW) == "kto" and check_format(KTO_ROW, "kto") == []
    assert detect_format({**KTO_ROW, "label": False}) == "kto"
    found = check_format({**KTO_ROW, "label": "true"}, "kto")
    assert [f[0] for f in found] == ["label"] and "true or false" in found[0][1]
    assert [f[0] for f in check_format({**KTO_ROW, "prompt": ""}, "kto")] == ["prompt"]
