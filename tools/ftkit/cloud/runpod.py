"""`ftkit cloud runpod`: the pod that runs a recipe with `ftkit.cloud.entrypoint` (RunPod REST `POST /v1/pods`
fields), built as data (`pod_template`) or created (`create`, the only place the optional `runpod` SDK is imported).

The GPU type is suggested from the recipe's hardware block. A recipe the image does not hold is carried on a
network volume. Both rules: docs/cloud.md, "`cloud/runpod.py`: the pod and a carried recipe". A profile written for
several nodes needs a RunPod Instant Cluster instead (its variables: `ftkit.cloud.nodes`); the notes say so.
"""

from __future__ import annotations

import shlex
from typing import Any

from ftkit.cloud.carry import FINGERPRINT_ENV, RECIPE_DIR_ENV, RecipeSource, image_copy_note, recipe_source
from ftkit.cloud.sagemaker import profile_nodes
from ftkit.cloud.sdk import import_sdk, provider_call, require_env
from ftkit.cloud.settings import CloudRun, validate_run
from ftkit.errors import ExitCode, FtkitError
from ftkit.estimate.gpus import GPUS, gpu_key
from ftkit.image_refs import ENTRYPOINT, image_ref
from ftkit.recipes.load import LoadedRecipe
from ftkit.recipes.schema import Hardware

MOUNT = "/workspace"
VOLUME_RECIPES = "recipes"  # carried recipes on the network volume: /workspace/recipes/<name>
# ftkit catalog key -> RunPod GPU type id (https://docs.runpod.io/references/gpu-types)
RUNPOD_GPU_IDS = {
    "rtx-3090": "NVIDIA GeForce RTX 3090",
    "rtx-4090": "NVIDIA GeForce RTX 4090",
    "l4": "NVIDIA L4",
    "rtx-a6000": "NVIDIA RTX A6000",
    "l40s": "NVIDIA L40S",
    "a100-80gb-pcie": "NVIDIA A100 80GB PCIe",
    "a100-80gb": "NVIDIA A100-SXM4-80GB",
    "h100-pcie": "NVIDIA H100 PCIe",
    "h100-sxm": "NVIDIA H100 80GB HBM3",
    "h200": "NVIDIA H200",
}


def suggest_gpu(hardware: Hardware) -> tuple[str, str]:
    """(RunPod GPU type id, why) for a recipe's hardware block."""
    for name in hardware.recommended:
        key = gpu_key(name)
        if key in RUNPOD_GPU_IDS:
            return RUNPOD_GPU_IDS[key], f"first of hardware.recommended that RunPod offers ({name})"
    priced = []
    for key, runpod_id in RUNPOD_GPU_IDS.items():
        gpu = GPUS[key]
        prices = [
            p.on_demand_per_h for p in gpu.prices if p.provider.startswith("runpod") and "serverless" not in p.provider
        ]
        if gpu.marketed_gb >= hardware.min_vram_gb and prices:
            priced.append((min(prices), key, runpod_id))
    if not priced:
        raise FtkitError.one(
            f"no RunPod GPU in ftkit's catalog has >= {hardware.min_vram_gb:g} GB",
            field="hardware.min_vram_gb",
            fix="pass --gpu-type with a RunPod GPU type id",
        )
    price, key, runpod_id = min(priced)
    return (
        runpod_id,
        f"cheapest with >= {hardware.min_vram_gb:g} GB in ftkit's catalog (${price:g}/GPU-h, {GPUS[key].name})",
    )


