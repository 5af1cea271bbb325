"""The smoke-run record behind the catalog's "last passing smoke run" column, and CI's rotation over the catalog."""

from __future__ import annotations

from pathlib import Path

import pytest
from ftkit.errors import FtkitError
from ftkit.recipe_table import CatalogEntry, DatasetSize, render_table
from ftkit.recipes.smoke_runs import (
    disagreements,
    gated_metrics,
    load_smoke_runs,
    rotation,
    smoke_run_from,
    write_smoke_runs,
)

METRICS = {
    "started": "2026-12-07T07:15:04+00:00",
    "git_commit": "76e4afa0000000000000000000000000000000000",
    "hardware_label": "CPU only: AMD EPYC (2 cores, 23.5 GiB)",
    "checks": [
        {"stage": "reward", "metric": "eval_accuracy", "value": 1.0, "passed": True},
        {"stage": "reward", "metric": "train_loss_drop", "value": 0.6077952881654103, "passed": True},
        {"stage": "reward", "metric": "peak_memory_gib", "value": None, "passed": True},
    ],
}


def test_every_recipe_runs_once_in_any_run_of_consecutive_rotation_indexes():
    names = [f"r{i:02d}" for i in range(11)]
    slot, slots, chosen = rotation(names, 0, 3)
    assert slot == 0
    assert slots == 4 and len(chosen) <= 3
    for start in (0, 5, 311):
        seen = [n for i in range(start, start + slots) for n in rotation(names, i, 3)[2]]
        assert sorted(seen) == names  # each exactly once
    assert rotation(names, 7, 3)[0] == 3 and rotation(names, 7, 3) == rotation(names, 11, 3)


def test_repeats_that_differ_beyond_the_tolerance_are_named_with_their_values():
    same = [{"s.loss": 1.0, "s.acc": 0.5}, {"s.loss": 1.005, "s.acc": 0.5}]
    assert disagreements(same, rel=0.01, floor=1e-3) == []
    apart = [{"s.loss": 0.569, "s.acc": 0.5}, {"s.loss": 0.667, "s.acc": 0.5}]
    assert disagreements(apart, rel=0.01, floor=1e-3) == ["s.loss: 0.569, 0.667"]
    assert disagreements([{"s.loss": 1.0}, {}], rel=0.01, floor=1e-3) == ["s.loss: missing in a run"]


def test_a_passing_run_is_recorded_with_its_date_commit_and_gated_values_and_reads_back(tmp_path: Path):
    assert gated_metrics(METRICS) == {"reward.eval_accuracy": 1.0, "reward.train_loss_drop": 0.6077952881654103}
    run = smoke_run_from(METRICS, wall_s=87.96, repeats=2, threads="default")
    write_smoke_runs(tmp_path, {"llama8b-reward-model": run})
    back = load_smoke_runs(tmp_path)["llama8b-reward-model"]
    assert (back.date, back.commit[:7], back.wall_s, back.repeats) == ("2026-12-07", "76e4afa", 88.0, 2)
    assert back.metrics["reward.train_loss_drop"] == 0.607795
    assert (tmp_path / "smoke-runs.yaml").read_text().startswith("# Each recipe's last smoke run")


def test_a_hand_edited_record_with_an_unknown_field_is_refused_with_the_fix(tmp_path: Path):
    (tmp_path / "smoke-runs.yaml").write_text("r:\n  date: 2026-12-07\n  passed: yes\n")
    with pytest.raises(FtkitError) as err:
        load_smoke_runs(tmp_path)
    assert "smoke-runs.yaml" in str(err.value) and "--record" in str(err.value)


def test_the_catalog_shows_each_recipes_last_passing_smoke_run_or_not_recorded():
    entry = CatalogEntry("a", "axolotl", "m", [], 1, 24, {}, {"date": "2026-12-07", "commit": "76e4afa0123"})
    table = render_table([entry, CatalogEntry("b", "axolotl", "m", [], 1, 24, {})], DatasetSize())
    assert "last passing smoke run" in table.splitlines()[0]
    assert table.splitlines()[2].endswith("| 2026-12-07 `76e4afa` |")
    assert table.splitlines()[3].endswith("| not recorded |")
