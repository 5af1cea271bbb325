"""Estimator terms against the real libraries: NF4 storage from bitsandbytes, saved activations from
transformers' Llama and PEFT's LoRA (measured with saved-tensor hooks), and the estimate CLI."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from ftkit.cli import main
from ftkit.estimate.architectures import lookup
from ftkit.estimate.from_recipe import architecture_from_config
from ftkit.estimate.inputs import ALL_LINEAR, Setting
from ftkit.estimate.memory import (
    estimate_memory,
    layer_activation_bytes_per_token,
    layer_linear_params,
    lora_params,
    nf4_bytes_per_param,
)
from ftkit.estimate.preflight import ENGINE_CHANGES, fits, suggestions

LLAMA8B = lookup("llama-3.1-8b")


def test_nf4_bytes_per_param_match_what_bitsandbytes_stores():
    bnb = pytest.importorskip("bitsandbytes")
    weight = torch.randn(1024, 4096, dtype=torch.bfloat16)
    for double_quant in (True, False):
        packed, state = bnb.functional.quantize_4bit(weight, blocksize=64, compress_statistics=double_quant,
                                                     quant_type="nf4")  # fmt: skip
        stored = packed.numel() * packed.element_size() + state.absmax.numel() * state.absmax.element_size()
        if double_quant:
            stored += state.state2.absmax.numel() * state.state2.absmax.element_size()
        assert stored / weight.numel() == pytest.approx(nf4_bytes_per_param(double_quant), rel=1e-3)


def test_fsdp_shards_only_the_packed_4bit_data_the_block_scales_are_not_parameters():
    """FSDP and ZeRO-3 shard and all-gather parameters. A bf16-storage Linear4bit (what QLoRA under FSDP uses) has
    one: its packed 4-bit data at 0.5 bytes a weight. The absmax lives in quant_state, outside parameters, buffers."""
    bnb = pytest.importorskip("bitsandbytes")
    weight = torch.randn(512, 256, dtype=torch.bfloat16)
    layer = bnb.nn.Linear4bit(256, 512, bias=False, quant_type="nf4", quant_storage=torch.bfloat16)
    layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", quant_storage=torch.bfloat16,
                                     compress_statistics=True)  # fmt: skip
    layer = layer.to("cpu")  # quantizes
    state = layer.weight.quant_state
    params = sum(p.numel() * p.element_size() for p in layer.parameters())
    assert params == weight.numel() * 0.5 and not list(layer.buffers())
    scales = state.absmax.numel() * state.absmax.element_size() + state.state2.absmax.numel() * 4
    assert scales / weight.numel() == pytest.approx(nf4_bytes_per_param(True) - 0.5, rel=1e-3)

    one = {t.name: t.bytes for t in estimate_memory(LLAMA8B, Setting(method="qlora")).terms}
    two = {t.name: t.bytes for t in estimate_memory(LLAMA8B, Setting(method="qlora", gpus=2, parallelism="fsdp")).terms}
    linear = layer_linear_params(LLAMA8B)
    assert two["nf4 block scales (every GPU)"] == pytest.approx(linear * (nf4_bytes_per_param(True) - 0.5))
    assert two["weights (nf4)"] + two["nf4 block scales (every GPU)"] == pytest.approx(
        linear * 0.5 / 2 + linear * (nf4_bytes_per_param(True) - 0.5)
    )
    assert two["weights (nf4)"] < one["weights (nf4)"] / 2
    # Two layers in flight (the current one and the prefetched next): packed 4-bit data plus fp32 adapters.
    adapters = lora_params(LLAMA8B, Setting(method="qlora")) / 32 * 4
    assert two["gathered layer (zero3/fsdp)"] == pytest.approx(2 * (linear / 32 * 0.5 + adapters))


def test_a_whole_model_load_under_fsdp_peaks_at_every_4bit_weight_plus_one_bf16_matrix_per_gpu():
    llama70 = lookup("llama-3.1-70b")
    sharded = Setting(method="qlora", gpus=4, parallelism="fsdp", seq_len=1024)
    whole = estimate_memory(llama70, sharded)  # the default: transformers quantizes while loading onto each GPU
    assert estimate_memory(llama70, sharded.with_changes(parallelism="zero3")).load_peak == whole.load_peak
    single = {t.name: t.bytes for t in estimate_memory(llama70, Setting(method="qlora")).terms}
    largest = 8192 * 28672 * 2  # the MLP matrices, in bf16 while bitsandbytes quantizes them
    assert whole.load_peak == pytest.approx(single["weights (nf4)"] + single["weights (bf16)"] + largest)
    assert whole.peak_allocated == whole.load_peak and whole.peak_phase.startswith("model load")
    assert whole.reserved == whole.load_peak  # loading does not fragment the pool; training does
    assert whole.train_peak * 1.1 < whole.load_peak
    trained = estimate_memory(llama70, sharded.with_changes(load_whole_model=False))
    assert trained.load_peak == 0 and trained.peak_allocated < whole.load_peak / 2  # sharding pays off after loading
    # Nothing to add where training keeps the whole model anyway, or for bf16 LoRA (FSDP moves it unit by unit).
    from ftkit.estimate.memory import loading_peak

    assert loading_peak(llama70, Setting(method="qlora", load_whole_model=True)) == 0
    lora = Setting(method="lora", gpus=4, parallelism="fsdp", load_whole_model=True)
    assert estimate_memory(llama70, lora).load_peak == 0


def _clean_h200_preparation_peaks() -> list[tuple[str, dict]]:
    """QLoRA recipe cases of the H200 runs whose load + preparation peak nothing before them inflated: the first case
    of a process, or one that started with nothing allocated."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from gpu_bench_reference import gpu_runs

    out = []
    for path, record in gpu_runs():
        for i, r in enumerate(record["results"]):
            st = r["settings"]
            clean = i == 0 or r.get("allocated_at_start_gib") == 0.0
            if (
                clean
                and st.get("axolotl_dtype_casts")
                and st.get("bnb_config_kwargs")
                and "peak_allocated_during_load_gib" in r
            ):
                out.append((f"{path.name}:{r['name']}", r))
    return out


