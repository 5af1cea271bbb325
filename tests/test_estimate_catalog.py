"""The estimate catalogs: architectures against the real transformers models (built on the meta device, no
weights), LoRA counts against PEFT, published parameter counts, and the GPU catalog and its name lookup."""

from __future__ import annotations

import datetime as dt

import pytest
import torch
from ftkit.estimate.architectures import ALIASES, ARCHITECTURES, PUBLISHED_PARAMS, lookup
from ftkit.estimate.gpus import GPU_NOTES, GPUS, gpu_key, lookup_gpu
from ftkit.estimate.params import (
    USUAL_LINEAR_NAMES,
    linear_shapes,
    lora_param_count,
    param_count,
    resolve_lora_targets,
)
from ftkit.estimate.specs import Architecture
from transformers import AutoConfig, AutoModelForCausalLM

MODEL_TYPE = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "gemma2": "gemma2", "phi3": "phi3"}


def meta_model(arch: Architecture, layers: int | None = None) -> torch.nn.Module:
    """The transformers causal-LM for `arch`, on the meta device (shapes only, no memory)."""
    fields = {
        "hidden_size": arch.hidden_size,
        "intermediate_size": arch.intermediate_size,
        "num_hidden_layers": layers or arch.num_hidden_layers,
        "num_attention_heads": arch.num_attention_heads,
        "num_key_value_heads": arch.num_key_value_heads,
        "head_dim": arch.head_dim,
        "vocab_size": arch.vocab_size,
        "tie_word_embeddings": arch.tie_word_embeddings,
        "max_position_embeddings": arch.max_position_embeddings,
    }
    if arch.family == "llama":
        fields["attention_bias"] = arch.attention_bias
    cfg = AutoConfig.for_model(MODEL_TYPE[arch.family], **fields)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- architectures ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(ARCHITECTURES))
def test_param_count_matches_the_meta_built_model(key: str) -> None:
    arch = ARCHITECTURES[key]
    assert n_params(meta_model(arch)) == param_count(arch)


@pytest.mark.parametrize("key", sorted(PUBLISHED_PARAMS))
def test_param_count_matches_the_published_count(key: str) -> None:
    published, source = PUBLISHED_PARAMS[key]
    assert source
    assert param_count(ARCHITECTURES[key]) == published


