"""`ftkit cloud skypilot`: a SkyPilot task (the YAML `sky launch` / `sky jobs launch` take) that runs a recipe on
`num_nodes` GPU VMs of any cloud SkyPilot reaches, built as data (`skypilot_task`) and written as YAML.

Each node runs the recipe's image (`resources.image_id: docker:…`) and `ftkit recipe run --nodes
$SKYPILOT_NUM_NODES --node-rank $SKYPILOT_NODE_RANK --master-addr <first of $SKYPILOT_NODE_IPS>`: torchrun's c10d
rendezvous on node 0, the run id as rendezvous id. Checkpoints go to a bucket mounted at the same path on every
node (`file_mounts`, MOUNT_CACHED), so a restarted job resumes with every node's shards. A recipe the image does
not hold is copied onto every node (a local `file_mounts` entry). Keys: SkyPilot's task YAML reference
(docs/cloud.md, "SkyPilot").
"""

from __future__ import annotations

import datetime as dt
import shlex
from typing import Any

import yaml

from ftkit.cloud.carry import RecipeSource, recipe_source
from ftkit.cloud.sagemaker import profile_nodes
from ftkit.cloud.settings import CloudRun, validate_run
from ftkit.cluster import DEFAULT_PORT
from ftkit.errors import FtkitError
from ftkit.estimate.gpus import GPUS, gpu_key
from ftkit.image_refs import image_ref
from ftkit.recipes.load import LoadedRecipe

CHECKPOINTS = "/ftkit-checkpoints"  # the bucket, mounted at the same path on every node
RECIPE_MOUNT = "/ftkit-recipe"  # a carried recipe, copied onto every node
PLACEHOLDER_BUCKET = "s3://<BUCKET>/finetune-recipes"
SECRETS = ("HF_TOKEN",)  # given at launch (`sky launch --secret HF_TOKEN`), never written into the YAML
# ftkit catalog key -> SkyPilot's accelerator name (`sky show-gpus`)
SKY_ACCELERATORS = {
    "h100-sxm": "H100",
    "h100-pcie": "H100",
    "h200": "H200",
    "a100-80gb": "A100-80GB",
    "a100-80gb-pcie": "A100-80GB",
    "a100-40gb": "A100",
    "l40s": "L40S",
    "l4": "L4",
    "a10g": "A10G",
}
# The task YAML keys this writer uses, each in SkyPilot's task YAML reference (docs.skypilot.co, "YAML spec").
TASK_KEYS = ("name", "num_nodes", "resources", "envs", "secrets", "file_mounts", "setup", "run")
RESOURCE_KEYS = ("accelerators", "image_id", "disk_size", "use_spot")
STORAGE_KEYS = ("source", "mode")


def suggest_accelerator(loaded: LoadedRecipe) -> tuple[str, str]:
    """(SkyPilot accelerator name, why) for a recipe's hardware block: the first recommended GPU SkyPilot names."""
    for name in loaded.recipe.hardware.recommended:
        key = gpu_key(name)
        if key in SKY_ACCELERATORS:
            return SKY_ACCELERATORS[key], f"first of hardware.recommended that SkyPilot names ({name})"
    fitting = [k for k, v in SKY_ACCELERATORS.items() if GPUS[k].marketed_gb >= loaded.recipe.hardware.min_vram_gb]
    if not fitting:
        raise FtkitError.one(
            f"no GPU SkyPilot names has >= {loaded.recipe.hardware.min_vram_gb:g} GB",
            field="hardware.min_vram_gb",
            fix="pass --accelerator NAME (sky show-gpus lists them)",
        )
    key = min(fitting, key=lambda k: GPUS[k].marketed_gb)
    return SKY_ACCELERATORS[key], f"smallest with >= {loaded.recipe.hardware.min_vram_gb:g} GB"


def run_script(recipe: str, profile: str, sets: list[str], checkpoint_dir: str, port: int = DEFAULT_PORT) -> str:
    """The `run` section every node executes: its node of the run, resuming when the checkpoints are there."""
    sets_args = "".join(f" \\\n  --set {shlex.quote(item)}" for item in sets)
    return (
        "set -euo pipefail\n"
        'MASTER_ADDR=$(echo "$SKYPILOT_NODE_IPS" | head -n1)\n'
        f"CKPT={checkpoint_dir}\n"
        'RESUME=(); if [ -f "$CKPT/metrics.json" ]; then RESUME=(--resume "$CKPT"); fi\n'
        f"python -m ftkit recipe run {shlex.quote(recipe)} --profile {shlex.quote(profile)}{sets_args} \\\n"
        '  --nodes "$SKYPILOT_NUM_NODES" --node-rank "$SKYPILOT_NODE_RANK" \\\n'
        f'  --master-addr "$MASTER_ADDR" --master-port {port} --rdzv-id "$RUN_ID" \\\n'
        '  --checkpoint-dir "$CKPT" --runs-dir "$CKPT/runs" "${RESUME[@]}"\n'
    )