def pod_template(
    loaded: LoadedRecipe,
    run: CloudRun,
    *,
    gpu_type: str | None = None,
    image: str | None = None,
    volume_gb: int = 200,
    container_disk_gb: int = 50,
    cloud_type: str = "SECURE",
    source: RecipeSource | None = None,
    network_volume: str | None = None,
    data_center: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The pod (the recipe's image, RECIPE/PROFILE/SET in its environment, a volume at /workspace, no ports) and
    notes for the person launching it. A carried recipe (`source`, default: decided against git HEAD) needs a
    network volume: the pod mounts it instead of a pod volume and runs the recipe from it."""
    validate_run(loaded, run, "--set")
    source = source or recipe_source(loaded.dir, loaded.name)
    if source.carried and not network_volume:
        raise FtkitError.one(
            f"the image does not hold {loaded.name} as it is here ({source.reason}), and a pod volume cannot carry it "
            "(it exists only once the pod runs)",
            file=source.local_dir,
            field="--network-volume",
            fix="create a network volume in a data center with RunPod's S3-compatible API (console: Storage) and "
            "pass --network-volume ID --data-center DC: the printed `aws s3 sync` copies the recipe onto it",
        )
    suggested, why = suggest_gpu(loaded.recipe.hardware)
    notes = [f"GPU type: {gpu_type} (--gpu-type)" if gpu_type else f"GPU type {suggested}: {why}"]
    if source.carried:
        upload = volume_upload_command(source, network_volume or "", data_center)
        where = f"{source.local_dir} is carried on network volume {network_volume} ({source.reason})"
        notes.insert(0, f"recipe: {where}; before the pod starts, copy it there: {upload}")
        if not data_center:
            notes.append("--data-center: the network volume's data center (e.g. EU-RO-1) names the S3 endpoint")
    else:
        notes.insert(0, image_copy_note(source, "the pod"))
    if (nodes := profile_nodes(loaded, run.profile)) > 1:
        notes.append(f"profile '{run.profile}' is written for {nodes} nodes: a pod is one machine; run it on a RunPod "
                     "Instant Cluster (the entrypoint reads NUM_NODES, NODE_RANK, PRIMARY_ADDR; /workspace a network "
                     "volume all nodes mount): docs/cloud.md, 'RunPod Instant Clusters'")  # fmt: skip
    notes.append("HF_TOKEN refers to a RunPod secret named HF_TOKEN (console: Secrets); create it for gated models")
    notes.append(f"runs, checkpoints and metrics go to {MOUNT}/runs on the volume; a restarted pod resumes its run")
    notes.append("the pod keeps running (and billing) after the run ends: stop it when the run's metrics are in")
    template = {
        "name": f"ftkit-{loaded.name}"[:60],
        "imageName": image or image_ref(loaded.recipe.container),
        "gpuTypeIds": [gpu_type or suggested],
        "gpuCount": loaded.recipe.hardware.gpus,
        "cloudType": cloud_type,
        "containerDiskInGb": container_disk_gb,
        "volumeInGb": volume_gb,
        "volumeMountPath": MOUNT,
        "ports": [],
        "dockerStartCmd": ENTRYPOINT,
        "env": {
            "RECIPE": loaded.name,
            "PROFILE": run.profile,
            "SET": " ".join(shlex.quote(item) for item in run.sets),
            "HF_TOKEN": "{{ RUNPOD_SECRET_HF_TOKEN }}",  # a RunPod secret reference, not a value
            FINGERPRINT_ENV: source.fingerprint,
        },
    }
    if source.carried:
        del template["volumeInGb"]
        template["networkVolumeId"] = network_volume
        if data_center:
            template["dataCenterIds"] = [data_center]
        template["env"][RECIPE_DIR_ENV] = volume_recipe_dir(source.name)
    return template, notes


def volume_recipe_dir(name: str) -> str:
    """Where a carried recipe is in the pod: on the network volume, mounted at /workspace."""
    return f"{MOUNT}/{VOLUME_RECIPES}/{name}"


def volume_upload_command(source: RecipeSource, network_volume: str, data_center: str | None) -> str:
    """`aws s3 sync` of the recipe folder to `recipes/<name>/` on the network volume through RunPod's S3-compatible
    API (bucket: the volume id; endpoint per data center; credentials: a RunPod S3 API key). `--delete` drops files
    an earlier upload left there, so the copy has the folder's fingerprint."""
    region = data_center or "<DATA_CENTER>"
    return shlex.join([
        "aws", "s3", "sync", str(source.local_dir), f"s3://{network_volume}/{VOLUME_RECIPES}/{source.name}/",
        "--delete", "--exclude", ".*", "--exclude", "*/.*", "--region", region,
        "--endpoint-url", f"https://s3api-{region.lower()}.runpod.io/",
    ])  # fmt: skip


def create_kwargs(template: dict[str, Any]) -> dict[str, Any]:
    """The template as keyword arguments of `runpod.create_pod` (a network volume: its id and data center, no pod
    volume)."""
    volume: dict[str, Any] = {"volume_in_gb": template.get("volumeInGb", 0)}
    if template.get("networkVolumeId"):
        volume |= {"network_volume_id": template["networkVolumeId"],
                   "data_center_id": (template.get("dataCenterIds") or [None])[0]}  # fmt: skip
    return {
        "name": template["name"],
        "image_name": template["imageName"],
        "gpu_type_id": template["gpuTypeIds"][0],
        "gpu_count": template["gpuCount"],
        "cloud_type": template["cloudType"],
        "container_disk_in_gb": template["containerDiskInGb"],
        **volume,
        "volume_mount_path": template["volumeMountPath"],
        "ports": ",".join(template["ports"]) or None,
        "docker_args": shlex.join(template["dockerStartCmd"]),
        "env": template["env"],
    }


def create(template: dict[str, Any], recipe_on_volume: bool = False) -> str:
    """Create the pod with the `runpod` SDK and $RUNPOD_API_KEY; returns the pod id. A pod that runs a carried
    recipe is created only once the recipe is on the volume (`recipe_on_volume`): ftkit cannot upload it."""
    if RECIPE_DIR_ENV in template["env"] and not recipe_on_volume:
        raise FtkitError.one(
            f"the pod runs {template['env'][RECIPE_DIR_ENV]} from network volume {template.get('networkVolumeId')}, "
            "and ftkit cannot tell whether it is there yet",
            field="--create",
            code=ExitCode.USAGE,
            fix="run the printed `aws s3 sync …` first, then --create --recipe-on-volume",
        )
    key = require_env(["RUNPOD_API_KEY"], "export {name}=… (RunPod console, Settings, API keys)")["RUNPOD_API_KEY"]
    runpod = import_sdk("runpod", "--create", "runpod", "or create the pod from the printed JSON")
    runpod.api_key = key
    with provider_call("RunPod", "--create", "check the GPU type's availability (--gpu-type) and the API key"):
        pod = runpod.create_pod(**create_kwargs(template))
    return str(pod.get("id") if isinstance(pod, dict) else pod)
