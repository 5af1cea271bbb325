"""`ftkit cloud sagemaker`: the `sagemaker.estimator.Estimator(...)` call and `fit(...)` that run a recipe as a
SageMaker training job with `ftkit.cloud.entrypoint`, built as data (`sagemaker_job`), printed as Python
(`render_python`) or launched (`launch`, the only place the optional `sagemaker` SDK is imported).

Managed spot training is on by default: `checkpoint_s3_uri` is unique per run (`<prefix>/<recipe>/<run id>/`), so
a restarted job resumes its own checkpoints and never another run's.

A run across nodes is `instance_count` instances (default: the profile's nodes): SageMaker starts the same container
on each, and the entrypoint makes each one node of the run from resourceconfig.json (`ftkit.cloud.nodes`). Every
instance syncs its /opt/ml/checkpoints with the one `checkpoint_s3_uri`, so a restarted job gets every node's files.

A recipe the image does not hold (a fork, or changed since the image's commit: `ftkit.cloud.carry`) is carried as
the `recipe` input channel: `S3Uploader.upload` copies the folder to `<run>/recipe/<name>/` and the entrypoint runs
it from `/opt/ml/input/data/recipe/<name>/`.
"""

from __future__ import annotations

import datetime as dt
import pprint
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftkit.cloud.carry import FINGERPRINT_KEY, RECIPE_CHANNEL, RecipeSource, image_copy_note, recipe_source
from ftkit.cloud.sdk import import_sdk, provider_call, require_env
from ftkit.cloud.settings import CloudRun, validate_run
from ftkit.engines import get_engine
from ftkit.errors import FtkitError
from ftkit.estimate.gpus import GPUS
from ftkit.image_refs import ENTRYPOINT, image_ref
from ftkit.recipes.load import LoadedRecipe
from ftkit.recipes.resolve import resolve_stage

DEFAULT_INSTANCE = "ml.g5.2xlarge"
PLACEHOLDER_ROLE = "arn:aws:iam::<ACCOUNT_ID>:role/<SageMakerExecutionRole>"
PLACEHOLDER_PREFIX = "s3://<BUCKET>/finetune-recipes"
SECRETS = ("HF_TOKEN",)  # passed from the launching machine's environment, never printed
# instance family -> the catalog GPU it carries; GPUs per instance by size (the others have one)
_FAMILIES = {
    "ml.g5.": "a10g",
    "ml.g6.": "l4",
    "ml.g6e.": "l40s",
    "ml.p4d.": "a100-40gb",
    "ml.p4de.": "a100-80gb",
    "ml.p5.": "h100-sxm",
    "ml.p5e.": "h200",
    "ml.p5en.": "h200",
}
_MULTI = {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}


@dataclass
class SageMakerJob:
    estimator: dict[str, Any]  # keyword arguments of sagemaker.estimator.Estimator
    inputs: dict[str, str]  # channel (= stage) -> S3 URI, for fit()
    secrets: list[str] = field(default_factory=list)  # env vars copied into `environment` at launch
    notes: list[str] = field(default_factory=list)
    uploads: dict[str, str] = field(default_factory=dict)  # local folder -> S3 URI, uploaded before fit()
    recipe: dict[str, Any] = field(default_factory=dict)  # RecipeSource.to_dict(): which copy the job runs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def instance_gpus(instance_type: str) -> tuple[str | None, int]:
    """(catalog GPU key, GPUs) of a SageMaker instance type, or (None, 0) when unknown."""
    family = next((f for f in sorted(_FAMILIES, key=len, reverse=True) if instance_type.startswith(f)), None)
    if family is None:
        return None, 0
    size = instance_type.rsplit(".", 1)[-1]
    return _FAMILIES[family], 8 if family.startswith("ml.p") else _MULTI.get(size, 1)


def profile_nodes(loaded: LoadedRecipe, profile: str) -> int:
    """The nodes a profile is written for: its own `nodes`, else the recipe's `hardware.nodes`."""
    chosen = loaded.recipe.profiles.get(profile)
    return (chosen.nodes if chosen is not None else None) or loaded.recipe.hardware.nodes


def _hardware_notes(loaded: LoadedRecipe, instance_type: str, instances: int = 1) -> list[str]:
    key, count = instance_gpus(instance_type)
    need = loaded.recipe.hardware
    wanted = f"{need.nodes} x {need.gpus}" if need.nodes > 1 else f"{need.gpus}"
    if key is None:
        return [
            f"{instance_type}: not in ftkit's list of SageMaker GPU instances; check it has {need.gpus} GPU(s) "
            f"with >= {need.min_vram_gb:g} GB"
        ]
    gpu = GPUS[key]
    if gpu.marketed_gb < need.min_vram_gb or count * instances < need.gpus * need.nodes:
        return [
            f"{instances} x {instance_type} has {count * instances} x {gpu.name}; the recipe's full profile needs "
            f"{wanted} GPU(s) with >= {need.min_vram_gb:g} GB (hardware block of recipe.yaml)"
        ]
    return []


