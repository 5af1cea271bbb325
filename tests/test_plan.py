"""`ftkit plan`: the rules (pure), the recommender over candidates (estimator, no recipes), and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ftkit.cli import main
from ftkit.estimate.architectures import lookup
from ftkit.estimate.inputs import Setting
from ftkit.plan.recommend import Candidate, CandidateStage, fit_on, inspect_dataset, recommend, run_sets
from ftkit.plan.rules import hyperparameters, methods, objectives

LLAMA8 = lookup("llama-3.1-8b")
LLAMA70 = lookup("llama-3.1-70b")


def _cand(name: str, objective: str, method: str, arch=LLAMA8, engine: str = "axolotl", **setting) -> Candidate:  # type: ignore[no-untyped-def]
    stages = {"sft": ["sft"], "sft+dpo": ["sft", "dpo"]}.get(objective, [objective])
    s = {"method": method, "seq_len": 2048, "micro_batch": 1, "optimizer": "paged_adamw_8bit", **setting}
    return Candidate(name, engine, arch.hf_id, objective, method,
                     [CandidateStage(st, arch, Setting(**{**s, "stage": st})) for st in stages])  # fmt: skip


CATALOG = [
    _cand("qlora-sft", "sft", "qlora"),
    _cand("lora-sft", "sft", "lora"),
    _cand("full-fsdp", "sft", "full", gpus=8, parallelism="fsdp", optimizer="adamw"),
    _cand("qlora-dpo", "sft+dpo", "qlora"),
    _cand("qlora-kto", "kto", "qlora"),
    _cand("qlora-orpo", "orpo", "qlora"),
    _cand("qlora-70b", "sft", "qlora", arch=LLAMA70, gpus=2, parallelism="fsdp"),
]


# ------------------------------------------------------------------ rules


def test_the_goal_and_the_data_kind_pick_the_objective():
    assert [c.value for c in objectives("chat", "conversations")] == ["sft"]
    assert [c.value for c in objectives("preference", "pairs")] == ["sft+dpo", "orpo", "reward"]
    assert [c.value for c in objectives("safety", "unpaired")] == ["kto"]
    assert [c.value for c in objectives("preference", "verifiable")] == ["grpo"]
    assert objectives("preference", "conversations") == []  # no preference signal in plain conversations


def test_full_fine_tuning_is_offered_only_for_large_domain_data():
    assert next(m.value for m in methods("domain", 100_000, "sft")) == "full"
    assert "full" not in [m.value for m in methods("domain", 5_000, "sft")]
    assert "full" not in [m.value for m in methods("chat", 100_000, "sft")]
    assert [m.value for m in methods("chat", 5_000, "sft")] == ["lora", "dora", "qlora"]


def test_epochs_and_rank_follow_the_data_size_and_few_rows_warn():
    small, big = hyperparameters("chat", 500, "sft", "lora"), hyperparameters("chat", 200_000, "sft", "lora")
    assert (small.epochs, small.lora_rank) == (3.0, 16) and (big.epochs, big.lora_rank) == (1.0, 64)
    assert hyperparameters("format", 200_000, "sft", "lora").lora_rank == 8
    assert hyperparameters("chat", 5_000, "sft", "full").learning_rate == 2e-5
    assert any("very few" in w for w in hyperparameters("chat", 50, "sft", "qlora").warnings)
    dpo = hyperparameters("preference", 300, "sft+dpo", "qlora")
    assert dpo.beta == 0.1 and dpo.learning_rate == 5e-6 and any("preference rows" in w for w in dpo.warnings)


# ------------------------------------------------------------------ recommender (estimator, candidates as data)


def test_a_16gb_gpu_gets_qlora_because_bf16_lora_of_an_8b_does_not_fit():
    plan = recommend(CATALOG, goal="chat", data="conversations", rows=5_000, vram_gb=16)
    assert plan.recipe == "qlora-sft" and plan.method == "qlora" and plan.fit and plan.fit["fits"]
    assert any(a["option"].startswith("lora-sft") and "GiB per GPU" in a["why_not"] for a in plan.alternatives)


def test_an_80gb_gpu_gets_bf16_lora():
    plan = recommend(CATALOG, goal="chat", data="conversations", rows=5_000, vram_gb=80)
    assert plan.recipe == "lora-sft" and plan.fit is not None and plan.fit["need_gib"] < 80


def test_large_domain_data_on_eight_gpus_gets_the_sharded_full_fine_tune():
    plan = recommend(CATALOG, goal="domain", data="conversations", rows=200_000, vram_gb=80, gpus=8)
    assert plan.recipe == "full-fsdp" and plan.fit is not None and plan.fit["parallelism"] == "fsdp"
    one_gpu = recommend(CATALOG, goal="domain", data="conversations", rows=200_000, vram_gb=48, gpus=1)
    assert one_gpu.recipe == "lora-sft"  # unsharded on one 48 GB GPU, a full 8B fine-tune (~67 GiB) does not fit


def test_a_70b_is_recommended_only_with_the_data_to_pay_for_it():
    few = recommend([c for c in CATALOG if c.method == "qlora"], goal="chat", data="conversations", rows=5_000,
                    vram_gb=80, gpus=2)  # fmt: skip
    many = recommend([c for c in CATALOG if c.method == "qlora"], goal="chat", data="conversations", rows=100_000,
                     vram_gb=80, gpus=2)  # fmt: skip
    assert few.recipe == "qlora-sft" and many.recipe == "qlora-70b"


def test_unpaired_labels_get_kto_and_pairs_get_sft_then_dpo():
    assert recommend(CATALOG, goal="safety", data="unpaired", rows=3_000, vram_gb=24).recipe == "qlora-kto"
    plan = recommend(CATALOG, goal="preference", data="pairs", rows=3_000, vram_gb=24)
    assert plan.recipe == "qlora-dpo" and all(s.startswith("dpo.") for s in plan.sets)
    assert "dpo.rl_beta=0.1" in plan.sets


def test_nothing_fits_a_tiny_gpu_and_the_plan_says_so():
    plan = recommend(CATALOG, goal="chat", data="conversations", rows=5_000, vram_gb=4)
    assert plan.recipe is None and any("nothing in the catalog fits" in w for w in plan.warnings)


def test_the_global_batch_is_kept_when_the_gpu_count_changes():
    hyper = hyperparameters("chat", 5_000, "sft", "qlora")
    one, _ = run_sets(CATALOG[0], hyper, gpus=1)
    four, sets = run_sets(CATALOG[0], hyper, gpus=4)
    assert one["global_batch"] == four["global_batch"] == 16 and four["grad_accum"] == 4
    assert "gradient_accumulation_steps=4" in sets and "lora_r=16" in sets


def test_trl_recipes_get_trl_config_keys():
    trl = _cand("trl-sft", "sft", "qlora", engine="trl")
    _, sets = run_sets(trl, hyperparameters("chat", 5_000, "sft", "qlora"), gpus=1)
    assert "trainer.num_train_epochs=2" in sets and "lora.r=16" in sets


def test_a_sharded_recipe_needs_less_memory_per_gpu_with_more_gpus():
    full = CATALOG[2]
    assert fit_on(full, 80, 8).need_gib < fit_on(full, 80, 2).need_gib


def test_an_axolotl_sft_candidate_may_fit_by_chunking_its_loss_and_a_trl_one_may_not():
    axolotl = _cand("qlora-sft-4k", "sft", "qlora", seq_len=4096, gradient_checkpointing=True)
    trl = _cand("qlora-sft-4k", "sft", "qlora", engine="trl", seq_len=4096, gradient_checkpointing=True)
    assert not fit_on(axolotl, 16, 1).changes, "fits a 16 GB GPU as written"
    tight = fit_on(axolotl, 13, 1)
    assert tight.fits and any("chunked_cross_entropy" in c for c in tight.changes)
    assert not any("chunked_cross_entropy" in c for c in fit_on(trl, 13, 1).changes)


def test_time_and_cost_use_the_counted_tokens_per_sequence_and_a_short_run_is_not_zero():
    from ftkit.estimate.gpus import lookup_gpu
    from ftkit.estimate.tokens import SequenceTokens

    counted = SequenceTokens({"sft": 50.0, "dpo": 80.0}, "counted", {"method": "counted"})
    plan = recommend(CATALOG, goal="preference", data="pairs", rows=300, vram_gb=24, gpu=lookup_gpu("L4"),
                     count=lambda c: counted)  # fmt: skip
    assert plan.recipe == "qlora-dpo" and plan.time_cost
    tc, epochs = plan.time_cost, plan.settings["epochs"]
    assert tc["tokens"] == pytest.approx(300 * epochs * (50 + 2 * 80))  # a DPO pair is two sequences
    assert tc["tokens_per_sequence"] == {"sft": 50.0, "dpo": 80.0} and tc["tokens_source"] == "counted"
    assert 0 < tc["hours"] < 1 and tc["cost_usd"] and all(0 < v < 1 for v in tc["cost_usd"].values())  # minutes, cents


# ------------------------------------------------------------------ dataset facts and the CLI


def test_a_dataset_file_gives_rows_format_and_length(tmp_path: Path):
    path = tmp_path / "pairs.jsonl"
    row = {"prompt": "hi", "chosen": [{"role": "assistant", "content": "hello"}], "rejected": "go away"}
    path.write_text("\n".join(json.dumps(row) for _ in range(7)) + "\n")
    facts = inspect_dataset(path)
    assert (facts.rows, facts.kind, facts.formats) == (7, "pairs", {"preference": 7}) and facts.avg_tokens > 5


@pytest.mark.slow
def test_cli_recommends_a_catalog_recipe_that_fits(capsys):  # type: ignore[no-untyped-def]
    assert main(["plan", "--vram", "24", "--rows", "5000", "--goal", "chat", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (Path("recipes") / plan["recipe"] / "recipe.yaml").is_file() and plan["fit"]["fits"]
    assert plan["fit"]["need_gib"] <= 24 and plan["commands"][0].startswith(
        f"ftkit recipe new my-chat --from {plan['recipe']}"
    )


def test_cli_refuses_a_goal_the_data_cannot_serve(capsys):  # type: ignore[no-untyped-def]
    assert main(["plan", "--vram", "24", "--rows", "5000", "--goal", "preference", "--data", "conversations"]) == 2
    assert "needs preference data" in capsys.readouterr().out


def test_cli_needs_a_row_count_or_a_dataset(capsys):  # type: ignore[no-untyped-def]
    assert main(["plan", "--vram", "24", "--goal", "chat"]) == 2
    assert "--rows" in capsys.readouterr().err
