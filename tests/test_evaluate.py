"""ftkit.evaluate on the tiny Llama: perplexity against an independent forward pass, a model trained on a
row scores it better, the generation check passes a model that answers and stops and flags one that never
stops or leaks template tokens, the forgetting check flags a noised model, and lm-eval fails clearly offline.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import FIXTURES, ROOT
from ftkit.errors import ExitCode, FtkitError
from ftkit.evaluate import (
    evaluate_model,
    forgetting_check,
    generation_check,
    harness,
    lm_eval_arguments,
    load_model,
    load_prompts,
    perplexity,
    run_lm_eval,
    suite,
    write_eval,
)
from ftkit.evaluate.generation import check_answer, repeated_ngram_fraction, template_check, template_markers
from ftkit.evaluate.spans import (
    _mask_from_prefixes,
    assistant_char_spans,
    encode_conversation,
    encode_spans,
    encode_user_text,
)

GENERAL = FIXTURES / "general-prompts.jsonl"
WHO = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am a tiny assistant."}]
TAG = [{"role": "user", "content": "Say the tag."}, {"role": "assistant", "content": "Tag: <|im_start|>user\nhi"}]
MULTI = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "How do I bake bread?"},
    {"role": "assistant", "content": "Mix flour, water, salt and yeast, then bake it."},
]


def _train(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], steps: int = 60) -> None:
    """Full-sequence LM training (every token) until the model has the conversations by heart."""
    import torch

    seqs = [tokenizer.apply_chat_template(c)["input_ids"] for c in conversations]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in seqs])
    attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    labels = ids.masked_fill(attention == 0, -100)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        model(input_ids=ids, attention_mask=attention, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.fixture(scope="module")
def base(tiny_llama: Path) -> SimpleNamespace:
    model, tok = load_model(tiny_llama)
    return SimpleNamespace(dir=tiny_llama, model=model, tok=tok)


@pytest.fixture(scope="module")
def trained(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The tiny Llama trained on WHO (a clean answer) and TAG (an answer that emits a template token)."""
    model, tok = load_model(tiny_llama)
    _train(model, tok, [WHO, TAG])
    out = tmp_path_factory.mktemp("trained") / "model"
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return SimpleNamespace(dir=out, model=model, tok=tok)


@pytest.fixture(scope="module")
def general(tiny_llama: Path) -> SimpleNamespace:
    """The tiny Llama trained briefly on the general prompts' text: a base with a real likelihood to lose."""
    model, tok = load_model(tiny_llama)
    _train(model, tok, [[{"role": "user", "content": t}] for p in load_prompts(GENERAL) for t in p.turns], steps=30)
    return SimpleNamespace(model=model, tok=tok)


def _independent_nll(
    model: Any, tok: Any, conversations: list[list[dict[str, str]]], from_turn: int = 0
) -> tuple[float, int]:
    """Mean NLL per assistant token (turns >= from_turn) by a plain forward pass, labels masked by token prefixes."""
    import torch

    total, count = 0.0, 0
    for conv in conversations:
        ids = tok.apply_chat_template(conv)["input_ids"]
        labels = [-100] * len(ids)
        for i, message in enumerate(conv):
            if message["role"] != "assistant" or i < from_turn:
                continue
            start = len(tok.apply_chat_template(conv[:i], add_generation_prompt=True)["input_ids"])
            end = len(tok.apply_chat_template(conv[: i + 1])["input_ids"]) - 1  # the newline after <|im_end|>
            assert ids[end - 1] == tok.eos_token_id
            labels[start:end] = ids[start:end]
        n = sum(label != -100 for label in labels)
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
        total, count = total + loss * n, count + n
    return total / count, count


# --- perplexity ---------------------------------------------------------------------------------------