def test_the_kbit_preparation_peak_matches_what_the_h200_measured_for_the_qlora_recipes():
    """Loading llama-3.1-8b in 4-bit and preparing it as Axolotl does (everything not 4-bit upcast to fp32, then the
    embeddings, lm_head and norms cast back to bf16) peaked at 8.252 GiB (6.295 for the reward model) on the H200."""
    from ftkit.estimate.memory import GIB, preparation_peak

    cases = _clean_h200_preparation_peaks()
    assert {r["settings"]["kind"] for _, r in cases} >= {"sft", "reward"}, cases
    for name, r in cases:
        st = r["settings"]
        s = Setting(method="qlora", stage=st["kind"], double_quant=st["bnb_config_kwargs"]["bnb_4bit_use_double_quant"])
        estimate = preparation_peak(LLAMA8B, s) / GIB
        assert estimate == pytest.approx(r["peak_allocated_during_load_gib"], rel=0.01), name
    # The peak before training is part of the estimate where it is larger than training's: a short sequence.
    short = estimate_memory(LLAMA8B, Setting(method="qlora", seq_len=512))
    assert short.peak_allocated == short.load_peak and short.peak_phase.startswith("model preparation")
    skip = estimate_memory(LLAMA8B, Setting(method="qlora", seq_len=512, embedding_upcast=False))
    assert skip.load_peak == 0 and skip.peak_allocated < short.peak_allocated


def test_preflight_offers_embeddings_skip_upcast_when_preparing_the_4bit_model_is_the_peak():
    from ftkit.errors import FtkitError
    from ftkit.estimate.memory import GIB
    from ftkit.estimate.preflight import check_stage

    s = Setting(method="qlora", seq_len=256)
    memory = estimate_memory(LLAMA8B, s)
    assert memory.peak_phase.startswith("model preparation")
    skipped = estimate_memory(LLAMA8B, s.with_changes(embedding_upcast=False))
    budget = (memory.device_total + skipped.device_total) / 2 / GIB / 0.95
    with pytest.raises(FtkitError) as exc:
        check_stage(LLAMA8B, s, [{"name": "small", "memory_gib": budget}], stage="sft", config_file="x",
                    engine="axolotl")  # fmt: skip
    problem = exc.value.problems[0]
    assert "model preparation" in problem.message and "embeddings_skip_upcast" in (problem.fix or "")
    assert "more GPUs" not in (problem.fix or "")


def test_estimate_cli_takes_the_embedding_dtype_flags(capsys: pytest.CaptureFixture[str]):
    def memory(*flags: str) -> dict:
        assert main(["estimate", "--model", "llama-3.1-8b", "--seq-len", "512", *flags, "--json"]) == 0
        return json.loads(capsys.readouterr().out)["stages"][0]["memory"]

    upcast, skipped = memory("--method", "qlora"), memory("--method", "qlora", "--no-embedding-upcast")
    assert upcast["load_peak_gib"] > 8 and skipped["load_peak_gib"] == 0
    bf16, fp32 = memory("--method", "full"), memory("--method", "full", "--fp32-embeddings")
    assert fp32["peak_allocated_gib"] - bf16["peak_allocated_gib"] > 7.8


def test_master_weights_add_an_fp32_copy_and_fp32_adamw_states_sharded_like_the_optimizer():
    plain = Setting(method="full", gpus=8, parallelism="zero3")
    masters = {t.name: t.bytes for t in estimate_memory(LLAMA8B, plain.with_changes(master_weights=True)).terms}
    bf16 = {t.name: t.bytes for t in estimate_memory(LLAMA8B, plain).terms}
    n = 8_030_261_248
    assert masters["fp32 master weights"] == n * 4 / 8 and "fp32 master weights" not in bf16
    assert masters["optimizer states"] == n * 8 / 8 and bf16["optimizer states"] == n * 4 / 8
    assert masters["gradients"] == bf16["gradients"] and masters["weights (bf16)"] == bf16["weights (bf16)"]