@pytest.mark.parametrize("key", sorted(ARCHITECTURES))
def test_linear_shapes_match_the_model_modules(key: str) -> None:
    arch = ARCHITECTURES[key]
    layer = meta_model(arch, layers=1).model.layers[0]
    found = {
        name.rsplit(".", 1)[-1]: (module.in_features, module.out_features)
        for name, module in layer.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    assert found == linear_shapes(arch)


@pytest.mark.parametrize("key", sorted(ARCHITECTURES))
def test_catalog_entries_are_consistent(key: str) -> None:
    arch = ARCHITECTURES[key]
    assert arch.name == key
    assert arch.family in MODEL_TYPE
    assert arch.num_attention_heads % arch.num_key_value_heads == 0
    if arch.family != "gemma2":  # Gemma-2 sets head_dim explicitly (256 / 128), not hidden / heads
        assert arch.head_dim == arch.hidden_size // arch.num_attention_heads
    assert arch.attention_bias == (arch.family == "qwen2")
    assert "huggingface.co" in arch.source and "2026-11-25" in arch.source


def test_published_counts_cover_every_architecture() -> None:
    assert set(PUBLISHED_PARAMS) == set(ARCHITECTURES)


def test_tied_embeddings_follow_the_configs() -> None:
    tied = {k for k, a in ARCHITECTURES.items() if a.tie_word_embeddings}
    assert tied == {
        "llama-3.2-1b", "llama-3.2-3b", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b",
        "gemma-2-2b", "gemma-2-9b", "gemma-2-27b", "smollm2-135m", "smollm2-360m", "smollm2-1.7b",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("llama-3.1-8b", "llama-3.1-8b"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
        ("meta-llama/Meta-Llama-3.1-8B", "llama-3.1-8b"),
        ("META-LLAMA/META-LLAMA-3.1-70B-INSTRUCT", "llama-3.1-70b"),
        ("meta-llama/Llama-3.2-1B-Instruct", "llama-3.2-1b"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral-7b"),
        ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b"),
        ("qwen2.5-72b", "qwen2.5-72b"),
        ("google/gemma-2-9b-it", "gemma-2-9b"),
        ("gemma-2-27b-it", "gemma-2-27b"),
        ("microsoft/Phi-3-mini-4k-instruct", "phi-3-mini"),
        ("HuggingFaceTB/SmolLM2-1.7B-Instruct", "smollm2-1.7b"),
        ("smollm2-135m-instruct", "smollm2-135m"),
        ("https://huggingface.co/Qwen/Qwen2.5-0.5B", "qwen2.5-0.5b"),
    ],
)
def test_lookup_accepts_keys_aliases_and_hub_ids(name: str, key: str) -> None:
    arch = lookup(name)
    assert arch is not None and arch.name == key


@pytest.mark.parametrize("name", ["", "gpt2", "meta-llama/Llama-2-7b-hf", "Qwen/Qwen3-8B", "gemma-2-9"])
def test_lookup_returns_none_for_unknown_models(name: str) -> None:
    assert lookup(name) is None


def test_aliases_point_at_catalog_keys() -> None:
    assert set(ALIASES.values()) <= set(ARCHITECTURES)
    assert all(alias == alias.lower() for alias in ALIASES)


# ---- LoRA -----------------------------------------------------------------------------------------------------------


def peft_lora_count(arch: Architecture, rank: int, targets: str | list[str]) -> int:
    """PEFT's own count (imported here: PEFT pulls in bitsandbytes and torchao, seconds the fast layer never needs)."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(meta_model(arch), LoraConfig(r=rank, target_modules=targets))
    trainable, _ = model.get_nb_trainable_parameters()
    return trainable


@pytest.mark.model
def test_lora_count_for_llama_8b_all_linear_matches_peft() -> None:
    arch = ARCHITECTURES["llama-3.1-8b"]
    targets = list(USUAL_LINEAR_NAMES)
    ours = lora_param_count(arch, 16, targets)
    assert ours == 41_943_040  # 32 layers x 16 x (sum of in + out over the 7 projections)
    assert ours == peft_lora_count(arch, 16, targets)
    assert lora_param_count(arch, 16, "all-linear") == ours


@pytest.mark.model
@pytest.mark.parametrize(
    ("key", "rank", "targets"),
    [
        ("qwen2.5-0.5b", 8, ["q_proj", "k_proj", "v_proj", "o_proj"]),  # q/k/v biases are not LoRA parameters
        ("gemma-2-2b", 16, ["q_proj", "v_proj"]),
        ("mistral-7b", 32, "all-linear"),
        ("phi-3-mini", 16, "all-linear"),  # fused qkv_proj and gate_up_proj
    ],
)
def test_lora_count_matches_peft_for_other_families(key: str, rank: int, targets: str | list[str]) -> None:
    arch = ARCHITECTURES[key]
    assert lora_param_count(arch, rank, targets) == peft_lora_count(arch, rank, targets)


def test_phi3_usual_names_map_to_its_fused_modules() -> None:
    arch = ARCHITECTURES["phi-3-mini"]
    assert resolve_lora_targets(arch, ["q_proj", "k_proj", "v_proj", "gate_proj"]) == ["qkv_proj", "gate_up_proj"]
    fused = lora_param_count(arch, 16, ["qkv_proj", "gate_up_proj"])
    assert lora_param_count(arch, 16, ["q_proj", "v_proj", "up_proj"]) == fused
    assert fused == peft_lora_count(arch, 16, ["qkv_proj", "gate_up_proj"])


def test_qwen_v1_from_its_config_json_counts_the_published_parameters_and_both_c_proj() -> None:
    """Qwen v1 (remote code, not in transformers): 7,721,324,544 parameters for Qwen-7B, as calflops counted the loaded
    model (github.com/MrYxJ/calculate-flops.pytorch README). Its config.json's intermediate_size (22016) is w1 + w2."""
    from ftkit.estimate.from_recipe import architecture_from_config

    cfg = {"model_type": "qwen", "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32,
           "num_attention_heads": 32, "kv_channels": 128, "vocab_size": 151936}  # fmt: skip
    arch = architecture_from_config(cfg, "qwen-7b", "config.json")
    assert (arch.family, arch.intermediate_size, arch.attention_bias) == ("qwen", 11008, True)
    assert param_count(arch) == 7_721_324_544
    assert sorted(resolve_lora_targets(arch, ["c_attn", "c_proj", "w1", "w2"])) == sorted(linear_shapes(arch))
    assert resolve_lora_targets(arch, "all-linear") == ["c_attn", "attn.c_proj", "w1", "w2", "mlp.c_proj"]
    assert lora_param_count(arch, 8, ["c_proj"]) == 32 * 8 * ((4096 + 4096) + (11008 + 4096))


def test_lora_rejects_unknown_targets_and_bad_rank() -> None:
    arch = ARCHITECTURES["llama-3.2-1b"]
    with pytest.raises(ValueError, match="unknown LoRA target 'qkv_proj'"):
        lora_param_count(arch, 8, ["qkv_proj"])
    with pytest.raises(ValueError, match="rank must be positive"):
        lora_param_count(arch, 0)


# ---- GPUs -----------------------------------------------------------------------------------------------------------

PROVIDERS = {"runpod", "runpod-secure", "runpod-community", "runpod-serverless", "aws", "lambda"}


@pytest.mark.parametrize("key", sorted(GPUS))
def test_gpu_entries_are_sourced_and_plausible(key: str) -> None:
    gpu = GPUS[key]
    assert gpu.source.startswith("https://")
    assert key in GPU_NOTES
    # the marketed "GB" are binary GiB of DRAM; the driver reports a little less (reserved, ECC)
    assert 0.85 * gpu.marketed_gb < gpu.memory_gib < gpu.marketed_gb
    assert gpu.bf16_tflops >= 0 and gpu.mem_bandwidth_gbs > 0
    for price in gpu.prices:
        assert price.provider in PROVIDERS
        assert 0 < price.on_demand_per_h < 20
        assert price.spot_per_h is None
        assert dt.date(2026, 1, 1) <= price.read <= dt.date(2026, 11, 25)
        assert price.source.startswith("https://")
    providers = [p.provider for p in gpu.prices]
    assert len(providers) == len(set(providers))


def test_gpus_without_bf16_are_the_pre_ampere_ones() -> None:
    assert {k for k, g in GPUS.items() if g.bf16_tflops == 0} == {"t4", "v100-16gb", "v100-32gb"}


@pytest.mark.parametrize(
    ("name", "key"),
    [  # the strings torch.cuda.get_device_name() returns, as seen in public logs and issues
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
        ("NVIDIA A100 80GB PCIe", "a100-80gb-pcie"),
        ("NVIDIA A100-PCIE-40GB", "a100-40gb"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA A10G", "a10g"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("NVIDIA GeForce RTX 3090", "rtx-3090"),
        ("NVIDIA RTX A6000", "rtx-a6000"),
        ("Tesla T4", "t4"),
        ("Tesla V100-SXM2-16GB", "v100-16gb"),
        ("Tesla V100-PCIE-32GB", "v100-32gb"),
        # loose names
        ("H100", "h100-sxm"),
        ("h100-80gb", "h100-sxm"),
        ("h100 pcie", "h100-pcie"),
        ("A100", "a100-80gb"),
        ("a100 40gb", "a100-40gb"),
        ("4090", "rtx-4090"),
        ("rtx-a6000", "rtx-a6000"),
    ],
)
def test_lookup_gpu_normalises_torch_and_loose_names(name: str, key: str) -> None:
    assert gpu_key(name) == key
    assert lookup_gpu(name) is GPUS[key]


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA H100 NVL",
        "NVIDIA GH200 480GB",
        "NVIDIA A10",
        "NVIDIA L40",
        "NVIDIA RTX 6000 Ada Generation",
        "Quadro RTX 6000",
        "NVIDIA GeForce RTX 4090 D",
        "NVIDIA GeForce RTX 3090 Ti",
        "AMD Instinct MI300X",
        "",
    ],
)
def test_lookup_gpu_refuses_different_products(name: str) -> None:
    assert lookup_gpu(name) is None
