"""`ftkit cloud runpod`: the pod that runs a recipe with `ftkit.cloud.entrypoint` (RunPod REST `POST /v1/pods`
fields), built as data (`pod_template`) or created (`create`, the only place the optional `runpod` SDK is imported).

The GPU type is suggested from the recipe's hardware block: the first of `hardware.recommended` that RunPod offers,
else the cheapest GPU of ftkit's catalog with a RunPod price and at least `min_vram_gb`.
"""

from __future__ import annotations

import shlex
from typing import Any

from ftkit.cloud.images import ENTRYPOINT, image_ref
from ftkit.cloud.sdk import import_sdk, provider_call, require_env
from ftkit.cloud.settings import CloudRun, validate_run
from ftkit.errors import FtkitError
from ftkit.estimate.gpus import GPUS, gpu_key
from ftkit.recipes.load import LoadedRecipe
from ftkit.recipes.schema import Hardware

MOUNT = "/workspace"
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
) -> tuple[dict[str, Any], list[str]]:
    """The pod (the recipe's image, RECIPE/PROFILE/SET in its environment, a volume at /workspace, no ports) and
    notes for the person launching it."""
    validate_run(loaded, run, "--set")
    suggested, why = suggest_gpu(loaded.recipe.hardware)
    notes = [f"GPU type: {gpu_type} (--gpu-type)" if gpu_type else f"GPU type {suggested}: {why}"]
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
        },
    }
    return template, notes


def create_kwargs(template: dict[str, Any]) -> dict[str, Any]:
    """The template as keyword arguments of `runpod.create_pod`."""
    return {
        "name": template["name"],
        "image_name": template["imageName"],
        "gpu_type_id": template["gpuTypeIds"][0],
        "gpu_count": template["gpuCount"],
        "cloud_type": template["cloudType"],
        "container_disk_in_gb": template["containerDiskInGb"],
        "volume_in_gb": template["volumeInGb"],
        "volume_mount_path": template["volumeMountPath"],
        "ports": ",".join(template["ports"]) or None,
        "docker_args": shlex.join(template["dockerStartCmd"]),
        "env": template["env"],
    }


def create(template: dict[str, Any]) -> str:
    """Create the pod with the `runpod` SDK and $RUNPOD_API_KEY; returns the pod id."""
    key = require_env(["RUNPOD_API_KEY"], "export {name}=… (RunPod console, Settings, API keys)")["RUNPOD_API_KEY"]
    runpod = import_sdk("runpod", "--create", "runpod", "or create the pod from the printed JSON")
    runpod.api_key = key
    with provider_call("RunPod", "--create", "check the GPU type's availability (--gpu-type) and the API key"):
        pod = runpod.create_pod(**create_kwargs(template))
    return str(pod.get("id") if isinstance(pod, dict) else pod)
