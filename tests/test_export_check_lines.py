"""The one-line summaries of the merge and GGUF checks (printed alike by `ftkit export` and `recipe run`)."""

from __future__ import annotations

from ftkit.export.gguf import describe_gguf_check
from ftkit.export.verify_merge import describe_merge_check

MERGE = {"max_abs_diff": 0.0123, "mean_abs_diff": 0.001, "adapter_effect_mean": 0.2, "top1_agreement": 0.99,
         "tolerance": 0.05, "passed": True}  # fmt: skip
GGUF = {"max_abs_logit_diff": 0.5, "top1_agreement": 0.875, "tolerance": 0.3, "tokenizer_match": False,
        "passed": False}  # fmt: skip


def test_merge_check_line_names_the_numbers_and_the_verdict():
    line = describe_merge_check(MERGE)
    assert "max |diff| 0.0123 (tolerance 0.05)" in line and "top-1 agreement 99.0%" in line
    assert line.endswith("passed") and line.startswith("merged logits")
    assert describe_merge_check({**MERGE, "passed": False}).endswith("FAILED")


def test_a_reward_model_merge_check_compares_scores():
    assert describe_merge_check({**MERGE, "task_type": "SEQ_CLS"}).startswith("merged scores")


def test_gguf_check_line_says_when_tokenizers_differ_and_fails():
    line = describe_gguf_check(GGUF)
    assert "max |logit diff| 0.5 (tolerance 0.3)" in line and "tokenizer ids DIFFER" in line
    assert line.endswith("FAILED")
