"""`Setting`: grouped fields, built from and given back in the flat form the CLI, engines and --json use."""

from __future__ import annotations

import pytest
from ftkit.estimate.inputs import FLAT, Setting

# `ftkit estimate --json`'s "setting" keys, in order: unchanged by the grouping.
JSON_KEYS = [
    "method", "stage", "seq_len", "micro_batch", "grad_accum", "gradient_checkpointing", "attention", "optimizer",
    "lora_rank", "lora_targets", "lora_dropout", "adapter_dtype", "autocast", "double_quant", "quantize_lm_head",
    "legacy_bitsandbytes", "sample_packing", "loss", "gpus", "parallelism", "cpu_offload", "load_whole_model",
    "embedding_upcast", "fp32_embeddings", "master_weights", "adamw_kernel", "sub_group_size", "num_generations",
    "max_prompt_len", "max_completion_len", "generation", "generation_batch_size",
]  # fmt: skip


def test_flat_names_land_in_their_groups():
    s = Setting(seq_len=4096, parallelism="fsdp", gpus=8, lora_rank=32, optimizer="adamw_8bit", loss="chunked")
    assert (s.batch.seq_len, s.parallel.strategy, s.parallel.gpus) == (4096, "fsdp", 8)
    assert (s.lora.rank, s.optim.name, s.compute.loss) == (32, "adamw_8bit", "chunked")


def test_the_flat_form_round_trips_and_keeps_the_json_keys_in_order():
    s = Setting(method="dora", stage="grpo", seq_len=1024, max_completion_len=512, generation="vllm")
    assert list(s.flat()) == JSON_KEYS == list(FLAT)
    assert Setting(**s.flat()) == s
    assert s.flat(mode="json")["lora_targets"] == list(s.lora.targets)


def test_groups_and_flat_names_mix_with_the_flat_names_winning():
    s = Setting(batch={"seq_len": 512, "micro_batch": 4}, seq_len=1024)
    assert (s.batch.seq_len, s.batch.micro_batch) == (1024, 4)


def test_with_changes_takes_flat_names_and_validates_again():
    s = Setting(gpus=4, parallelism="zero3")
    assert s.with_changes(parallelism="fsdp").parallel.strategy == "fsdp"
    with pytest.raises(ValueError, match="needs more than one GPU"):
        s.with_changes(gpus=1)


def test_unknown_names_and_bad_values_are_refused():
    with pytest.raises(ValueError, match="seq_lenn"):
        Setting(seq_lenn=1)
    with pytest.raises(ValueError, match="micro_batch"):
        Setting(micro_batch=0)


def test_model_copy_refuses_flat_names_it_would_set_without_validating():
    with pytest.raises(TypeError, match="with_changes"):
        Setting().model_copy(update={"seq_len": 1})
    assert Setting().model_copy(update={"method": "full"}).method == "full"
