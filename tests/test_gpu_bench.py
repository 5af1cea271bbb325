"""benchmarks/gpu_recipe_bench.py reads the recipes it measures: a recipe change that breaks the GPU benchmark
fails here, on the CPU, before a lent GPU's minutes are spent on it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_recipe_bench as bench


def test_the_dry_run_plans_every_case_from_the_recipe_yamls_on_the_real_architectures(tmp_path: Path):
    out = tmp_path / "plan.json"
    assert bench.main(["--dry-run", "--out", str(out), "--cases", *bench.ALL_CASES]) == 0
    plan = json.loads(out.read_text())
    assert {c["name"] for c in plan["cases_planned"]} == set(bench.ALL_CASES)
    assert {a: m["parameters"] for a, m in plan["models"].items()} == bench.EXPECTED_PARAMS
    by_name = {c["name"]: c for c in plan["cases_planned"]}
    assert by_name["sft-recipe"]["seq_len"] == plan["recipe_yaml_values"]["sft"]["sequence_len"]
    assert (
        by_name["full-recipe-accum"]["grad_accum"] == plan["recipe_yaml_values"]["full"]["gradient_accumulation_steps"]
    )
    assert by_name["dora-recipe"]["method"] == "dora" and by_name["dora-recipe"]["arch"] == "qwen2.5-7b"
    assert by_name["kto-recipe"]["trainer_extra"] == {"desirable_weight": 1.0, "undesirable_weight": 1.0}


@pytest.mark.slow
def test_a_tiny_cpu_run_measures_steps_and_a_memory_sweep(tmp_path: Path):
    out = tmp_path / "tiny.json"
    argv = ["--tiny", "--model-dir", str(tmp_path / "models"), "--out", str(out), "--steps", "2", "--warmup", "0",
            "--cases", "lora-recipe", "--sweep", "64x1"]  # fmt: skip
    assert bench.main(argv) == 0
    [case] = json.loads(out.read_text())["results"]
    assert case["timed_steps"] == 2 and case["tokens_per_second"] > 0
    assert case["quantization"] == "none: bf16 base" and case["param_dtypes"]["embed_tokens"] == "bfloat16"
    assert [(p["seq_len"], p["micro_batch"]) for p in case["memory_sweep"]] == [(64, 1)]
    assert case["peak_allocated_gib"] is None, "a CPU run reports no GPU peak"


def test_the_chunked_loss_case_computes_transformers_loss_and_gradient():
    import torch
    from transformers.loss.loss_utils import ForCausalLMLoss

    torch.manual_seed(0)
    logits = torch.randn(2, 40, 96, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, 96, (2, 40))
    labels[0, :5] = -100  # a masked prompt
    chunked = bench.chunked_causal_lm_loss(bench.LOSS_CHUNKS)
    with torch._dynamo.config.patch(disable=True):  # the same function eagerly: no inductor compile in the suite
        ours = chunked(logits, labels, vocab_size=96)
        (grad_ours,) = torch.autograd.grad(ours, logits)
    ref = ForCausalLMLoss(logits, labels, vocab_size=96)
    (grad_ref,) = torch.autograd.grad(ref, logits)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(grad_ours.float(), grad_ref.float(), atol=1e-3)


@pytest.mark.slow
def test_a_tiny_cpu_grpo_run_samples_full_length_completions_through_trls_trainer(tmp_path: Path):
    pytest.importorskip("trl")
    out = tmp_path / "grpo.json"
    argv = ["--tiny", "--model-dir", str(tmp_path / "models"), "--out", str(out), "--steps", "2", "--warmup", "0",
            "--cases", "grpo-recipe"]  # fmt: skip
    assert bench.main(argv) == 0
    [case] = json.loads(out.read_text())["results"]
    assert "error" not in case and case["implementation"].startswith("trl.GRPOTrainer")
    assert case["timed_steps"] == 2 and case["trainable_params"] > 0
    s = case["settings"]
    assert s["kind"] == "grpo" and s["grad_accum"] > 1 and s["trainer_extra"]["beta"] > 0
    assert case["tokens_per_step_note"].startswith("micro-batch x accumulation")
