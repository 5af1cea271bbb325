"""The test layers' guard (tests/model_guard.py): an unmarked test that loads a model or tokenizer, asks for the
tiny Llama, or launches an engine fails with the mark to add; a marked one runs; commands that train nothing pass."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import model_guard
import pytest
from ftkit.engines import get_engine
from ftkit.engines.base import StageContext

TESTS = Path(__file__).parent

SAMPLE = textwrap.dedent(
    """
    import os, subprocess, sys
    import pytest

    def load():
        from transformers import AutoTokenizer  # imported here: the guard must patch it on import

        return AutoTokenizer.from_pretrained(os.environ["TINY_LLAMA"])

    def test_unmarked_loads_a_tokenizer():
        load()

    def test_unmarked_asks_for_the_tiny_llama(tiny_llama):
        pass

    def test_unmarked_launches_an_engine(tmp_path):
        subprocess.run([sys.executable, "-m", "ftkit.engines.trl_train", "c.yaml", "h.jsonl"], cwd=tmp_path)

    def test_unmarked_runs_a_recipe():
        subprocess.run([sys.executable, "-m", "ftkit.cli", "recipe", "run", "no-such-recipe"], capture_output=True)

    @pytest.mark.config_error
    def test_config_error_runs_a_recipe():
        subprocess.run([sys.executable, "-m", "ftkit.cli", "recipe", "run", "no-such-recipe"], capture_output=True)

    @pytest.mark.config_error
    def test_config_error_launches_an_engine(tmp_path):
        subprocess.run([sys.executable, "-m", "ftkit.engines.trl_train", "c.yaml", "h.jsonl"], cwd=tmp_path)

    def test_unmarked_runs_a_plain_command():
        assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True).returncode == 0

    @pytest.mark.model
    def test_marked_loads_a_tokenizer():
        assert load().eos_token == "<|im_end|>"

    @pytest.mark.slow
    def test_slow_loads_a_tokenizer():
        load()
    """
)


@pytest.mark.model
def test_unmarked_tests_that_load_a_model_fail_with_the_mark_to_add(tiny_llama: Path, tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "MODEL_GUARD_LOG"}  # the guard must fail, not log
    env |= {"TINY_LLAMA": str(tiny_llama), "COLUMNS": "400"}  # summary lines untruncated
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *filter(None, [env.get("PYTHONPATH")])])
    argv = ["-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-rA", "-q", "test_sample.py"]
    argv += ["-W", "ignore::pytest.PytestUnknownMarkWarning"]  # the markers are registered in pyproject.toml
    out = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True, text=True).stdout
    summary = {line.split(" ")[1].split("::")[1]: line for line in out.splitlines() if "test_sample.py::" in line}
    mark = "mark it @pytest.mark.model"
    assert summary["test_unmarked_loads_a_tokenizer"].startswith("FAILED"), out
    assert mark in summary["test_unmarked_loads_a_tokenizer"] and ".from_pretrained" in out
    assert summary["test_unmarked_asks_for_the_tiny_llama"].startswith("ERROR"), out
    assert mark in summary["test_unmarked_asks_for_the_tiny_llama"] and "fixture tiny_llama" in out
    assert summary["test_unmarked_launches_an_engine"].startswith("FAILED"), out
    assert mark in summary["test_unmarked_launches_an_engine"] and "launches ftkit.engines.trl_train" in out
    assert summary["test_unmarked_runs_a_recipe"].startswith("FAILED"), out
    assert summary["test_config_error_launches_an_engine"].startswith("FAILED"), out  # only `recipe run` is let through
    for name in (
        "test_config_error_runs_a_recipe",
        "test_unmarked_runs_a_plain_command",
        "test_marked_loads_a_tokenizer",
        "test_slow_loads_a_tokenizer",
    ):
        assert summary[name].startswith("PASSED"), out


def test_every_engines_training_command_is_recognised_and_other_commands_are_not(tmp_path: Path) -> None:
    ctx = StageContext("r", "sft", tmp_path, tmp_path, "cpu", 0)
    for name in ("axolotl", "trl", "unsloth"):
        assert model_guard.engine_launch(get_engine(name).command(tmp_path / "c.yaml", ctx)), name
    assert model_guard.engine_launch(["ftkit", "recipe", "run", "tiny"]) == "ftkit recipe run"
    assert model_guard.engine_launch([sys.executable, "-m", "ftkit.cli", "recipe", "run", "x"]) == "ftkit recipe run"
    assert model_guard.engine_launch([sys.executable, "-m", "ftkit.cli", "recipe", "validate"]) is None
    assert model_guard.engine_launch(["git", "run", "recipe"]) is None


def test_an_unmarked_test_refuses_and_a_marked_layer_allows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODEL_GUARD_LOG", raising=False)
    with pytest.raises(pytest.fail.Exception, match=r"mark it @pytest\.mark\.model"):
        model_guard.refuse("a load")
    with model_guard.refusing(False):
        model_guard.refuse("a load")  # what a marked test's load does: nothing
    assert model_guard.unmarked(["parametrize"]) and not model_guard.unmarked(["model"])
    assert not any(model_guard.unmarked([layer]) for layer in ("slow", "recipe_smoke", "containers"))