def skypilot_task(
    loaded: LoadedRecipe,
    run: CloudRun,
    *,
    nodes: int | None = None,
    gpus_per_node: int | None = None,
    accelerator: str | None = None,
    image: str | None = None,
    bucket: str | None = None,
    run_id: str | None = None,
    spot: bool = False,
    disk_gb: int = 500,
    source: RecipeSource | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The SkyPilot task (a dict, the YAML's content) and notes for the person launching it. Defaults: the
    profile's nodes, the recipe's GPUs per node, the first recommended GPU SkyPilot names, the recipe's image."""
    validate_run(loaded, run, "--set")
    source = source or recipe_source(loaded.dir, loaded.name)
    nodes = profile_nodes(loaded, run.profile) if nodes is None else nodes
    gpus = loaded.recipe.hardware.gpus if gpus_per_node is None else gpus_per_node
    for flag, value in (("--nodes", nodes), ("--gpus-per-node", gpus), ("--disk-gb", disk_gb)):
        if value < 1:
            raise FtkitError.one(f"{flag} {value}: must be at least 1", field=flag, fix=f"{flag} 2")
    suggested, why = suggest_accelerator(loaded)
    run_id = run_id or f"{loaded.name}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    prefix = (bucket or PLACEHOLDER_BUCKET).rstrip("/")
    checkpoints = f"{CHECKPOINTS}/{loaded.name}/{run_id}"
    recipe_arg = f"{RECIPE_MOUNT}/{loaded.name}" if source.carried else loaded.name
    task: dict[str, Any] = {
        "name": f"ftkit-{loaded.name}"[:60],
        "num_nodes": nodes,
        "resources": {
            "accelerators": f"{accelerator or suggested}:{gpus}",
            "image_id": f"docker:{image or image_ref(loaded.recipe.container)}",
            "disk_size": disk_gb,
            "use_spot": spot,
        },
        "envs": {"RUN_ID": run_id, "PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_TELEMETRY": "1"},
        "secrets": dict.fromkeys(SECRETS),
        "file_mounts": {CHECKPOINTS: {"source": prefix, "mode": "MOUNT_CACHED"}},
        "setup": f"python -m ftkit recipe validate {shlex.quote(recipe_arg)}  # the image holds ftkit and the engine\n",
        "run": run_script(recipe_arg, run.profile, run.sets, checkpoints),
    }
    if source.carried:
        task["file_mounts"][f"{RECIPE_MOUNT}/{loaded.name}"] = str(source.local_dir)
    notes = [
        f"recipe: {source.local_dir} is copied onto every node at {RECIPE_MOUNT}/{loaded.name} ({source.reason})"
        if source.carried
        else f"recipe: the image's recipes/{loaded.name} ({source.reason}); --carry-recipe copies your folder onto "
        "every node instead (for a fork, or a recipe changed since the image was built)",
        f"accelerators: {accelerator} (--accelerator)" if accelerator else f"accelerators {suggested}: {why}",
        f"{nodes} node(s) x {gpus} GPU(s): every node runs its node of the run (torchrun's c10d rendezvous on the "
        f"first of $SKYPILOT_NODE_IPS, port {DEFAULT_PORT}, rendezvous id $RUN_ID)",
        f"checkpoints, history and metrics: {prefix}/{loaded.name}/{run_id}/ (mounted at {checkpoints} on every "
        "node); a restarted job (sky jobs launch recovers spot preemptions) resumes from them",
        "HF_TOKEN: pass it at launch, `sky launch --secret HF_TOKEN task.yaml` (it is never written here)",
    ]
    need = loaded.recipe.hardware
    if nodes * gpus < need.nodes * need.gpus:
        notes.append(f"{nodes} x {gpus} GPUs is fewer than the {need.nodes} x {need.gpus} the recipe's full profile "
                     "is written for: check `ftkit estimate --recipe` with --nodes/--gpus, and keep the global batch "
                     "through gradient accumulation")  # fmt: skip
    if bucket is None:
        notes.append("bucket: pass --bucket s3://your-bucket/prefix (or gs://, r2://): checkpoints go under it")
    return task, notes


def render_yaml(task: dict[str, Any]) -> str:
    """The task as YAML, keys in the order written, `run` as a literal block."""

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump(task, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
