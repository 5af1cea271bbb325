"""The recipe catalog in recipes/README.md is generated, and a stale one is caught."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, copy_recipe, edit_yaml
from ftkit.cli import main
from ftkit.errors import FtkitError
from ftkit.fork.create import fork_recipe
from ftkit.recipe_table import (
    BEGIN,
    END,
    CatalogEntry,
    DatasetSize,
    StageFigures,
    catalog_entries,
    render_block,
    render_table,
    splice,
)

STALE_README = f"# Recipes\n\nintro\n\n{BEGIN}\n| old | table |\n{END}\n\nafter\n"


def test_the_committed_catalog_is_fresh(monkeypatch: pytest.MonkeyPatch):
    """Fails when a recipe, the estimator or its price catalog changed: run `ftkit recipe catalog --write`."""
    monkeypatch.setenv("FTKIT_RECIPES", str(ROOT / "recipes"))
    assert main(["recipe", "catalog", "--check"]) == 0


def test_a_stale_table_is_detected_and_write_fixes_it(recipes_root: Path):
    src = copy_recipe("llama8b-qlora-sft", recipes_root)
    readme = recipes_root / "README.md"
    readme.write_text(STALE_README)
    assert main(["recipe", "catalog", "--check"]) == 1
    assert readme.read_text() == STALE_README, "--check never writes"
    assert main(["recipe", "catalog", "--write"]) == 0
    text = readme.read_text()
    assert text.startswith("# Recipes\n\nintro\n\n") and text.endswith(f"{END}\n\nafter\n")
    assert "[`llama8b-qlora-sft`](llama8b-qlora-sft/README.md)" in text and "| old | table |" not in text
    assert main(["recipe", "catalog", "--check"]) == 0
    # a recipe change that moves the estimate makes the table stale again (the epochs move time and cost; the
    # VRAM cell shows the recipe's measured peak, which a YAML edit does not change)
    edit_yaml(src / "sft.axolotl.yaml", lambda d: d.update(num_epochs=2))
    assert main(["recipe", "catalog", "--check"]) == 1


def test_the_row_holds_method_engine_model_stages_gpus_vram_time_cost_and_bound_sources(recipes_root: Path):
    copy_recipe("llama8b-qlora-dpo", recipes_root)
    [entry] = catalog_entries(recipes_root)
    assert [f.method for f in entry.stages] == ["QLoRA SFT r=32", "QLoRA DPO r=16"]
    assert entry.bounds == {"smoke": {"measured": 6, "estimate": 0}, "full": {"measured": 2, "estimate": 4}}
    for fig in entry.stages:
        assert fig.vram_gib and 10 < fig.vram_gib < 24  # fits the recipe's 24 GB card, by the estimator
        assert fig.vram_measured_gib and 10 < fig.vram_measured_gib < fig.vram_gib  # the H200 peak, allocated
        assert fig.hours and fig.cost_usd and fig.gpu and fig.provider and fig.prices_read
    [row] = render_table([entry], DatasetSize()).splitlines()[2:]
    assert "| Axolotl | `meta-llama/Llama-3.1-8B-Instruct` | sft → dpo | 1 × ≥24 GB |" in row
    assert "smoke: 6 measured; full: 2 measured, 4 estimated" in row
    assert "sft 12.6 GiB (measured)<br>dpo 12.6 GiB (measured)" in row


def test_a_model_outside_the_estimators_catalog_says_so(recipes_root: Path):
    copy_recipe("llama8b-qlora-sft", recipes_root)
    fork_recipe("other", "llama8b-qlora-sft", base_model="acme/unknown-7b")
    entries = {e.name: e for e in catalog_entries(recipes_root)}
    [fig] = entries["other"].stages
    assert fig.vram_gib is None and fig.hours is None and "unknown model 'acme/unknown-7b'" in (fig.why_not or "")
    assert "sft – (unknown model 'acme/unknown-7b'" in render_table([entries["other"]], DatasetSize())


def test_rendering_is_pure_and_says_what_was_measured():
    measured = StageFigures("sft", "LoRA SFT r=8", vram_gib=9.0, vram_measured_gib=7.25, hours=0.5, cost_usd=1.0,
                            gpu="L4 24GB", provider="aws", prices_read=["2026-11-01"])  # fmt: skip
    entry = CatalogEntry("r", "trl", "org/m", [measured], 2, 24, {"smoke": {"measured": 1, "estimate": 1}})
    block = render_block([entry], DatasetSize(500, 200))
    assert "sft 7.2 GiB (measured)" in block and "sft 30 min, $1.00 on L4 24GB (aws)" in block
    assert "500 rows × 200 tokens per stage" in block and "read 2026-11-01" in block
    assert "| TRL |" in block and "2 × ≥24 GB" in block and "smoke: 1 measured, 1 estimated" in block
    assert render_block([entry], DatasetSize(500, 200)) == block


def test_a_readme_without_markers_is_an_error_with_the_fix():
    with pytest.raises(FtkitError) as exc:
        splice("# no markers\n", "table", "recipes/README.md")
    assert BEGIN in (exc.value.problems[0].fix or "") and exc.value.problems[0].file == "recipes/README.md"