@pytest.mark.model
def test_perplexity_equals_exp_of_a_plain_forward_pass_nll(base: SimpleNamespace):
    rows = [{"messages": WHO}, {"messages": MULTI}, {"messages": TAG}]
    result = perplexity(base.model, base.tok, rows, "messages", 256, batch_size=2)  # padded batches
    expected, tokens = _independent_nll(base.model, base.tok, [WHO, MULTI, TAG])
    assert result.tokens_scored == tokens
    assert result.rows_scored == 3 and result.rows_skipped == 0
    assert result.mean_nll == pytest.approx(expected, abs=1e-5)
    assert result.perplexity == pytest.approx(math.exp(expected), rel=1e-5)


@pytest.mark.model
def test_every_chat_format_scores_the_same_answer_tokens(base: SimpleNamespace):
    messages = perplexity(base.model, base.tok, [{"messages": MULTI}])
    sharegpt = {
        "conversations": [{"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]} for m in MULTI]
    }
    assert perplexity(base.model, base.tok, [sharegpt]).mean_nll == pytest.approx(messages.mean_nll, abs=1e-6)
    alpaca = perplexity(base.model, base.tok, [{"instruction": "Who are you?", "output": "I am a tiny assistant."}])
    assert alpaca.mean_nll == pytest.approx(perplexity(base.model, base.tok, [{"messages": WHO}]).mean_nll, abs=1e-6)


@pytest.mark.model
def test_preference_rows_score_the_chosen_answer_and_report_the_margin(base: SimpleNamespace):
    prompt = [{"role": "user", "content": "Tell me a joke."}]
    good, bad = "Why did the model stop? It reached its end of turn token.", "No."
    chosen, rejected = (
        [*prompt, {"role": "assistant", "content": good}],
        [*prompt, {"role": "assistant", "content": bad}],
    )
    forms = [
        {"prompt": "Tell me a joke.", "chosen": good, "rejected": bad},  # plain strings
        {"prompt": prompt, "chosen": chosen, "rejected": rejected},  # conversational
        {"chosen": chosen, "rejected": rejected},  # conversational, implicit prompt
        {
            "chosen": f"\n\nHuman: Tell me a joke.\n\nAssistant: {good}",
            "rejected": f"\n\nHuman: Tell me a joke.\n\nAssistant: {bad}",
        },
    ]
    c = perplexity(base.model, base.tok, [{"messages": chosen}])
    r = perplexity(base.model, base.tok, [{"messages": rejected}])
    margin = -c.mean_nll * c.tokens_scored + r.mean_nll * r.tokens_scored  # log p(chosen) - log p(rejected)
    for row in forms:
        result = perplexity(base.model, base.tok, [row], "preference")
        assert result.rows_scored == 1 and result.preference_pairs == 1, row
        assert result.tokens_scored == c.tokens_scored
        assert result.mean_nll == pytest.approx(c.mean_nll, abs=1e-6)
        assert result.mean_margin == pytest.approx(margin, abs=1e-4)
        assert result.margin_accuracy == (1.0 if margin > 0 else 0.0)


@pytest.mark.model
def test_a_multi_turn_preference_prompt_scores_only_the_final_answer(base: SimpleNamespace):
    prompt = MULTI[:3]  # user, assistant, user: the earlier assistant turn is context, not scored
    row = {"prompt": prompt, "chosen": MULTI, "rejected": [*prompt, {"role": "assistant", "content": "No."}]}
    result = perplexity(base.model, base.tok, [row], "preference")
    expected, tokens = _independent_nll(base.model, base.tok, [MULTI], from_turn=3)
    assert result.tokens_scored == tokens < perplexity(base.model, base.tok, [{"messages": MULTI}]).tokens_scored
    assert result.mean_nll == pytest.approx(expected, abs=1e-5)


@pytest.mark.model
def test_completion_rows_score_the_whole_text_without_a_template(base: SimpleNamespace):
    import torch

    text = "How do I bake bread? Mix flour, water, salt and yeast, then bake it."
    result = perplexity(base.model, base.tok, [{"text": text}, {"text": "a"}], "completion")
    ids = torch.tensor([base.tok(text)["input_ids"]])
    with torch.no_grad():
        expected = base.model(input_ids=ids, labels=ids).loss.item()
    assert result.tokens_scored == ids.shape[1] - 1 and result.rows_scored == 1
    assert result.mean_nll == pytest.approx(expected, abs=1e-5)
    assert result.skipped[0].index == 1 and "no text token" in result.skipped[0].reason


@pytest.mark.model
def test_unscorable_rows_are_skipped_with_their_reason(base: SimpleNamespace):
    long_prompt = [{"role": "user", "content": "Who are you? " * 40}, {"role": "assistant", "content": "Me."}]
    rows = [
        {"messages": WHO},
        {"foo": 1},
        {"messages": [{"role": "user", "content": "only a question"}]},
        {"prompt": "p", "completion": "c", "label": False},
        {"instruction": "Who are you?", "output": "I am a tiny assistant."},  # alpaca, but fmt says messages
        {"messages": long_prompt},
    ]
    result = perplexity(base.model, base.tok, rows, "messages", max_len=32)
    reasons = {s.index: s.reason for s in result.skipped}
    assert result.rows_scored == 1 and result.rows_scored + result.rows_skipped == result.rows_total == 6
    assert "not 'messages'" in reasons[1] and "not 'messages'" in reasons[3] and "not 'messages'" in reasons[4]
    assert "no assistant turn" in reasons[2]
    assert "max_len=32" in reasons[5]
    detected = perplexity(base.model, base.tok, rows[3:5])  # fmt None: each row's own format
    assert "label false" in detected.skipped[0].reason and detected.rows_scored == 1


@pytest.mark.model
def test_a_row_over_max_len_is_truncated_and_still_scored(base: SimpleNamespace):
    full = perplexity(base.model, base.tok, [{"messages": MULTI}], max_len=None)
    cut = perplexity(base.model, base.tok, [{"messages": MULTI}], max_len=30)
    assert cut.rows_truncated == 1 and full.rows_truncated == 0
    assert 0 < cut.tokens_scored < full.tokens_scored


@pytest.mark.model
def test_a_template_that_is_not_prefix_stable_skips_the_row(base: SimpleNamespace):
    tok = copy.deepcopy(base.tok)
    tok.chat_template = tok.chat_template.replace("for message in messages", "for message in messages[-2:]")
    result = perplexity(base.model, tok, [{"messages": MULTI}, {"messages": WHO}])
    assert result.rows_scored == 1 and "prefix-stable" in result.skipped[0].reason


@pytest.mark.model
def test_generation_markers_and_prefix_rendering_pick_the_same_tokens(base: SimpleNamespace):
    by_prefix = encode_conversation(base.tok, MULTI, score_from=2)
    scored = [i for i, m in zip(by_prefix.input_ids, by_prefix.score_mask, strict=True) if m]
    assert base.tok.decode(scored) == MULTI[3]["content"] + "<|im_end|>"
    tok = copy.deepcopy(base.tok)
    tok.chat_template = (
        "{% for message in messages %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
        "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
        "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    assert encode_conversation(tok, MULTI, score_from=2) == by_prefix
    assert encode_conversation(tok, MULTI) == encode_conversation(base.tok, MULTI)
    # a slow tokenizer has no offsets: token prefixes must pick the same tokens
    text = base.tok.apply_chat_template(MULTI, tokenize=False)
    spans = assistant_char_spans(base.tok, MULTI)
    ids, by_offsets = encode_spans(base.tok, text, spans)
    assert _mask_from_prefixes(base.tok, text, ids, spans) == by_offsets
    assert by_offsets[1:] == encode_conversation(base.tok, MULTI).score_mask[1:]


@pytest.mark.model
def test_a_model_trained_on_a_row_has_lower_perplexity_on_it(base: SimpleNamespace, trained: SimpleNamespace):
    before = perplexity(base.model, base.tok, [{"messages": WHO}])
    after = perplexity(trained.model, trained.tok, [{"messages": WHO}])
    assert after.tokens_scored == before.tokens_scored
    assert after.perplexity < before.perplexity / 10
    assert after.perplexity < 2


# --- generation -----------------------------------------------------------------------------------------


@pytest.mark.model
def test_generation_check_passes_a_model_that_answers_and_stops(trained: SimpleNamespace):
    result = generation_check(trained.model, trained.tok, ["Who are you?"], max_new_tokens=24)
    [answer] = result.answers
    assert answer.answer == "I am a tiny assistant."
    assert answer.stopped_at_eos and not answer.hit_length_limit and not answer.leaks and not answer.empty
    assert result.template.roundtrip_ok and result.template.renders_eos
    assert result.passed


@pytest.mark.model
def test_generation_check_flags_a_model_that_never_emits_eos(trained: SimpleNamespace):
    config = trained.model.generation_config
    config.suppress_tokens = [trained.tok.eos_token_id]  # the end-of-turn token can never be generated
    try:
        result = generation_check(trained.model, trained.tok, ["Who are you?"], max_new_tokens=24)
    finally:
        config.suppress_tokens = None
    [answer] = result.answers
    assert not answer.stopped_at_eos and answer.hit_length_limit and answer.new_tokens == 24
    assert not answer.passed and not result.passed


@pytest.mark.model
def test_generation_check_flags_a_leaked_template_token(trained: SimpleNamespace):
    result = generation_check(trained.model, trained.tok, ["Who are you?", "Say the tag."], max_new_tokens=24)
    clean, leaky = result.answers
    assert clean.passed and not clean.leaks
    assert leaky.stopped_at_eos and "<|im_start|>" in leaky.leaks
    assert not leaky.passed and not result.passed


@pytest.mark.model
def test_check_answer_flags_empty_repeated_and_header_lines(base: SimpleNamespace):
    tok = base.tok
    eos = tok.eos_token_id
    markers, headers = template_markers(tok)
    assert {"<|im_start|>", "<|im_end|>"} <= set(markers) and "assistant" in headers

    def check(ids: list[int], max_new_tokens: int = 64) -> Any:
        return check_answer(
            "q", ids, tok, stop_ids=[eos], max_new_tokens=max_new_tokens, markers=markers, header_lines=headers
        )

    def encode(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    assert check([eos]).empty and not check([eos]).passed
    loop = check(encode("the capital " * 12), max_new_tokens=len(encode("the capital " * 12)))
    assert loop.degenerate and loop.hit_length_limit and not loop.stopped_at_eos and not loop.passed
    header = check([*encode("Sure.\nassistant\nSure."), eos])
    assert header.leaks == ["assistant (role header line)"] and not header.passed
    special = check([*encode("Sure.<|im_start|>assistant\nAgain."), eos])
    assert "<|im_start|>" in special.leaks and not special.passed
    ids = encode("The capital of France is Paris.")
    fine = check([*ids, eos, 5, 6])  # what follows the end-of-turn token is not part of the answer
    assert fine.passed and fine.answer == "The capital of France is Paris." and fine.new_tokens == len(ids) + 3
    assert repeated_ngram_fraction([1, 2, 3, 4, 5]) == 0.0 and repeated_ngram_fraction([7] * 20) > 0.9


@pytest.mark.model
def test_template_check_flags_an_eos_the_template_never_writes_and_a_lossy_tokenizer(base: SimpleNamespace):
    from tokenizers import normalizers

    assert template_check(base.tok, [base.tok.eos_token_id]).passed
    wrong = template_check(base.tok, [base.tok.pad_token_id])  # generation would stop at <|endoftext|> only
    assert wrong.roundtrip_ok and not wrong.renders_eos and "generation would not stop" in wrong.problems[0]
    lossy = copy.deepcopy(base.tok)
    lossy.backend_tokenizer.normalizer = normalizers.Lowercase()  # "Hello" tokenizes as "hello"
    check = template_check(lossy, [lossy.eos_token_id])
    assert not check.roundtrip_ok and not check.passed and "differs" in check.problems[0]


# --- forgetting -----------------------------------------------------------------------------------------


@pytest.mark.model
def test_forgetting_check_of_a_model_against_itself_is_zero(base: SimpleNamespace):
    prompts = load_prompts(GENERAL)
    result = forgetting_check(base.model, base.model, base.tok, prompts)
    assert result.overall is not None and result.overall.relative_change == 0.0
    assert not result.forgetting and result.passed
    assert result.overall.prompts == 8 and not result.skipped
    assert set(result.per_category) == {"writing", "reasoning", "math", "knowledge"}
    assert all(c.prompts == 2 for c in result.per_category.values())
    assert sum(c.tokens for c in result.per_category.values()) == result.overall.tokens


def _noised(model: Any, scale: float) -> Any:
    """A copy with Gaussian noise of `scale` times each tensor's own spread added to every weight."""
    import torch

    out = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * p.std() * scale)
    return out


@pytest.mark.model
def test_forgetting_check_flags_a_model_with_noised_weights(general: SimpleNamespace):
    prompts = load_prompts(GENERAL)
    result = forgetting_check(general.model, _noised(general.model, 1.0), general.tok, prompts, threshold=0.05)
    overall = result.overall
    assert overall is not None and overall.base_perplexity < 100  # the base has learned this text
    assert overall.tuned_perplexity > overall.base_perplexity * 1.05
    assert overall.relative_change == pytest.approx(overall.tuned_perplexity / overall.base_perplexity - 1)
    assert result.forgetting and not result.passed
    assert all(c.forgetting for c in result.per_category.values())
    slight = forgetting_check(general.model, _noised(general.model, 0.05), general.tok, prompts, threshold=0.05)
    assert slight.overall is not None and 0 < abs(slight.overall.relative_change) < 0.05 and not slight.forgetting


@pytest.mark.model
def test_forgetting_scores_only_the_user_text(base: SimpleNamespace):
    text = "Tom is taller than Ann, and Ann is taller than Bob."
    encoded = encode_user_text(base.tok, text)
    assert base.tok.decode([i for i, m in zip(encoded.input_ids, encoded.score_mask, strict=True) if m]) == text
    assert encoded.input_ids[0] == base.tok.convert_tokens_to_ids("<|im_start|>") and not encoded.score_mask[0]


def test_load_prompts_reads_mt_bench_plain_and_messages_files(tmp_path: Path):
    prompts = load_prompts(GENERAL)
    assert [p.id for p in prompts] == [str(i) for i in range(1, 9)]
    assert prompts[0].turns[1] == "Now make it more formal." and prompts[0].category == "writing"
    assert prompts[0].chat() == [{"role": "user", "content": prompts[0].turns[0]}]
    other = tmp_path / "p.jsonl"
    other.write_text(
        json.dumps({"prompt": "Hi there"})
        + "\n"
        + json.dumps({"messages": [{"role": "system", "content": "Be brief."}, *WHO], "category": "chat"})
        + "\n"
    )
    plain, chat = load_prompts(other)
    assert plain.turns == ["Hi there"] and plain.category is None
    assert chat.turns == ["Who are you?"] and chat.chat()[-1] == WHO[0] and chat.chat()[0]["role"] == "system"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"turns": []}\nnot json\n{"question": "?"}\n')
    with pytest.raises(FtkitError) as err:
        load_prompts(bad)
    assert err.value.code == ExitCode.DATA_INVALID
    assert [(p.line, p.field) for p in err.value.problems] == [(1, "turns"), (2, None), (3, None)]


def test_builtin_prompt_sets_resolve_to_the_package_data(monkeypatch: pytest.MonkeyPatch):
    from ftkit.evaluate import prompts as prompts_module

    with pytest.raises(FtkitError, match="no built-in prompt set 'nope'") as err:
        load_prompts("builtin:nope")
    assert "builtin:mt-bench" in (err.value.problems[0].fix or "")
    monkeypatch.setattr(prompts_module, "DATA_DIR", FIXTURES)
    monkeypatch.setitem(prompts_module.BUILTIN_PROMPTS, "tiny", GENERAL.name)
    assert [p.turns for p in load_prompts("builtin:tiny")] == [p.turns for p in load_prompts(GENERAL)]


# --- lm-eval-harness ------------------------------------------------------------------------------------

MISSING_TASK = """task: ftkit_missing_dataset
dataset_path: ftkit-tests/no-such-dataset
test_split: test
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
"""


def test_lm_eval_arguments_name_the_model_dir_and_safe_defaults(tmp_path: Path):
    args = lm_eval_arguments(tmp_path, ["arc_easy", "hellaswag"], limit=10, batch_size=2, device="cpu")
    assert args["model"] == "hf" and args["tasks"] == ["arc_easy", "hellaswag"] and args["limit"] == 10
    assert args["model_args"] == {
        "pretrained": str(tmp_path),
        "dtype": "float32",
        "device": "cpu",
        "trust_remote_code": False,
    }
    assert lm_eval_arguments(tmp_path, ["x"], device="cuda:0")["model_args"]["dtype"] == "auto"
    with pytest.raises(FtkitError, match="no lm-eval tasks"):
        lm_eval_arguments(tmp_path, [])


@pytest.mark.model
def test_lm_eval_fails_clearly_without_network_when_a_dataset_is_not_cached(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import datasets.config
    import huggingface_hub.constants

    (tmp_path / "missing.yaml").write_text(MISSING_TASK)
    for var in harness.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(harness, "hub_reachable", lambda timeout=3.0: False)
    before = (huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)
    with pytest.raises(FtkitError) as err:
        run_lm_eval(tiny_llama, ["ftkit_missing_dataset"], limit=2, include_path=tmp_path, include_defaults=False)
    assert err.value.code == ExitCode.ENVIRONMENT
    text = str(err.value)
    assert "task 'ftkit_missing_dataset'" in text and "ftkit-tests/no-such-dataset" in text
    assert "HF_DATASETS_OFFLINE=1" in text and "cache" in text
    assert "OfflineModeIsEnabled" in text  # datasets really ran offline: no retries against an unreachable Hub
    assert not any(var in os.environ for var in harness.OFFLINE_VARS)  # offline only for the call
    assert before == (huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)


@pytest.mark.model
def test_lm_eval_unknown_task_and_missing_package(tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "missing.yaml").write_text(MISSING_TASK)
    with pytest.raises(FtkitError, match="unknown lm-eval task") as err:
        run_lm_eval(tiny_llama, ["no_such_task"], include_path=tmp_path, include_defaults=False, online=False)
    assert err.value.code == ExitCode.USAGE
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(FtkitError, match="not installed") as err:
        run_lm_eval(tiny_llama, ["arc_easy"])
    assert err.value.code == ExitCode.ENVIRONMENT


@pytest.mark.model
def test_lm_eval_runs_a_local_task_on_the_tiny_model(tiny_llama: Path, tmp_path: Path):
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": q, "choices": c, "answer": 0}) + "\n"
            for q, c in [
                ("The capital of France is", [" Paris", " bread"]),
                ("Mix flour, water, salt and", [" yeast", " Paris"]),
                ("Who are", [" you", " bread"]),
            ]
        )
    )
    task = MISSING_TASK.replace("ftkit_missing_dataset", "ftkit_local").replace(
        "dataset_path: ftkit-tests/no-such-dataset",
        f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}",
    )
    (tmp_path / "local.yaml").write_text(task)
    out = run_lm_eval(
        tiny_llama, ["ftkit_local"], limit=2, batch_size=2, include_path=tmp_path, include_defaults=False, online=False
    )
    assert out["n_samples"]["ftkit_local"]["effective"] == 2
    assert 0.0 <= out["results"]["ftkit_local"]["acc,none"] <= 1.0
    assert out["config"]["model_args"]["pretrained"] == str(tiny_llama)
    json.dumps(out)