def test_deepspeed_steps_with_an_fp32_copy_of_the_gradient_partition_and_its_flat_bf16_copy():
    """ZeRO-1/2: the whole partition at once (6 bytes an element with the fused kernel, 8 with foreach); ZeRO-3 one
    sub-group at a time. The step is the peak when the activations are small."""
    n = 8_030_261_248
    for stage in ("zero1", "zero2", "zero3"):
        s = Setting(method="full", gpus=8, parallelism=stage, master_weights=True, seq_len=256)
        fused = estimate_memory(LLAMA8B, s)
        foreach = estimate_memory(LLAMA8B, s.with_changes(adamw_kernel="foreach"))
        assert _by_name(fused)["optimizer step (transient)"] == pytest.approx(n / 8 * 6)
        assert _by_name(foreach)["optimizer step (transient)"] == pytest.approx(n / 8 * 8)
        assert fused.peak_phase == "optimizer step"
        terms = _by_name(fused)
        step = terms.pop("optimizer step (transient)")
        resident = sum(b for k, b in terms.items() if k not in ("gradients", "logits") and not k.startswith("act"))
        assert fused.peak_allocated == pytest.approx(resident + terms["gradients"] + step)
    two = Setting(method="full", gpus=2, parallelism="zero3", master_weights=True, seq_len=256)
    embedding = LLAMA8B.vocab_size * LLAMA8B.hidden_size
    capped = _by_name(estimate_memory(LLAMA8B, two))["optimizer step (transient)"]
    assert capped == pytest.approx((1e9 + embedding / 2) * 6)  # a sub-group closes past sub_group_size
    small = two.with_changes(sub_group_size=100_000_000)
    assert _by_name(estimate_memory(LLAMA8B, small))["optimizer step (transient)"] == (1e8 + embedding / 2) * 6
    offloaded = two.with_changes(cpu_offload=True)  # DeepSpeed then steps on the CPU
    assert "optimizer step (transient)" not in _by_name(estimate_memory(LLAMA8B, offloaded))


def test_a_foreach_adamw_step_allocates_one_state_sized_temporary_and_the_fused_kernel_none():
    full = Setting(method="full", seq_len=1024)
    foreach = estimate_memory(LLAMA8B, full.with_changes(adamw_kernel="foreach"))
    assert _by_name(foreach)["optimizer step (transient)"] == 8_030_261_248 * 2  # sqrt(exp_avg_sq) in bf16
    assert foreach.peak_phase == "optimizer step"
    fused = estimate_memory(LLAMA8B, full)
    assert "optimizer step (transient)" not in _by_name(fused)
    assert foreach.peak_allocated - fused.peak_allocated > 14 * 2**30
    lora = Setting(method="lora", adamw_kernel="foreach")  # fp32 adapter states: 4 bytes a trainable parameter
    assert _by_name(estimate_memory(LLAMA8B, lora))["optimizer step (transient)"] == lora_params(LLAMA8B, lora) * 4
    eight_bit = full.with_changes(adamw_kernel="foreach", optimizer="adamw_8bit")
    assert "optimizer step (transient)" not in _by_name(estimate_memory(LLAMA8B, eight_bit))


def test_preflight_offers_the_fused_adamw_kernel_first_when_the_foreach_step_does_not_fit():
    s = Setting(method="full", seq_len=1024, adamw_kernel="foreach")  # ~75 GiB at the step, ~60 without it
    found = suggestions(LLAMA8B, s, 80.0)
    assert found[0].changes[0].startswith("use the fused AdamW kernel") and found[0].need_gib < 80 * 0.95


def _by_name(b) -> dict[str, float]:
    return {t.name: t.bytes for t in b.terms}


