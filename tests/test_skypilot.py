"""`ftkit cloud skypilot`: the task YAML (pure builder) that runs a recipe on `num_nodes` VMs, its keys against
SkyPilot's task YAML reference, and (where an interpreter with the `skypilot` package is at hand) SkyPilot's own
validation of it, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from ftkit.cli import main
from ftkit.cloud.carry import RecipeSource
from ftkit.cloud.settings import CloudRun
from ftkit.cloud.skypilot import (
    CHECKPOINTS,
    RECIPE_MOUNT,
    RESOURCE_KEYS,
    STORAGE_KEYS,
    TASK_KEYS,
    render_yaml,
    skypilot_task,
)
from ftkit.errors import ExitCode, FtkitError
from ftkit.recipes.load import load_recipe

RECIPE = ROOT / "recipes" / "llama70b-full-fsdp"
CHECKER = Path(__file__).with_name("skypilot_check.py")


@pytest.fixture(scope="module")
def loaded():  # type: ignore[no-untyped-def]
    return load_recipe(str(RECIPE), check_profiles=False)


def image_source(name: str) -> RecipeSource:
    return RecipeSource(name, RECIPE, "", False, "in the image at HEAD")


def test_the_full_profile_runs_on_the_recipes_nodes_and_gpus_from_the_image(loaded):  # type: ignore[no-untyped-def]
    task, notes = skypilot_task(loaded, CloudRun(loaded.name, "full"), run_id="r1", source=image_source(loaded.name))
    assert task["num_nodes"] == 2
    assert task["resources"]["accelerators"] == "H100:8"
    assert task["resources"]["image_id"] == "docker:ghcr.io/finetune-recipes/axolotl:0.19.0-cu130-torch2.13.0"
    assert task["envs"]["RUN_ID"] == "r1" and task["secrets"] == {"HF_TOKEN": None}
    assert task["file_mounts"] == {CHECKPOINTS: {"source": "s3://<BUCKET>/finetune-recipes", "mode": "MOUNT_CACHED"}}
    run = task["run"]
    for piece in ('--nodes "$SKYPILOT_NUM_NODES"', '--node-rank "$SKYPILOT_NODE_RANK"', '--rdzv-id "$RUN_ID"',
                  'MASTER_ADDR=$(echo "$SKYPILOT_NODE_IPS" | head -n1)', '--master-addr "$MASTER_ADDR"',
                  f"CKPT={CHECKPOINTS}/llama70b-full-fsdp/r1", '--checkpoint-dir "$CKPT"',
                  "python -m ftkit recipe run llama70b-full-fsdp --profile full"):  # fmt: skip
        assert piece in run, piece
    assert any("--bucket" in n for n in notes) and any("--secret HF_TOKEN" in n for n in notes)


def test_flags_change_nodes_gpus_accelerator_sets_and_bucket(loaded):  # type: ignore[no-untyped-def]
    run = CloudRun(loaded.name, "full", ["gradient_accumulation_steps=2"])
    task, notes = skypilot_task(loaded, run, nodes=4, gpus_per_node=8, accelerator="H200", bucket="gs://b/ckpt/",
                                spot=True, run_id="r2", source=image_source(loaded.name))  # fmt: skip
    assert (task["num_nodes"], task["resources"]["accelerators"], task["resources"]["use_spot"]) == (4, "H200:8", True)
    assert task["file_mounts"][CHECKPOINTS]["source"] == "gs://b/ckpt"
    assert "--set gradient_accumulation_steps=2" in task["run"]
    assert not any("--bucket" in n for n in notes)
    fewer, fewer_notes = skypilot_task(loaded, CloudRun(loaded.name, "full"), nodes=1, source=image_source("x"))
    assert fewer["num_nodes"] == 1 and any("fewer than the 2 x 8" in n for n in fewer_notes)


def test_a_recipe_the_image_lacks_is_copied_onto_every_node(loaded):  # type: ignore[no-untyped-def]
    carried = RecipeSource(loaded.name, RECIPE, "", True, "a fork")
    task, notes = skypilot_task(loaded, CloudRun(loaded.name, "smoke"), source=carried)
    mount = f"{RECIPE_MOUNT}/{loaded.name}"
    assert task["file_mounts"][mount] == str(RECIPE) and f"recipe run {mount} --profile smoke" in task["run"]
    assert task["num_nodes"] == 1, "the smoke profile is written for one node"
    assert any("copied onto every node" in n for n in notes)


def test_bad_numbers_and_overrides_are_refused_with_the_flag(loaded):  # type: ignore[no-untyped-def]
    with pytest.raises(FtkitError) as exc:
        skypilot_task(loaded, CloudRun(loaded.name, "full"), nodes=0, source=image_source("x"))
    assert exc.value.problems[0].field == "--nodes"
    with pytest.raises(FtkitError):
        skypilot_task(loaded, CloudRun(loaded.name, "nope"), source=image_source("x"))


def test_the_writer_uses_only_keys_of_skypilots_task_yaml_reference(loaded):  # type: ignore[no-untyped-def]
    carried = RecipeSource(loaded.name, RECIPE, "", True, "a fork")
    task, _ = skypilot_task(loaded, CloudRun(loaded.name, "full"), spot=True, source=carried)
    assert set(task) <= set(TASK_KEYS) and set(task["resources"]) <= set(RESOURCE_KEYS)
    assert all(set(m) <= set(STORAGE_KEYS) for m in task["file_mounts"].values() if isinstance(m, dict))
    # the names as SkyPilot's docs spell them (YAML spec): a typo in the writer's lists fails here too
    assert set(TASK_KEYS) <= {"name", "workdir", "num_nodes", "resources", "envs", "secrets", "file_mounts",
                              "setup", "run", "volumes", "config", "service"}  # fmt: skip
    assert yaml.safe_load(render_yaml(task)) == task, "the YAML reads back as the task"


def _skypilot_python() -> str | None:
    """An interpreter that can import `sky`: this one, or $FTKIT_SKYPILOT_PYTHON (skypilot is ~460 MB of
    dependencies, kept out of the dev environment)."""
    try:
        import sky  # noqa: F401

        return sys.executable
    except ImportError:
        return os.environ.get("FTKIT_SKYPILOT_PYTHON")


@pytest.mark.skipif(_skypilot_python() is None, reason="no interpreter with the skypilot package: "
                    "set FTKIT_SKYPILOT_PYTHON=/path/to/venv/bin/python (pip install skypilot there)")  # fmt: skip
@pytest.mark.parametrize("profile", ["full", "smoke"])
def test_skypilot_itself_accepts_the_task(loaded, profile: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    carried = RecipeSource(loaded.name, RECIPE, "", True, "a fork")
    task, _ = skypilot_task(loaded, CloudRun(loaded.name, profile), bucket="s3://b/p", spot=True, source=carried)
    path = tmp_path / "task.yaml"
    path.write_text(render_yaml(task))
    done = subprocess.run([str(_skypilot_python()), str(CHECKER), str(path)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["valid"], result
    assert result["num_nodes"] == task["num_nodes"] and result["storage_mounts"] == [CHECKPOINTS]


def test_cli_prints_the_yaml_writes_it_and_gives_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out_file = tmp_path / "task.yaml"
    assert main(["cloud", "skypilot", str(RECIPE), "--nodes", "2", "--run-id", "r", "-o", str(out_file)]) == 0
    printed = capsys.readouterr().out
    assert yaml.safe_load(out_file.read_text())["num_nodes"] == 2 and "num_nodes: 2" in printed
    assert main(["cloud", "skypilot", str(RECIPE), "--json", "--accelerator", "A100-80GB"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["task"]["resources"]["accelerators"] == "A100-80GB:8" and data["yaml"].startswith("name:")
    assert main(["cloud", "skypilot", str(RECIPE), "--gpus-per-node", "0"]) == ExitCode.USAGE
