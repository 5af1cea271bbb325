"""GRPO as TRL 1.9 runs it, measured on the CPU against the estimator.

- The logits: only the completion's (`logits_to_keep`), log-probs through `selective_log_softmax` one sequence at a
  time, measured through TRL's own `_get_per_token_logps_and_entropies` on a tiny Qwen2 whose vocabulary dwarfs
  everything else, with log_softmax upcast to fp32 as CUDA autocast does (CPU autocast keeps it bf16).
- The sampling phase: transformers' generate() on the policy in training mode with gradient checkpointing switched
  off (TRL's unwrap_model_for_generation does that, so the KV cache is used), without gradients, under autocast."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from deepspeed_probe import step_allocation
from ftkit.estimate.architectures import lookup
from ftkit.estimate.from_recipe import architecture_from_config
from ftkit.estimate.inputs import Setting
from ftkit.estimate.memory import estimate_memory, generation_bytes, logit_bytes, logit_tokens
from ftkit.estimate.preflight import suggestions

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


@pytest.mark.model
@pytest.mark.parametrize("sequences", [1, 2])
def test_grpo_logits_bytes_per_logit_match_trls_own_log_prob_path(sequences: int, monkeypatch: pytest.MonkeyPatch):
    _cuda_autocast_log_softmax(monkeypatch)
    estimated = logit_bytes(Setting(method="lora", stage="grpo", micro_batch=sequences))
    assert estimated == (12.0 if sequences == 1 else 8.0)
    assert _measured_bytes_per_logit(sequences) == pytest.approx(estimated, rel=0.03)  # + the tiny model's own


def test_grpo_counts_the_logits_of_completion_tokens_only():
    s = Setting(method="lora", stage="grpo", seq_len=1024, micro_batch=8, max_completion_len=512)
    assert logit_tokens(s) == 8 * 513
    assert logit_tokens(s.with_changes(max_completion_len=None)) == 8 * 513  # default: half the sequence
    qwen = lookup("qwen2.5-1.5b")
    terms = {t.name: t.bytes for t in estimate_memory(qwen, s).terms}
    assert terms["logits"] == 8 * 513 * qwen.vocab_size * 8


def test_an_axolotl_grpo_config_gives_the_completion_length_with_trls_default():
    from ftkit.engines.axolotl import AxolotlEngine
    from ftkit.estimate.from_engine import setting_from_facts

    def estimated(cfg: dict) -> Setting:
        return setting_from_facts(AxolotlEngine().engine_facts(cfg))

    assert estimated({"rl": "grpo", "trl": {"max_completion_length": 512}}).grpo.max_completion_len == 512
    assert estimated({"rl": "grpo"}).grpo.max_completion_len == 256  # GRPOConfig's default
    assert estimated({"rl": "dpo", "trl": {"max_completion_length": 512}}).grpo.max_completion_len is None
    sampled = estimated({"rl": "grpo", "trl": {"use_vllm": True, "generation_batch_size": 16}})
    assert sampled.grpo.generation == "vllm" and sampled.grpo.generation_batch_size == 16


def _tiny_llama_generation_peak(sequences: int, prompt: int, completion: int) -> tuple[float, float]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=256)  # fmt: skip
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).train()
    ids = torch.randint(0, 256, (sequences, prompt))

    def sample() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=completion,
                           min_new_tokens=completion, do_sample=True, pad_token_id=0)  # fmt: skip

    sample()  # warm-up
    arch = architecture_from_config(cfg.to_dict(), "tiny-llama", "test")
    s = Setting(method="lora", stage="grpo", micro_batch=sequences, grad_accum=1, seq_len=prompt + completion,
                max_completion_len=completion)  # fmt: skip
    return step_allocation(sample), generation_bytes(arch, s)


@pytest.mark.model
@pytest.mark.parametrize(("sequences", "prompt", "completion"), [(8, 64, 1), (4, 8, 48)])
def test_grpo_sampling_holds_the_kv_cache_and_the_prefill_working_set_as_estimated(sequences, prompt, completion):
    """(8, 64, 1): the prefill is the peak; (4, 8, 48): the end of decoding is."""
    measured, estimated = _tiny_llama_generation_peak(sequences, prompt, completion)
    assert measured == pytest.approx(estimated, rel=0.05)


def test_trl_switches_gradient_checkpointing_off_while_it_samples_so_the_kv_cache_is_used():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.models import unwrap_model_for_generation

    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=64)  # fmt: skip
    model = LlamaForCausalLM(cfg)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        with unwrap_model_for_generation(model, Accelerator(cpu=True)) as unwrapped:
            assert not unwrapped.is_gradient_checkpointing
        assert model.is_gradient_checkpointing
    finally:
        AcceleratorState._reset_state(True)


def test_a_large_generation_batch_makes_sampling_the_peak_and_vllm_takes_it_elsewhere():
    qwen = lookup("qwen2.5-7b")
    s = Setting(method="lora", stage="grpo", seq_len=4096, micro_batch=4, grad_accum=32, max_completion_len=2048)
    sampled = estimate_memory(qwen, s)
    assert sampled.peak_phase == "sampling of completions"
    vllm = estimate_memory(qwen, s.with_changes(generation="vllm"))
    assert vllm.peak_phase != "sampling of completions" and vllm.peak_allocated < sampled.peak_allocated
    zero3 = s.with_changes(gpus=4, parallelism="zero3", grad_accum=1)
    gathered = generation_bytes(qwen, zero3) - generation_bytes(qwen, zero3.with_changes(parallelism="ddp"))
    assert gathered == pytest.approx(qwen_weights_bytes(qwen) * 3 / 4)


def qwen_weights_bytes(arch) -> float:
    from ftkit.estimate.memory import model_params

    return model_params(arch, Setting(method="lora")) * 2


def test_preflight_offers_a_smaller_generation_batch_when_sampling_does_not_fit():
    from ftkit.estimate.preflight import CHANGES

    qwen = lookup("qwen2.5-7b")
    s = Setting(method="lora", stage="grpo", seq_len=4096, micro_batch=4, grad_accum=32, max_completion_len=2048)
    found = suggestions(qwen, s, 48.0, changes=CHANGES)
    assert found[0].changes[0].startswith("sample fewer completions at once") and found[0].need_gib <= 48 * 0.95
    smaller = s.with_changes(generation_batch_size=8)  # lcm(micro-batch 4, 8 generations)
    assert generation_bytes(qwen, smaller) < generation_bytes(qwen, s) / 10
