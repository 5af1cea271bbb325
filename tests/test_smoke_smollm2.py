"""The shipped SFT recipe's smoke profile on the real SmolLM2-135M-Instruct (from its PyPI wheel).

One short run (Axolotl, QLoRA NF4 on CPU) feeds several checks: the loss falls, the adapter
changes the model, every assistant turn's EOS is in the trained labels (pad is a distinct token),
and the fine-tuned model answers a chat prompt and stops at its end-of-turn token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from ftkit.cli import main
from ftkit.models import materialize

# The whole shipped SFT smoke run (train, merge, GGUF, evaluation: about 3 minutes on 2 cores): `make smoke-fork`
# and `nox -s smoke` run it, `make test` does not (its engine paths are trained on tiny models there).
pytestmark = [pytest.mark.slow, pytest.mark.recipe_smoke]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTKIT_RECIPES", str(ROOT / "recipes"))
        mp.setenv("FTKIT_CACHE", str(ROOT / ".cache"))
        code = main(["recipe", "run", "llama8b-qlora-sft", "--profile", "smoke", "--runs-dir", str(runs)])
    assert code == 0, "the smoke run failed: see the captured output"
    [run_dir] = list((runs / "llama8b-qlora-sft").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "code": code,
        "dir": run_dir,
        "metrics": metrics,
        "base": str(materialize("smollm2-135m-instruct", ROOT / ".cache")),
    }


def test_smoke_sft_loss_falls_on_smollm2(sft_run: dict[str, Any]):
    sft = sft_run["metrics"]["stages"]["sft"]
    assert sft["steps"] == 12
    assert sft["train_loss_tail"] < sft["train_loss_first"] - 0.3
    assert sft["base_model"] == sft_run["base"]


def test_every_assistant_turn_ends_with_a_trained_eos_and_pad_is_not_eos(sft_run: dict[str, Any]):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(sft_run["dir"] / "sft" / "output")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id != tok.eos_token_id
    [prepared] = [p.parent for p in (sft_run["dir"] / "sft" / "prepared").rglob("dataset_info.json")]
    data = load_from_disk(str(prepared))
    rows = [json.loads(x) for x in (ROOT / "recipes/llama8b-qlora-sft/data/sft.jsonl").read_text().splitlines()]
    turns = {sum(m["role"] == "assistant" for m in r["messages"]) for r in rows}
    assert turns != {1}, "the sample must have multi-turn rows for this check to mean something"
    checked = multi = 0
    for ex in data:
        ids, labels = ex["input_ids"], ex["labels"]
        assistant_turns = tok.decode(ids).count("<|im_start|>assistant")
        trained_eos = sum(1 for i, lab in zip(ids, labels, strict=True) if lab == i == tok.eos_token_id)
        # exactly one trained <|im_end|> per assistant turn; the user/system ones stay masked (-100)
        assert trained_eos == assistant_turns, tok.decode(ids)
        assert trained_eos < ids.count(tok.eos_token_id)
        assert tok.pad_token_id not in [lab for lab in labels if lab != -100]
        checked += 1
        multi += assistant_turns > 1
    assert multi > 0, "some prepared rows must be multi-turn"
    assert checked > 0


def test_the_adapter_changes_the_model(sft_run: dict[str, Any]):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(sft_run["base"])
    ids = tok.apply_chat_template([{"role": "user", "content": "Who are you?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)  # fmt: skip
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(sft_run["base"], dtype=torch.float32)(**ids).logits
        merged_dir = sft_run["metrics"]["stages"]["sft"]["merged_dir"]
        tuned = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)(**ids).logits
    assert (tuned - base).abs().max().item() > 0.1


def test_fine_tuned_model_answers_and_stops_at_its_end_of_turn_token(sft_run: dict[str, Any]):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged_dir = sft_run["metrics"]["stages"]["sft"]["merged_dir"]
    tok = AutoTokenizer.from_pretrained(merged_dir)
    model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    assert model.generation_config.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    ids = tok.apply_chat_template([{"role": "user", "content": "Who are you?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)  # fmt: skip
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=200, do_sample=False)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    assert tok.eos_token_id in new, f"no end-of-turn within 200 tokens: {tok.decode(new)!r}"
    answer = tok.decode(new[: new.index(tok.eos_token_id)])
    assert answer.strip(), "the model must answer before it stops"
    print(f"answer ({len(new)} tokens): {answer!r}")
    assert "<|im_start|>" not in answer and "<|im_end|>" not in answer


def test_smoke_run_ends_with_a_verified_merge_a_gguf_that_loads_back_eval_and_a_model_card(sft_run: dict[str, Any]):
    import yaml

    metrics = sft_run["metrics"]
    merge = metrics["stages"]["sft"]["merge"]
    assert merge["trained_on_4bit"] and merge["dtype"] == "bfloat16" and merge["check"]["passed"]
    [gguf] = metrics["export"]["artifacts"]
    assert gguf["quant"] == "f16" and gguf["backend"] == "python" and Path(gguf["path"]).is_file()
    assert gguf["check"]["passed"] and gguf["check"]["tokenizer_match"] and gguf["check"]["top1_agreement"] == 1.0
    report = json.loads((sft_run["dir"] / "eval.json").read_text())
    assert report["passed"] and report["generation"]["passed"] and not report["forgetting"]["forgetting"]
    assert report["perplexity"]["rows_scored"] == 16  # data/sft-heldout.jsonl
    assert report["forgetting"]["overall"]["prompts"] == 80  # MT-Bench, shipped with ftkit
    meta = yaml.safe_load(Path(metrics["model_card"]).read_text().split("---\n")[1])
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["license"] == "apache-2.0"