def test_preflight_names_the_loading_peak_when_loading_does_not_fit():
    from ftkit.errors import FtkitError
    from ftkit.estimate.preflight import check_stage

    s = Setting(method="qlora", gpus=4, parallelism="fsdp", seq_len=1024)
    a100_40 = [{"name": "NVIDIA A100-SXM4-40GB", "memory_gib": 39.4}] * 4
    with pytest.raises(FtkitError) as exc:
        check_stage(lookup("llama-3.1-70b"), s, a100_40, stage="sft", config_file="sft.axolotl.yaml")
    problem = exc.value.problems[0]
    assert "at the model load" in problem.message and "whole 4-bit model on every GPU" in problem.message
    assert "more GPUs do not help" in (problem.fix or "")
    eighty = [{"name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.1}] * 4
    assert check_stage(lookup("llama-3.1-70b"), s, eighty, stage="sft", config_file="x")["fits"]


def test_estimate_cli_shows_the_loading_peak_of_sharded_qlora_unless_told_otherwise(capsys: pytest.CaptureFixture[str]):
    argv = ["estimate", "--model", "llama-3.1-70b", "--method", "qlora", "--gpus", "4", "--parallelism", "fsdp"]
    assert main([*argv, "--json"]) == 0
    memory = json.loads(capsys.readouterr().out)["stages"][0]["memory"]
    assert memory["load_peak_gib"] > 35 and memory["peak_allocated_gib"] == memory["load_peak_gib"]
    assert main(argv) == 0
    assert "peak before training" in capsys.readouterr().out
    assert main([*argv, "--no-whole-model-load", "--json"]) == 0
    unit_by_unit = json.loads(capsys.readouterr().out)["stages"][0]["memory"]
    assert unit_by_unit["load_peak_gib"] == 0 and unit_by_unit["peak_allocated_gib"] < 35


def test_qlora_weights_of_llama_8b_are_nf4_linear_layers_plus_bf16_rest():
    terms = {t.name: t.bytes for t in estimate_memory(LLAMA8B, Setting(method="qlora")).terms}
    linear = layer_linear_params(LLAMA8B)
    assert linear == 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)
    assert terms["weights (nf4)"] == pytest.approx(linear * (0.5 + 1 / 64 + 4 / (64 * 256)))
    assert terms["weights (bf16)"] == (8_030_261_248 - linear) * 2


def test_lora_params_count_lm_head_and_all_linear():
    s = Setting(method="lora", lora_rank=16, lora_targets=("all-linear",))
    assert lora_params(LLAMA8B, s) == lora_params(LLAMA8B, Setting(method="lora", lora_rank=16))
    with_head = Setting(method="lora", lora_rank=16, lora_targets=(*ALL_LINEAR, "lm_head"))
    assert lora_params(LLAMA8B, with_head) - lora_params(LLAMA8B, s) == 16 * (4096 + 128256)


TINY = {"hidden_size": 256, "intermediate_size": 688, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 80, "vocab_size": 1000, "tie_word_embeddings": False, "max_position_embeddings": 512}  # fmt: skip


def _saved_bytes(
    layers: int, method: str, targets: tuple[str, ...], dropout: float, attn: str, seq: int, adapter: str,
    autocast: bool = False, fp32_rest: bool = False,
) -> int:  # fmt: skip
    """Bytes autograd still keeps for backward at the end of one forward of a tiny Llama (parameters
    excluded; tensors saved by branches that died during the forward, e.g. DoRA's detached norm, are not).
    With `autocast`, the forward runs under bf16 autocast as the HF Trainer runs it with bf16=True."""
    import contextlib
    import gc
    import weakref

    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(num_hidden_layers=layers, **TINY)
    cfg._attn_implementation = attn
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    if fp32_rest:  # what Axolotl leaves for a full fine-tune without FSDP or flash attention
        for name, module in model.named_modules():
            if "norm" in name or name.endswith(("embed_tokens", "lm_head")):
                module.to(torch.float32)
    if method != "full":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=8, target_modules=list(targets), lora_dropout=dropout, use_dora=method == "dora")
        model = get_peft_model(model, config, autocast_adapter_dtype=adapter == "fp32")
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    refs: list[weakref.ref[torch.Tensor]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        refs.append(weakref.ref(t))
        return t

    cast = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), cast:
        out = model(input_ids=torch.randint(0, TINY["vocab_size"], (2, seq)))
    gc.collect()
    live = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for r in refs if (t := r()) is not None}
    del out
    return sum(n for ptr, n in live.items() if ptr not in params)


@pytest.mark.model
@pytest.mark.parametrize(
    ("method", "targets", "dropout", "attn", "adapter"),
    [("full", ALL_LINEAR, 0.0, "sdpa", "fp32"), ("lora", ALL_LINEAR, 0.0, "sdpa", "fp32"),
     ("lora", ALL_LINEAR, 0.1, "sdpa", "fp32"), ("lora", ("q_proj", "v_proj"), 0.0, "sdpa", "fp32"),
     ("lora", ALL_LINEAR, 0.0, "eager", "fp32"), ("lora", ALL_LINEAR, 0.0, "sdpa", "bf16"),
     ("lora", ALL_LINEAR, 0.1, "sdpa", "bf16"), ("lora", ("q_proj", "v_proj"), 0.0, "sdpa", "bf16"),
     ("dora", ALL_LINEAR, 0.0, "sdpa", "fp32"), ("dora", ("q_proj", "v_proj"), 0.0, "sdpa", "fp32")],
)  # fmt: skip
def test_activation_bytes_per_layer_match_what_autograd_saves(method, targets, dropout, attn, adapter):
    seq = 48
    per_layer_token = (_saved_bytes(4, method, targets, dropout, attn, seq, adapter)
                       - _saved_bytes(2, method, targets, dropout, attn, seq, adapter)) / 2 / (2 * seq)  # fmt: skip
    arch = architecture_from_config({**TINY, "num_hidden_layers": 2, "model_type": "llama"}, "tiny", "")
    s = Setting(method=method, lora_rank=8, lora_targets=targets, lora_dropout=dropout, attention=attn, seq_len=seq,
                adapter_dtype=adapter, autocast=False)  # fmt: skip
    assert layer_activation_bytes_per_token(arch, s) == pytest.approx(per_layer_token, rel=0.02)


