"""`ftkit plan` and nodes: one machine is preferred; with --max-nodes it proposes the fewest nodes on which a recipe
fits (memory) or finishes within --hours, says why, and gives the multi-node commands."""

from __future__ import annotations

import json

import pytest
from ftkit.cli import main
from ftkit.estimate.architectures import lookup
from ftkit.estimate.gpus import lookup_gpu
from ftkit.estimate.inputs import Setting
from ftkit.plan.recommend import Candidate, CandidateStage, recommend

LLAMA8, LLAMA70 = lookup("llama-3.1-8b"), lookup("llama-3.1-70b")
H100 = lookup_gpu("H100")


def _full(name: str, arch, gpus: int = 8) -> Candidate:  # type: ignore[no-untyped-def]
    s = Setting(method="full", stage="sft", seq_len=4096, micro_batch=1, optimizer="adamw", gpus=gpus,
                parallelism="fsdp")  # fmt: skip
    return Candidate(name, "axolotl", arch.hf_id, "sft", "full", [CandidateStage("sft", arch, s)])


FULL8, FULL70 = _full("full-8b", LLAMA8), _full("full-70b", LLAMA70, 16)
DOMAIN = {"goal": "domain", "data": "conversations", "rows": 200_000, "vram_gb": 80, "gpus": 8}


def test_one_node_is_kept_when_a_recipe_fits_and_no_time_budget_is_given():
    plan = recommend([FULL8], **DOMAIN, max_nodes=8)
    assert plan.recipe == "full-8b" and plan.nodes == 1 and not any(w["decision"] == "nodes" for w in plan.why)


def test_nodes_are_proposed_when_one_node_cannot_hold_the_recipe():
    alone = recommend([FULL70], **{**DOMAIN, "vram_gb": 40})
    assert alone.recipe is None and any("--max-nodes" in w for w in alone.warnings)
    plan = recommend([FULL70], **{**DOMAIN, "vram_gb": 40}, max_nodes=8, gpu=H100)
    assert plan.recipe == "full-70b" and plan.nodes > 1
    [why] = [w for w in plan.why if w["decision"] == "nodes"]
    assert why["choice"] == str(plan.nodes) and "cannot hold" in why["reason"]
    fewer = recommend([FULL70], **{**DOMAIN, "vram_gb": 40}, max_nodes=plan.nodes - 1)
    assert fewer.recipe is None, "the fewest nodes that fit: one fewer does not"
    assert plan.time_cost["nodes"] == plan.nodes and plan.time_cost["gpus"] == 8 * plan.nodes
    assert any(f"--nodes {plan.nodes}" in c for c in plan.commands)
    assert any(c.startswith("ftkit cloud skypilot") for c in plan.commands)


def test_nodes_are_proposed_when_one_node_cannot_finish_in_the_time_budget():
    one = recommend([FULL8], **DOMAIN, gpu=H100)
    budget = one.time_cost["hours"] * 0.6  # one node is too slow; two (at 90 % efficiency) are fast enough
    plan = recommend([FULL8], **DOMAIN, gpu=H100, hours=budget, max_nodes=4)
    assert plan.nodes == 2 and plan.time_cost["hours"] <= budget < one.time_cost["hours"]
    assert any("cannot finish within" in w["reason"] for w in plan.why if w["decision"] == "nodes")
    assert plan.settings["global_batch"] == one.settings["global_batch"], "accumulation keeps the global batch"
    assert plan.settings["grad_accum"] == one.settings["grad_accum"] // 2
    stuck = recommend([FULL8], **DOMAIN, gpu=H100, hours=budget)
    assert stuck.recipe is None and "takes" in stuck.alternatives[0]["why_not"]


def test_a_one_node_candidate_beats_a_larger_one_that_needs_nodes():
    plan = recommend([FULL70, FULL8], **{**DOMAIN, "vram_gb": 40}, max_nodes=8)  # the 70B ranks first at 200k rows
    assert plan.recipe == "full-8b" and plan.nodes == 1
    assert any(a["option"].startswith("full-70b") and "nodes" in a["why_not"] for a in plan.alternatives)


def test_cli_takes_max_nodes_and_hours_and_refuses_nonsense(capsys: pytest.CaptureFixture[str]):
    assert main(["plan", "--vram", "80", "--gpus", "8", "--rows", "200000", "--goal", "domain", "--gpu", "H100",
                 "--max-nodes", "4", "--hours", "0.5", "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["nodes"] > 1 and out["hours_budget"] == 0.5 and out["time_cost"]["hours"] <= 0.5
    assert main(["plan", "--vram", "80", "--rows", "100", "--goal", "chat", "--max-nodes", "0"]) == 2