def _nodes_note(instances: int, instance_type: str) -> str:
    return (
        f"{instances} instances of {instance_type}: each runs one node of the run (node rank = its place in "
        "resourceconfig.json's sorted hosts; torchrun's static rendezvous on the first, named by the job); every "
        "node's checkpoints sync to the one checkpoint_s3_uri, so a restarted job resumes on all of them; node 0 "
        "writes the model"
    )


def _job_name(text: str) -> str:
    """SageMaker job names: letters, digits and hyphens, at most 63 characters (the SDK appends a timestamp)."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")[:32] or "ftkit"


def _local_dataset(loaded: LoadedRecipe, stage: str, run: CloudRun) -> str | None:
    """The stage's dataset when it is a file of the recipe (a hub dataset needs no channel)."""
    engine = get_engine(loaded.recipe.engine)
    for path in engine.dataset_paths(resolve_stage(loaded, stage, run.profile).config):
        if (loaded.dir / path).is_file() or Path(path).is_file():
            return path
    return None


def sagemaker_job(
    loaded: LoadedRecipe,
    run: CloudRun,
    *,
    instance_type: str = DEFAULT_INSTANCE,
    image: str | None = None,
    role: str | None = None,
    s3_prefix: str | None = None,
    data: dict[str, str] | None = None,
    spot: bool = True,
    max_run_hours: float = 24,
    volume_gb: int = 200,
    run_id: str | None = None,
    source: RecipeSource | None = None,
    instance_count: int | None = None,
) -> SageMakerJob:
    """The Estimator keyword arguments and fit() inputs that run `run` on SageMaker (validated like `--set`).
    `source` says whether the image's copy of the recipe runs or the local folder is carried (default: decided
    against git HEAD, `ftkit.cloud.carry.recipe_source`); `instance_count`: the nodes (default: the profile's)."""
    validate_run(loaded, run, "--set")
    instances = profile_nodes(loaded, run.profile) if instance_count is None else instance_count
    if instances < 1:
        raise FtkitError.one(f"--instance-count {instances}: a job needs at least one instance",
                             field="--instance-count", fix="--instance-count 2 for a run on two nodes")  # fmt: skip
    source = source or recipe_source(loaded.dir, loaded.name)
    stages = [s.name for s in loaded.recipe.stages]
    if source.carried and RECIPE_CHANNEL in stages:
        raise FtkitError.one(
            f"stage '{RECIPE_CHANNEL}' of {loaded.name} has the name of the channel that carries the recipe",
            file=loaded.dir / "recipe.yaml",
            field="stages",
            fix=f"rename the stage (any name but '{RECIPE_CHANNEL}')",
        )
    unknown = sorted(set(data or {}) - set(stages))
    if unknown:
        raise FtkitError.one(
            f"--data names no stage of {loaded.name}: {unknown}",
            field="--data",
            fix=f"use STAGE=s3://… with a stage of {', '.join(stages)}",
        )
    prefix = (s3_prefix or PLACEHOLDER_PREFIX).rstrip("/")
    run_id = run_id or f"{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    base = f"{prefix}/{loaded.name}/{run_id}"
    hyperparameters = {"recipe": loaded.name, "profile": run.profile, FINGERPRINT_KEY: source.fingerprint}
    hyperparameters |= dict(item.split("=", 1) for item in run.sets)  # strings, as SageMaker passes them
    max_run = int(max_run_hours * 3600)
    estimator: dict[str, Any] = {
        "image_uri": image or image_ref(loaded.recipe.container),
        "role": role or PLACEHOLDER_ROLE,
        "instance_count": instances,
        "instance_type": instance_type,
        "volume_size": volume_gb,
        "max_run": max_run,
        "use_spot_instances": spot,
        **({"max_wait": 2 * max_run} if spot else {}),
        "checkpoint_s3_uri": f"{base}/checkpoints",
        "checkpoint_local_path": "/opt/ml/checkpoints",
        "output_path": f"{base}/output",
        "base_job_name": _job_name(loaded.name),
        "container_entry_point": ENTRYPOINT,
        "hyperparameters": hyperparameters,
        "environment": {"PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_TELEMETRY": "1"},
    }
    notes = [_recipe_note(source), *_hardware_notes(loaded, instance_type, instances)]
    if instances > 1:
        notes.append(_nodes_note(instances, instance_type))
    if ".amazonaws.com/" not in estimator["image_uri"]:
        notes.append(
            f"SageMaker pulls training images from Amazon ECR: push {estimator['image_uri']} to ECR and "
            "pass --image <account>.dkr.ecr.<region>.amazonaws.com/…"
        )
    inputs: dict[str, str] = {}
    uploads: dict[str, str] = {}
    if source.carried:
        inputs[RECIPE_CHANNEL] = f"{base}/{RECIPE_CHANNEL}/"
        uploads[str(source.local_dir)] = f"{base}/{RECIPE_CHANNEL}/{loaded.name}"
    for stage in stages:
        if data and stage in data:
            inputs[stage] = data[stage]
        elif local := _local_dataset(loaded, stage, run):
            inputs[stage] = f"{base}/data/{stage}/"
            notes.append(f"channel '{stage}': upload the stage's dataset ({local} or your own) to {inputs[stage]}")
        else:
            notes.append(f"stage '{stage}' reads its Hub dataset; pass --data {stage}=s3://… to train on your own")
    if role is None:
        notes.append("role: pass --role with your SageMaker execution role ARN")
    if s3_prefix is None:
        notes.append("S3: pass --s3-prefix s3://your-bucket/prefix (checkpoints, outputs and data go under it)")
    notes.append("HF_TOKEN is read from your environment at launch (gated base models); it is never printed")
    return SageMakerJob(estimator, inputs, list(SECRETS), notes, uploads, source.to_dict())