def test_preflight_offers_axolotl_flash_attention_for_a_full_fine_tune_holding_fp32_embeddings():
    from ftkit.estimate.memory import GIB

    llama3b = lookup("llama-3.2-3b")
    s = Setting(method="full", seq_len=1024, optimizer="adamw", fp32_embeddings=True)
    need = estimate_memory(llama3b, s).device_total / GIB
    flat = estimate_memory(llama3b, s.with_changes(fp32_embeddings=False)).device_total / GIB
    budget = (need + flat) / 2 / 0.95  # fits only without the fp32 embeddings
    found = suggestions(llama3b, s, budget, changes=ENGINE_CHANGES["axolotl"])
    assert found and "flash_attention" in found[0].changes[0]
    assert not suggestions(llama3b, s.with_changes(fp32_embeddings=False), 1.0,
                           changes=ENGINE_CHANGES["axolotl"])  # fmt: skip


@pytest.mark.model
def test_full_fine_tuning_with_fp32_embeddings_and_norms_keeps_what_autograd_saves():
    """Axolotl's single-process full fine-tune with SDPA: embeddings, lm_head and norms stay fp32 under bf16 autocast,
    so the residual stream is fp32 (10 x hidden more per layer and token for Llama's layout)."""
    seq = 48
    saved = [
        _saved_bytes(n, "full", ALL_LINEAR, 0.0, "sdpa", seq, "fp32", autocast=True, fp32_rest=True) for n in (4, 2)
    ]
    per_layer_token = (saved[0] - saved[1]) / 2 / (2 * seq)
    arch = architecture_from_config({**TINY, "num_hidden_layers": 2, "model_type": "llama"}, "tiny", "")
    s = Setting(method="full", seq_len=seq, fp32_embeddings=True, autocast=True)
    assert layer_activation_bytes_per_token(arch, s) == pytest.approx(per_layer_token, rel=0.02)
    plain = layer_activation_bytes_per_token(arch, Setting(method="full", seq_len=seq))
    assert layer_activation_bytes_per_token(arch, s) - plain == 10 * TINY["hidden_size"]


def test_fp32_embeddings_train_with_fp32_weights_gradients_and_adamw_states():
    bf16 = {t.name: t.bytes for t in estimate_memory(LLAMA8B, Setting(method="full")).terms}
    fp32 = {t.name: t.bytes for t in estimate_memory(LLAMA8B, Setting(method="full", fp32_embeddings=True)).terms}
    rest = 2 * 128256 * 4096 + 65 * 4096  # embeddings, lm_head, norms of Llama-3.1-8B
    assert fp32["weights (fp32)"] == rest * 4 and fp32["weights (bf16)"] == (8_030_261_248 - rest) * 2
    assert fp32["gradients"] - bf16["gradients"] == rest * 2
    assert fp32["optimizer states"] - bf16["optimizer states"] == rest * 4


@pytest.mark.model
@pytest.mark.parametrize(
    ("method", "targets", "dropout"),
    [("lora", ALL_LINEAR, 0.0), ("lora", ALL_LINEAR, 0.1), ("lora", ("q_proj", "v_proj"), 0.0),
     ("dora", ALL_LINEAR, 0.0)],
)  # fmt: skip
def test_fp32_adapters_under_bf16_autocast_keep_bf16_input_copies_as_estimated(method, targets, dropout):
    """The recipes' setting (HF Trainer, bf16=True): fp32 adapters, the forward under bf16 autocast."""
    from ftkit.estimate.memory import DROPOUT_MASK, FP32
    from ftkit.estimate.params import linear_shapes

    seq = 48
    saved = [_saved_bytes(n, method, targets, dropout, "sdpa", seq, "fp32", autocast=True) for n in (4, 2)]
    per_layer_token = (saved[0] - saved[1]) / 2 / (2 * seq)
    arch = architecture_from_config({**TINY, "num_hidden_layers": 2, "model_type": "llama"}, "tiny", "")
    s = Setting(method=method, lora_rank=8, lora_targets=targets, lora_dropout=dropout, seq_len=seq,
                adapter_dtype="fp32", autocast=True)  # fmt: skip
    shapes = linear_shapes(arch)
    # Autocast's cached bf16 copies of each layer's adapter weights are per layer, not per token (the estimator
    # counts them once, as a resident term): spread over this test's tokens to compare.
    cache = sum(8 * (shapes[t][0] + shapes[t][1]) for t in targets) * 2 / (2 * seq)
    # On the CPU dropout keeps an fp32 noise tensor where CUDA's fused dropout keeps a bool mask.
    cpu_dropout = (FP32 - DROPOUT_MASK) * sum(shapes[t][0] for t in targets) if dropout else 0
    expected = layer_activation_bytes_per_token(arch, s) + cache + cpu_dropout
    assert expected == pytest.approx(per_layer_token, rel=0.02)
    without = layer_activation_bytes_per_token(arch, s.with_changes(autocast=False))
    assert without > expected, "without autocast the adapters keep fp32 copies: more memory"