# --- the report -----------------------------------------------------------------------------------------


@pytest.mark.model
def test_evaluate_model_writes_one_json_report(
    trained: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    seen = {}

    def fake_lm_eval(model_dir: Any, tasks: Any, limit: Any, batch_size: Any, **kwargs: Any) -> dict[str, Any]:
        seen.update(model_dir=str(model_dir), tasks=list(tasks), limit=limit)
        return {"tasks": list(tasks), "results": {"t": {"acc,none": 0.5}}}

    monkeypatch.setattr(suite, "run_lm_eval", fake_lm_eval)
    out = evaluate_model(
        trained.dir,
        heldout_rows=[{"messages": WHO}, {"foo": 1}],
        base_model_dir=trained.dir,
        general_prompts=GENERAL,
        generation_prompts=["Who are you?"],
        lm_eval_tasks=["t"],
        lm_eval_limit=3,
        max_new_tokens=24,
    )
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert out["perplexity"]["rows_scored"] == 1 and out["perplexity"]["rows_skipped"] == 1
    assert out["perplexity"]["perplexity"] < 2 and out["perplexity"]["passed"]
    assert out["generation"]["passed"] and out["generation"]["answers"][0]["answer"] == "I am a tiny assistant."
    assert out["forgetting"]["overall"]["relative_change"] == 0.0 and out["forgetting"]["passed"]
    assert out["forgetting"]["per_category"]["math"]["prompts"] == 2
    assert out["lm_eval"]["passed"] and seen == {"model_dir": str(trained.dir), "tasks": ["t"], "limit": 3}
    assert out["passed"] is True
    assert {"torch", "transformers", "lm_eval"} <= set(out["versions"]) and out["seconds"] > 0
    assert all(out[k]["seconds"] >= 0 for k in ("perplexity", "generation", "forgetting", "lm_eval"))
    path = write_eval(out, tmp_path)
    assert path == tmp_path / "eval.json" and json.loads(path.read_text()) == out

    def failing(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise FtkitError.one("task 't' could not load its dataset", code=ExitCode.ENVIRONMENT)

    monkeypatch.setattr(suite, "run_lm_eval", failing)
    out = evaluate_model(trained.dir, generation_prompts=["Who are you?"], lm_eval_tasks=["t"], max_new_tokens=24)
    assert set(out) >= {"generation", "lm_eval"} and "perplexity" not in out and "forgetting" not in out
    assert out["generation"]["passed"] and not out["lm_eval"]["passed"]
    assert out["lm_eval"]["error"]["code"] == ExitCode.ENVIRONMENT and out["passed"] is False


def test_load_model_names_a_directory_that_is_not_a_model(tmp_path: Path):
    with pytest.raises(FtkitError, match="not a model directory") as err:
        load_model(tmp_path)
    assert err.value.problems[0].file == str(tmp_path)


# --- a real model ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_base_perplexity_on_general_prompts_and_generation():
    from ftkit.models import materialize

    try:
        model_dir = materialize("smollm2-135m-instruct", ROOT / ".cache")
    except FtkitError as exc:
        if exc.code == ExitCode.ENVIRONMENT:
            pytest.skip(str(exc))
        raise
    model, tok = load_model(model_dir)
    prompts = load_prompts(GENERAL)
    result = forgetting_check(model, model, tok, prompts)
    assert result.overall is not None and result.overall.relative_change == 0.0
    print(f"SmolLM2-135M-Instruct perplexity on {GENERAL.name}: {result.overall.base_perplexity:.2f}")
    assert 5 < result.overall.base_perplexity < 200  # real English text, a small instruct model
    check = generation_check(model, tok, ["What is the capital of France?"], max_new_tokens=64)
    assert check.template.passed and check.answers[0].stopped_at_eos and not check.answers[0].leaks
