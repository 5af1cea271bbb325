"""The GPU bench (benchmarks/gpu_bench) reads the recipes it measures through ftkit: a recipe change that breaks the
GPU benchmark fails here, on the CPU, before a lent GPU's minutes are spent on it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from gpu_bench import bench, cli, models, recipes, records

ROOT = Path(__file__).resolve().parents[1]


def test_the_dry_run_plans_every_case_from_the_recipe_yamls_on_the_real_architectures(tmp_path: Path):
    out = tmp_path / "plan.json"
    assert cli.main(["--dry-run", "--out", str(out), "--cases", *bench.ALL_CASES]) == 0
    plan = json.loads(out.read_text())
    assert {c["name"] for c in plan["cases_planned"]} == set(bench.ALL_CASES)
    assert {a: m["parameters"] for a, m in plan["models"].items()} == {
        "llama-3.1-8b": 8_030_261_248, "qwen2.5-7b": 7_615_616_512, "qwen2.5-1.5b": 1_543_714_304
    }  # fmt: skip
    assert plan["recipes_read_with"] == ["ftkit.recipes.load_recipe + resolve_stage (profile full)"]
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
    assert cli.main(argv) == 0
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
    assert cli.main(argv) == 0
    [case] = json.loads(out.read_text())["results"]
    assert "error" not in case and case["implementation"].startswith("trl.GRPOTrainer")
    assert case["timed_steps"] == 2 and case["trainable_params"] > 0
    s = case["settings"]
    assert s["kind"] == "grpo" and s["grad_accum"] > 1 and s["trainer_extra"]["beta"] > 0
    assert case["tokens_per_step_note"].startswith("micro-batch x accumulation")


def test_the_bench_reads_recipes_and_architectures_through_ftkit_not_a_second_stack():
    from ftkit.recipes.load import load_recipe
    from ftkit.recipes.resolve import resolve_stage

    cfg, how = recipes.stage_config(ROOT / "recipes/llama8b-qlora-dpo/dpo.axolotl.yaml")
    assert cfg == resolve_stage(load_recipe("llama8b-qlora-dpo", check_profiles=False), "dpo", "full").config
    assert how.startswith("ftkit.recipes")
    for arch in models.ARCHITECTURES:
        assert models.catalog_mismatches(arch, models.ARCHITECTURES[arch]) == {}, arch
    wrong = {**models.LLAMA31_8B_INSTRUCT, "intermediate_size": 14000}
    assert models.catalog_mismatches("llama-3.1-8b", wrong) == {"intermediate_size": [14000, 14336]}
    for path in (ROOT / "benchmarks" / "gpu_bench").glob("*.py"):  # no recipe YAML read by hand
        assert "yaml.safe_load" not in path.read_text(encoding="utf-8"), path.name


def test_a_stage_of_another_method_than_the_case_measures_is_refused_with_ftkits_reading():
    lora = ROOT / "recipes/llama8b-lora-sft/sft.axolotl.yaml"
    with pytest.raises(SystemExit, match=r"this case measures a QLoRA recipe.*ftkit reads it as lora"):
        recipes.read_stage(lora, ("sequence_len",), "qlora")
    data, _ = recipes.read_stage(lora, ("sequence_len",), "lora")
    assert data["adapter"] == "lora"


def test_the_record_is_written_whole_and_the_ratios_are_recipe_over_baseline(tmp_path: Path):
    out = tmp_path / "sub" / "bench.json"
    records.write(out, {"results": [], "path": Path("x")})
    assert json.loads(out.read_text()) == {"results": [], "path": "x"} and not list(out.parent.glob("*.tmp"))
    rec = {"name": "sft-recipe", "tokens_per_second": 300.0, "step_seconds_mean": 1.0, "peak_allocated_gib": 10.0}
    base = {"name": "sft-baseline", "tokens_per_second": 100.0, "step_seconds_mean": 3.0, "peak_allocated_gib": 20.0}
    assert records.ratios([rec, base]) == {"sft": {
        "tokens_per_second_recipe_over_baseline": 3.0, "step_time_baseline_over_recipe": 3.0,
        "peak_allocated_recipe_over_baseline": 0.5}}  # fmt: skip


def test_the_old_command_line_and_the_package_give_the_same_help():
    import subprocess

    old = subprocess.run([sys.executable, "benchmarks/gpu_recipe_bench.py", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True)  # fmt: skip
    new = subprocess.run([sys.executable, "benchmarks/gpu_bench", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True)  # fmt: skip
    # The same options and description; only the program name in the usage differs.
    assert "--dry-run" in old.stdout and old.stdout.split("\n\n", 1)[1] == new.stdout.split("\n\n", 1)[1]


def test_each_recipe_case_measures_the_setting_ftkit_estimates_for_that_stage(tmp_path: Path):
    from ftkit.engines import get_engine
    from ftkit.estimate.from_engine import setting_from_facts

    out = tmp_path / "plan.json"
    assert cli.main(["--dry-run", "--out", str(out), "--cases", *bench.ALL_CASES]) == 0
    for case in json.loads(out.read_text())["cases_planned"]:
        if not case["name"].endswith("-recipe"):
            continue
        cfg, _ = recipes.stage_config(ROOT / case["source"])
        s = setting_from_facts(get_engine("axolotl").engine_facts(cfg), gpus=8)
        assert (case["method"], case["seq_len"], case["micro_batch"]) == (
            s.method, s.batch.seq_len, s.batch.micro_batch), case["name"]  # fmt: skip
        assert case["method"] == "full" or case["lora_r"] == s.lora.rank, case["name"]
