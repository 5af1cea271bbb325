"""`ftkit estimate` across nodes: the states shard over every GPU of every node (the memory model itself is
unchanged: N nodes of G GPUs are N × G GPUs to it), time divides over all of them at the stated inter-node
efficiency, and cost counts every GPU of every node."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT
from ftkit.cli import main
from ftkit.errors import FtkitError
from ftkit.estimate.from_recipe import resolve_architecture
from ftkit.estimate.gpus import lookup_gpu
from ftkit.estimate.inputs import Setting
from ftkit.estimate.memory import estimate_memory
from ftkit.estimate.summary import estimate_report
from ftkit.estimate.timecost import INTER_NODE_EFFICIENCY, gpu_options

RECIPE = str(ROOT / "recipes" / "llama70b-full-fsdp")
ROWS = {"rows": 10_000, "avg_tokens": 1_000, "gpu": "H100", "count_tokens": False}


def _h100(report: dict) -> dict:
    [stage] = report["stages"]
    [option] = stage["gpus"]
    return stage | {"option": option}


def test_two_nodes_of_8_shard_like_16_gpus_on_one_node():
    arch = resolve_architecture("llama-3.1-70b")
    s16 = Setting(method="full", gpus=16, parallelism="fsdp", seq_len=4096)
    two_nodes = _h100(estimate_report(model="llama-3.1-70b", overrides={"method": "full", "gpus": 8,
                      "parallelism": "fsdp", "seq_len": 4096}, nodes=2, tokens=1e8, gpu="H100"))  # fmt: skip
    assert two_nodes["memory"]["device_total_gib"] == pytest.approx(estimate_memory(arch, s16).device_total / 2**30,
                                                                    abs=0.01)  # fmt: skip
    assert (two_nodes["nodes"], two_nodes["gpus_per_node"], two_nodes["setting"]["gpus"]) == (2, 8, 16)


def test_time_divides_over_every_gpu_at_the_inter_node_efficiency_and_cost_counts_them_all():
    arch, gpu = resolve_architecture("llama-3.1-8b"), lookup_gpu("H100")
    s8 = Setting(method="full", gpus=8, parallelism="fsdp")
    s16 = s8.with_changes(gpus=16)
    [one] = gpu_options(arch, s8, 1e9, [gpu])
    [two] = gpu_options(arch, s16, 1e9, [gpu], nodes=2)
    [same_box] = gpu_options(arch, s16, 1e9, [gpu])
    assert two.hours == pytest.approx(one.hours / 2 / INTER_NODE_EFFICIENCY)
    assert same_box.hours == pytest.approx(one.hours / 2), "16 GPUs in one machine pay no inter-node cost"
    for provider, usd in one.costs.items():
        assert two.costs[provider] == pytest.approx(usd / INTER_NODE_EFFICIENCY), "twice the GPUs for half the time"


def test_the_70b_recipe_needs_its_two_nodes_and_says_so():
    both = _h100(estimate_report(recipe=RECIPE, **ROWS))
    one = _h100(estimate_report(recipe=RECIPE, nodes=1, **ROWS))
    assert both["nodes"] == 2 and both["setting"]["gpus"] == 16 and both["global_batch"] == 64
    assert both["option"]["fits"] and not one["option"]["fits"]
    assert one["global_batch"] == 32, "one node of 8 halves the global batch unless accumulation doubles"
    assert both["option"]["hours"] == pytest.approx(one["option"]["hours"] / 2 / INTER_NODE_EFFICIENCY, rel=1e-3)


def test_a_recipe_without_nodes_stays_on_one_node_and_gpus_is_per_node():
    report = estimate_report(recipe="llama8b-full-fsdp", **ROWS)
    assert report["nodes"] == 1 and report["stages"][0]["setting"]["gpus"] == 8
    four = estimate_report(recipe="llama8b-full-fsdp", nodes=4, overrides={"gpus": 2}, **ROWS)
    assert four["nodes"] == 4 and four["stages"][0]["setting"]["gpus"] == 8 and four["stages"][0]["gpus_per_node"] == 2
    assert not any("nodes:" in n for n in report["notes"])
    assert any("90%" in n and "estimate" in n for n in four["notes"])


def test_zero_nodes_is_refused_with_the_flag():
    with pytest.raises(FtkitError) as exc:
        estimate_report(recipe=RECIPE, nodes=0, **ROWS)
    assert exc.value.problems[0].field == "--nodes"


def test_cli_json_carries_nodes(capsys: pytest.CaptureFixture[str]):
    assert main(["estimate", "--recipe", RECIPE, "--rows", "1000", "--gpu", "H100", "--nodes", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nodes"] == 4 and out["stages"][0]["setting"]["gpus"] == 32
    assert main(["estimate", "--recipe", RECIPE, "--rows", "1000", "--gpu", "H100"]) == 0
    assert "2 nodes × 8 GPUs = 16 GPUs" in capsys.readouterr().out.replace("\n", " ")
