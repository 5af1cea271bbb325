"""GRPO's logits as TRL 1.9 computes them: only the completion's (`logits_to_keep`), log-probs through
`selective_log_softmax` one sequence at a time. Measured on the CPU through TRL's own
`_get_per_token_logps_and_entropies` on a tiny Qwen2 whose vocabulary dwarfs everything else, with log_softmax
upcast to fp32 as CUDA autocast does (CPU autocast keeps it bf16), against the estimator's logits term."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from deepspeed_probe import step_allocation
from ftkit.estimate.architectures import lookup
from ftkit.estimate.inputs import Setting
from ftkit.estimate.memory import estimate_memory, logit_bytes, logit_tokens

pytest.importorskip("trl")

VOCAB, PROMPT, COMPLETION = 8192, 32, 128


def _cuda_autocast_log_softmax(monkeypatch: pytest.MonkeyPatch) -> None:
    import trl.trainer.utils as trl_utils

    names = {k: getattr(F, k) for k in dir(F) if not k.startswith("__")}
    upcast = {"log_softmax": lambda x, dim=None, **kw: names["log_softmax"](x.float(), dim=dim, **kw)}
    monkeypatch.setattr(trl_utils, "F", types.SimpleNamespace(**{**names, **upcast}))


def _measured_bytes_per_logit(sequences: int) -> float:
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl.trainer.grpo_trainer import GRPOTrainer

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)  # fmt: skip
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    for name, p in model.named_parameters():  # a tiny trainable parameter before lm_head: the gradient flows through
        p.requires_grad_(name == "model.norm.weight")
    trainer = types.SimpleNamespace(temperature=0.9, model_kwarg_keys={"logits_to_keep"}, _entropy_bonus_enabled=False)
    ids = torch.randint(0, VOCAB, (sequences, PROMPT + COMPLETION))
    advantages = torch.randn(sequences, 1)

    def step() -> None:  # GRPO's loss: the clipped ratio to the old policy and the KL to the reference
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logps, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(
                trainer, model, ids, torch.ones_like(ids), COMPLETION
            )
            ref = logps.detach() - 0.01
            kl = torch.exp(ref - logps) - (ref - logps) - 1
            loss = (-(torch.exp(logps - logps.detach()) * advantages) + 0.04 * kl).mean()
        loss.backward()

    step()  # warm-up
    model.zero_grad(set_to_none=True)
    return step_allocation(step) / (sequences * (COMPLETION + 1) * VOCAB)


@pytest.mark.parametrize("sequences", [1, 2])
def test_grpo_logits_bytes_per_logit_match_trls_own_log_prob_path(sequences: int, monkeypatch: pytest.MonkeyPatch):
    _cuda_autocast_log_softmax(monkeypatch)
    estimated = logit_bytes(Setting(method="lora", stage="grpo", micro_batch=sequences))
    assert estimated == (12.0 if sequences == 1 else 8.0)
    assert _measured_bytes_per_logit(sequences) == pytest.approx(estimated, rel=0.03)  # + the tiny model's own


def test_grpo_counts_the_logits_of_completion_tokens_only():
    s = Setting(method="lora", stage="grpo", seq_len=1024, micro_batch=8, max_completion_len=512)
    assert logit_tokens(s) == 8 * 513
    assert logit_tokens(s.model_copy(update={"max_completion_len": None})) == 8 * 513  # default: half the sequence
    qwen = lookup("qwen2.5-1.5b")
    terms = {t.name: t.bytes for t in estimate_memory(qwen, s).terms}
    assert terms["logits"] == 8 * 513 * qwen.vocab_size * 8


def test_an_axolotl_grpo_config_gives_the_completion_length_with_trls_default():
    from ftkit.engines.axolotl import AxolotlEngine

    engine = AxolotlEngine()
    assert engine.estimate_setting({"rl": "grpo", "trl": {"max_completion_length": 512}})["max_completion_len"] == 512
    assert engine.estimate_setting({"rl": "grpo"})["max_completion_len"] == 256  # GRPOConfig's default
    assert "max_completion_len" not in engine.estimate_setting({"rl": "dpo"})
