"""TRL with several processes: `ftkit.engines.trl_train` under torchrun (the launch a multi-node run uses on every
node) trains one stage on two gloo ranks, and rank 0 alone writes the history."""

from __future__ import annotations

import json

import pytest
from conftest import edit_yaml
from ftkit.cli import main

pytestmark = pytest.mark.slow


def test_two_trl_processes_train_a_stage_under_torchrun_and_rank_zero_writes_each_step_once(tiny_recipe, tmp_path):  # type: ignore[no-untyped-def]
    name = "tiny-trl-sft-dpo"
    rdir = tiny_recipe(name)
    edit_yaml(rdir / "recipe.yaml", lambda d: d.update(stages=d["stages"][:1], export={"merge": False}))
    edit_yaml(rdir / "expected-metrics.yaml", lambda d: d.update(profiles={"smoke": {"sft": {}}}))
    code = main(["recipe", "run", name, "--processes", "2", "--runs-dir", str(tmp_path),
                 "--set", "sft.trainer.max_steps=4", "--set", "sft.dataset.val_fraction=0"])  # fmt: skip
    [run_dir] = (tmp_path / name).iterdir()
    log = (run_dir / "sft" / "train.log").read_text()
    assert code == 0, log[-3000:]
    rows = [json.loads(line) for line in (run_dir / "sft" / "history.jsonl").read_text().splitlines()]
    assert [int(r["step"]) for r in rows if "loss" in r] == [1, 2, 3, 4], "each step once: rank 0 alone writes"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stages"]["sft"]["steps"] == 4