def test_a_setting_over_budget_gets_changes_that_fit_cheapest_first():
    s = Setting(method="lora", seq_len=4096, micro_batch=4, gradient_checkpointing=False, optimizer="adamw")
    assert not fits(LLAMA8B, s, 24)
    found = suggestions(LLAMA8B, s, 24)
    assert found, "some change must make an 8B LoRA fit a 24 GB GPU"
    for sug in found:
        assert sug.need_gib <= 24 * 0.95
    assert all(len(a.changes) <= len(b.changes) for a, b in itertools.pairwise(found))


def test_estimate_prints_both_stages_of_the_dpo_recipe_with_time_and_cost(capsys: pytest.CaptureFixture):
    assert main(["estimate", "--recipe", "llama8b-qlora-dpo", "--tokens", "1e8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["stage"] for s in report["stages"]] == ["sft", "dpo"]
    sft, dpo = report["stages"]
    assert sft["setting"]["method"] == "qlora" and dpo["setting"]["stage"] == "dpo"
    assert {t["name"] for t in sft["memory"]["terms"]} >= {"weights (nf4)", "optimizer states", "logits"}
    priced = [g for g in sft["gpus"] if g["fits"] and g["cost_usd"]]
    assert priced and all(g["hours"] > 0 for g in priced)
    costs = [min(g["cost_usd"].values()) for g in priced]
    assert costs == sorted(costs), "GPUs that fit come cheapest first"


def test_an_sft_stage_whose_largest_term_is_the_logits_gets_the_chunked_loss_hint():
    from ftkit.estimate.summary import estimate_report

    sft, dpo = estimate_report(recipe="llama8b-qlora-dpo")["stages"]
    largest = max(sft["memory"]["terms"], key=lambda t: t["gib"])
    assert largest["name"] == "logits"
    chunked = estimate_memory(LLAMA8B, Setting(**{**sft["setting"], "loss": "chunked"})).device_total / 2**30
    assert chunked < sft["memory"]["device_total_gib"] - 2.5, "4096 tokens x 128k vocab: 6 bytes a logit less"
    expected = f"needs {chunked:.1f} GiB per GPU instead of {sft['memory']['device_total_gib']:.1f}"
    assert "chunked_cross_entropy: true" in sft["hint"] and expected in sft["hint"]
    assert dpo["hint"] is None, "the preference stages compute their own log-probs"


def test_preflight_refuses_a_stage_that_will_not_fit_the_gpu_before_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture
):
    from conftest import ROOT
    from ftkit import envinfo

    monkeypatch.setattr(envinfo, "gpus", lambda: [{"name": "NVIDIA L4", "memory_gib": 12.0}])
    monkeypatch.setenv("FTKIT_RECIPES", str(ROOT / "recipes"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["recipe", "run", "llama8b-qlora-dpo", "--profile", "full", "--runs-dir", str(tmp_path)]) == 5
    err = " ".join(capsys.readouterr().err.split())
    assert "stage 'sft' needs about" in err and "this GPU has 12.0 GiB" in err and "training did not start" in err
    assert "--force" in err and "logits" in err
    [run_dir] = list((tmp_path / "llama8b-qlora-dpo").iterdir())
    assert not (run_dir / "sft" / "train.log").exists()


def test_preflight_with_force_records_the_estimate_instead_of_refusing():
    from ftkit.estimate.preflight import check_stage

    s = Setting(method="qlora", seq_len=4096, micro_batch=2)
    result = check_stage(LLAMA8B, s, [{"name": "NVIDIA L4", "memory_gib": 12.0}], stage="sft", config_file="x",
                         force=True)  # fmt: skip
    assert result["verdict"] == "forced" and not result["fits"] and result["suggestions"]
    roomy = check_stage(LLAMA8B, s, [{"name": "H100", "memory_gib": 79.2}], stage="sft", config_file="x")
    assert roomy["verdict"] == "fits" and roomy["suggestions"] == []


def test_preflight_offers_axolotls_chunked_loss_first_for_an_sft_stage_and_not_for_other_engines():
    from ftkit.estimate.preflight import check_stage

    s = Setting(method="qlora", seq_len=4096, micro_batch=1)  # 15.2 GiB; the chunked loss saves 2.9 of it
    gpu = [{"name": "a 14 GiB GPU", "memory_gib": 14.0}]
    axolotl = check_stage(LLAMA8B, s, gpu, stage="sft", config_file="x", force=True, engine="axolotl")
    first = axolotl["suggestions"][0]
    assert first["changes"] == [next(t for t, _ in ENGINE_CHANGES["axolotl"])] and first["need_gib"] <= 14 * 0.95
    trl = check_stage(LLAMA8B, s, gpu, stage="sft", config_file="x", force=True, engine="trl")
    assert all("chunked_cross_entropy" not in c for sug in trl["suggestions"] for c in sug["changes"])
    dpo = check_stage(LLAMA8B, Setting(stage="dpo", seq_len=2048, micro_batch=2), gpu, stage="dpo",
                      config_file="x", force=True, engine="axolotl")  # fmt: skip
    assert not dpo["fits"]
    assert all("chunked_cross_entropy" not in c for sug in dpo["suggestions"] for c in sug["changes"])


def test_preference_rows_count_two_sequences_for_time_and_cost():
    from ftkit.estimate.summary import estimate_report

    sft = estimate_report(model="qwen2.5-0.5b", overrides={"stage": "sft"}, rows=10, avg_tokens=100)
    dpo = estimate_report(model="qwen2.5-0.5b", overrides={"stage": "dpo"}, rows=10, avg_tokens=100)
    assert sft["stages"][0]["tokens"] == 1000 and dpo["stages"][0]["tokens"] == 2000


def test_a_grpo_row_is_a_prompt_whose_group_of_completions_counts_for_time():
    from ftkit.estimate.summary import estimate_report

    grpo = estimate_report(model="qwen2.5-0.5b", overrides={"stage": "grpo", "num_generations": 8}, rows=10,
                           avg_tokens=100)  # fmt: skip
    assert grpo["stages"][0]["tokens"] == 10 * 8 * 100


def test_a_grpo_micro_batch_counts_completions_not_prompts():
    """TRL's GRPO per_device_train_batch_size is in completions: 8 generations do not multiply the activations."""
    from ftkit.estimate.memory import sequences_per_step

    assert sequences_per_step(Setting(stage="grpo", micro_batch=4, num_generations=8)) == 4
    assert sequences_per_step(Setting(stage="dpo", micro_batch=4)) == 8


def _terms(arch, **setting) -> dict[str, float]:
    return {t.name: t.bytes for t in estimate_memory(arch, Setting(**setting)).terms}


def test_qlora_counts_the_largest_matrix_bitsandbytes_dequantizes_to_bf16():
    bnb = pytest.importorskip("bitsandbytes")
    weight = torch.randn(256, 512, dtype=torch.bfloat16)
    packed, state = bnb.functional.quantize_4bit(weight, blocksize=64, quant_type="nf4")
    dense = bnb.functional.dequantize_4bit(packed, state)
    assert dense.shape == weight.shape and dense.dtype == torch.bfloat16  # the whole matrix, 2 bytes a value
    largest = LLAMA8B.hidden_size * LLAMA8B.intermediate_size  # gate/up/down_proj
    assert _terms(LLAMA8B, method="qlora")["dequantized weight (transient)"] == largest * 2
    assert "dequantized weight (transient)" not in _terms(LLAMA8B, method="lora")
    # bitsandbytes < 0.43.3 dequantized through an fp16 copy first
    assert _terms(LLAMA8B, method="qlora", legacy_bitsandbytes=True)["dequantized weight (transient)"] == largest * 4


def test_a_quantized_lm_head_is_nf4_weights_and_the_largest_dequantized_matrix():
    plain, quantized = _terms(LLAMA8B, method="qlora"), _terms(LLAMA8B, method="qlora", quantize_lm_head=True)
    head = LLAMA8B.vocab_size * LLAMA8B.hidden_size
    assert quantized["weights (nf4)"] - plain["weights (nf4)"] == pytest.approx(head * nf4_bytes_per_param(True))
    assert plain["weights (bf16)"] - quantized["weights (bf16)"] == head * 2
    assert quantized["dequantized weight (transient)"] == head * 2
    tied = lookup("llama-3.2-1b")  # a tied head is the embedding: it stays bf16
    assert _terms(tied, method="qlora", quantize_lm_head=True) == _terms(tied, method="qlora")


def test_legacy_bitsandbytes_keeps_each_4bit_layer_input_not_already_kept_by_an_adapter():
    h, i = LLAMA8B.hidden_size, LLAMA8B.intermediate_size
    q = LLAMA8B.num_attention_heads * LLAMA8B.head_dim
    base = {"method": "qlora", "lora_targets": ("q_proj", "v_proj"), "gradient_checkpointing": False}
    for adapter, already_kept in (("fp32", 0), ("bf16", h)):  # bf16 q/v adapters keep the normed attention input
        now = layer_activation_bytes_per_token(LLAMA8B, Setting(**base, adapter_dtype=adapter))
        legacy = layer_activation_bytes_per_token(LLAMA8B, Setting(**base, adapter_dtype=adapter,
                                                                   legacy_bitsandbytes=True))  # fmt: skip
        assert legacy - now == 2 * (h + q + h + i - already_kept)
    lora = Setting(method="lora", legacy_bitsandbytes=True)  # only 4-bit layers are affected
    assert layer_activation_bytes_per_token(LLAMA8B, lora) == layer_activation_bytes_per_token(
        LLAMA8B, Setting(method="lora")
    )


def test_bf16_adapters_weigh_two_bytes_a_parameter():
    n = lora_params(LLAMA8B, Setting(method="lora"))
    assert _terms(LLAMA8B, method="lora", adapter_dtype="bf16")["adapter (bf16)"] == n * 2
    assert _terms(LLAMA8B, method="lora")["adapter (fp32)"] == n * 4


def test_a_reward_model_swaps_the_lm_head_for_a_scalar_score_head_as_transformers_builds_it():
    from ftkit.estimate.memory import model_params
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    cfg = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, num_labels=1)  # fmt: skip
    with torch.device("meta"):
        built = AutoModelForSequenceClassification.from_config(cfg)
    assert model_params(LLAMA8B, Setting(stage="reward")) == sum(p.numel() for p in built.parameters())
    reward = {t.name: t.bytes for t in estimate_memory(LLAMA8B, Setting(stage="reward")).terms}
    sft = {t.name: t.bytes for t in estimate_memory(LLAMA8B, Setting(stage="sft")).terms}
    assert sft["weights (bf16)"] - reward["weights (bf16)"] == (128256 * 4096 - 4096) * 2
    assert reward["logits"] == 0


def test_kto_keeps_activations_and_logits_of_its_batch_only_and_orpo_adds_the_chosen_nll():
    """TRL's KTOTrainer computes the KL batch's log-probs under no_grad; ORPOTrainer adds a cross-entropy over the
    chosen half (measured on an H200: kto 9.21 GiB, orpo 14.46 GiB; benchmarks/vram_reference.yaml)."""
    from ftkit.estimate.memory import logit_bytes, tokens_per_step, tokens_with_grad

    kto = Setting(stage="kto", micro_batch=2, seq_len=1024)
    assert tokens_per_step(kto) == 4 * 1024 and tokens_with_grad(kto) == 2 * 1024
    sft = Setting(stage="sft", micro_batch=2, seq_len=1024)
    terms = {t.name: t.bytes for t in estimate_memory(LLAMA8B, kto).terms}
    assert terms["logits"] == {t.name: t.bytes for t in estimate_memory(LLAMA8B, sft).terms}["logits"]
    assert logit_bytes(Setting(stage="orpo")) == logit_bytes(Setting(stage="dpo")) + 4


def test_a_chunked_sft_loss_keeps_the_bf16_logits_and_their_gradient_and_a_fused_one_no_logits():
    from ftkit.estimate.memory import CHUNKED_LOGIT_BYTES, FUSED_BYTES_PER_HIDDEN

    def logits(**kw: object) -> float:
        return {t.name: t.bytes for t in estimate_memory(LLAMA8B, Setting(seq_len=4096, **kw)).terms}["logits"]

    assert logits() == 4096 * 128256 * 10
    assert logits(loss="chunked") == 4096 * 128256 * CHUNKED_LOGIT_BYTES == 4096 * 128256 * 4
    assert logits(loss="fused") == 4096 * 4096 * FUSED_BYTES_PER_HIDDEN == 4096 * 4096 * 6
    # full fine-tuning: Liger accumulates the lm_head's gradient (bf16) during the forward
    assert logits(loss="fused", method="full") == logits(loss="fused") + 128256 * 4096 * 2
    assert logits(loss="fused") < logits(loss="chunked") < logits()
    # TRL's preference trainers compute log-probs from the logits themselves: the SFT loss kernel does not apply.
    assert logits(stage="dpo", loss="chunked") == logits(stage="dpo")
    peak = {k: estimate_memory(LLAMA8B, Setting(seq_len=4096, loss=k)).peak_allocated for k in ("standard", "chunked")}
    assert peak["standard"] - peak["chunked"] == 4096 * 128256 * 6


def test_the_chunked_loss_term_is_what_the_cpu_loss_benchmark_measured():
    """benchmarks/loss_memory.py: peak bytes per logit of one forward + backward, each loss in its own process."""
    from pathlib import Path

    from ftkit.estimate.memory import CHUNKED_LOGIT_BYTES, LOGIT_BYTES

    results = sorted((Path(__file__).resolve().parents[1] / "benchmarks/results").glob("loss_memory-cpu-*.json"))
    assert results, "run python benchmarks/loss_memory.py"
    measured = json.loads(results[-1].read_text())["results"]
    per = {name: r["bytes_per_logit"] for name, r in measured.items()}
    assert per["chunked-compiled"] == pytest.approx(CHUNKED_LOGIT_BYTES, abs=0.25)
    # The standard loss measures 12 bytes on the CPU; the estimator's 10 is what the H200 runs of the recipes fit.
    assert per["standard"] >= LOGIT_BYTES and per["chunked-eager"] < per["standard"]
