"""The Axolotl plugin seeds what Axolotl creates before the HF Trainer seeds: a new head made at load and LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ftkit.engines.base import HISTORY_ENV

pytestmark = pytest.mark.model  # every test loads the tiny Llama


def _new_head_after_load(plugin: object, model_dir: Path) -> torch.Tensor:
    """What Axolotl does for a reward model: RNG state left by earlier work, the plugin hook, then the load that
    initialises the `score` head the causal-LM checkpoint lacks."""
    from axolotl.utils.dict import DictDefault
    from transformers import AutoModelForSequenceClassification

    torch.rand(int(torch.randint(1, 100, (1,)).item()))  # earlier draws differ from run to run
    plugin.pre_model_load(DictDefault({"seed": 7}))  # type: ignore[attr-defined]
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    return model.score.weight.detach().clone()


def test_a_reward_models_new_score_head_is_the_same_in_every_run_of_one_seed(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from ftkit.engines.axolotl_plugin import RunControlPlugin

    monkeypatch.setenv(HISTORY_ENV, str(tmp_path / "history.jsonl"))  # as the runner starts Axolotl
    torch.manual_seed(1)
    first = _new_head_after_load(RunControlPlugin(), tiny_llama)
    torch.manual_seed(2)
    second = _new_head_after_load(RunControlPlugin(), tiny_llama)
    assert torch.equal(first, second)


def test_without_the_runners_seeding_the_new_score_head_differs_between_runs(
    tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
):
    """The control: outside a run (no history file) the plugin leaves the RNG alone, and the head is random."""
    from ftkit.engines.axolotl_plugin import RunControlPlugin

    monkeypatch.delenv(HISTORY_ENV, raising=False)
    torch.manual_seed(1)
    first = _new_head_after_load(RunControlPlugin(), tiny_llama)
    torch.manual_seed(2)
    second = _new_head_after_load(RunControlPlugin(), tiny_llama)
    assert not torch.equal(first, second)