def _recipe_note(source: RecipeSource) -> str:
    if source.carried:
        return (
            f"recipe: {source.local_dir} is carried as the '{RECIPE_CHANNEL}' input channel ({source.reason}); "
            f"the printed S3Uploader.upload copies it, and the job runs it from "
            f"/opt/ml/input/data/{RECIPE_CHANNEL}/{source.name}/"
        )
    return image_copy_note(source, "the job")


def render_python(job: SageMakerJob) -> str:
    """Python that creates the estimator and starts the job; secrets come from the environment at run time."""
    lines = ["import os", "", "from sagemaker.estimator import Estimator"]
    lines += ["from sagemaker.s3 import S3Uploader"] if job.uploads else []
    lines += ["", "estimator = Estimator("]
    for key, value in job.estimator.items():
        text = pprint.pformat(value, width=100, sort_dicts=False)
        if key == "environment" and job.secrets:
            extra = ", ".join(f"{name!r}: os.environ[{name!r}]" for name in job.secrets)
            text = text[:-1] + (", " if value else "") + extra + "}"
        lines.append(f"    {key}=" + text.replace("\n", "\n    ") + ",")
    lines.append(")")
    for local, uri in job.uploads.items():  # the recipe folder the image does not hold, before the job starts
        lines.append(f"S3Uploader.upload({local!r}, {uri!r})")
    inputs = pprint.pformat(job.inputs, width=100, sort_dicts=False) if job.inputs else ""
    lines.append(f"estimator.fit({inputs}{', ' if inputs else ''}wait=False)")
    lines.append("print(estimator.latest_training_job.name)")
    return "\n".join(lines) + "\n"


def launch(job: SageMakerJob) -> str:
    """Upload a carried recipe, then start the job with the `sagemaker` SDK and the caller's AWS credentials;
    returns the job name."""
    if job.estimator["role"] == PLACEHOLDER_ROLE or PLACEHOLDER_PREFIX in job.estimator["checkpoint_s3_uri"]:
        raise FtkitError.one(
            "--launch needs a real role and S3 prefix",
            field="--role/--s3-prefix",
            fix="pass --role arn:aws:iam::…:role/… and --s3-prefix s3://bucket/prefix",
        )
    secrets = require_env(job.secrets, "export {name}=… (a Hugging Face token)")
    otherwise = "or run the printed code where it is"
    sdk = import_sdk("sagemaker.estimator", "--launch", "sagemaker", otherwise)
    s3 = import_sdk("sagemaker.s3", "--launch", "sagemaker", otherwise) if job.uploads else None
    kwargs = dict(job.estimator)
    kwargs["environment"] = {**kwargs["environment"], **secrets}
    with provider_call("SageMaker", "--launch", "check AWS credentials (aws sts get-caller-identity), the role "
                       "and the region"):  # fmt: skip
        for local, uri in job.uploads.items():
            s3.S3Uploader.upload(local, uri)
        estimator = sdk.Estimator(**kwargs)
        estimator.fit(job.inputs or None, wait=False)
    return str(estimator.latest_training_job.name)
