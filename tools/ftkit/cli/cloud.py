"""`ftkit cloud sagemaker|runpod`: print (or, with --launch/--create, start) a recipe's cloud run."""

from __future__ import annotations

import argparse
from typing import Any

from ftkit.cli.console import consoles, print_json, say
from ftkit.errors import FtkitError


def _notes(notes: list[str]) -> None:
    console, _ = consoles()
    for note in notes:
        say(console, ("note", "yellow"), f": {note}")


def _run(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The recipe, the run, and which copy of the recipe the job runs (the image's, or the folder carried)."""
    from ftkit.cloud.carry import recipe_source
    from ftkit.cloud.settings import CloudRun
    from ftkit.recipes.load import load_recipe

    loaded = load_recipe(args.recipe, check_profiles=False)
    source = recipe_source(loaded.dir, loaded.name, args.carry_recipe, args.image_commit)
    return loaded, CloudRun(loaded.name, args.profile, list(args.set or [])), source


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise FtkitError.one(f"{flag} '{item}' is not STAGE=URI", field=flag, fix=f"{flag} sft=s3://bucket/sft/")
        out[key] = value
    return out


def cmd_cloud_sagemaker(args: argparse.Namespace) -> int:
    from ftkit.cloud.sagemaker import launch, render_python, sagemaker_job

    loaded, run, source = _run(args)
    job = sagemaker_job(
        loaded,
        run,
        instance_type=args.instance_type,
        image=args.image,
        role=args.role,
        s3_prefix=args.s3_prefix,
        data=_pairs(args.data, "--data"),
        spot=args.spot,
        max_run_hours=args.max_run_hours,
        volume_gb=args.volume_gb,
        run_id=args.run_id,
        source=source,
    )
    name = launch(job) if args.launch else None
    if args.json:
        print_json({**job.to_dict(), "python": render_python(job), "launched": name})
    else:
        print(render_python(job), end="")
        _notes(job.notes)
        if name:
            say(consoles()[0], f"launched training job {name}")
    return 0


def cmd_cloud_runpod(args: argparse.Namespace) -> int:
    from ftkit.cloud.runpod import create, pod_template, volume_upload_command

    loaded, run, source = _run(args)
    template, notes = pod_template(
        loaded,
        run,
        gpu_type=args.gpu_type,
        image=args.image,
        volume_gb=args.volume_gb,
        container_disk_gb=args.container_disk_gb,
        cloud_type=args.cloud_type,
        source=source,
        network_volume=args.network_volume,
        data_center=args.data_center,
    )
    pod = create(template, args.recipe_on_volume) if args.create else None
    if args.json:
        upload = volume_upload_command(source, args.network_volume, args.data_center) if source.carried else None
        recipe = source.to_dict()
        print_json({"template": template, "notes": notes, "recipe": recipe, "upload": upload, "created": pod})
    else:
        print_json(template)
        _notes(notes)
        if pod:
            say(consoles()[0], f"created pod {pod}")
    return 0


def register(sub: Any) -> None:
    cloud = sub.add_parser(
        "cloud",
        help="run a recipe on SageMaker or RunPod: print the launch (or start it)",
        description="The container runs `python -m ftkit.cloud.entrypoint`, which reads the recipe, profile and "
        "--set values from SageMaker's hyperparameters or the pod's RECIPE/PROFILE/SET, saves checkpoints where "
        "the platform keeps them, and resumes after a restart.",
    )
    csub = cloud.add_subparsers(dest="cloud_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("recipe", help="recipe name (a folder under recipes/) or path")
        p.add_argument("--profile", default="full", help="recipe profile (default full)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="engine-config override, as recipe run")
        p.add_argument("--image", help="image URI (default: the recipe's container, image:tag@digest)")
        p.add_argument(
            "--carry-recipe",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="carry the local recipe folder into the job (default: only when the image does not hold it: a fork, "
            "or changed since --image-commit); --no-carry-recipe refuses such a recipe",
        )
        p.add_argument("--image-commit", metavar="REV", help="the commit the image was built from (default HEAD)")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = csub.add_parser("sagemaker", help="the sagemaker Estimator call (managed spot, checkpoints in S3)")
    common(p)
    p.add_argument("--instance-type", default="ml.g5.2xlarge")
    p.add_argument("--role", help="SageMaker execution role ARN")
    p.add_argument("--s3-prefix", help="s3://bucket/prefix for checkpoints, outputs and data channels")
    p.add_argument("--data", action="append", metavar="STAGE=S3_URI", help="a stage's dataset (input channel)")
    p.add_argument(
        "--spot",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="managed spot training (default on; a reclaimed job resumes from its checkpoints)",
    )
    p.add_argument("--max-run-hours", type=float, default=24.0)
    p.add_argument("--volume-gb", type=int, default=200)
    p.add_argument("--run-id", help="names the run's S3 folder (default: the time); reuse it only to resume")
    p.add_argument("--launch", action="store_true", help="start the job (needs the sagemaker SDK and AWS credentials)")
    p.set_defaults(func=cmd_cloud_sagemaker)

    p = csub.add_parser("runpod", help="the RunPod pod template (JSON)")
    common(p)
    p.add_argument("--gpu-type", help="RunPod GPU type id (default: suggested from the recipe's hardware block)")
    p.add_argument("--volume-gb", type=int, default=200, help="the volume at /workspace (runs, checkpoints)")
    p.add_argument("--container-disk-gb", type=int, default=50)
    p.add_argument("--cloud-type", default="SECURE", choices=["SECURE", "COMMUNITY"])
    p.add_argument("--network-volume", metavar="ID", help="network volume id: carries a recipe the image lacks")
    p.add_argument("--data-center", metavar="DC", help="the network volume's data center (its S3 endpoint)")
    p.add_argument("--create", action="store_true", help="create the pod (needs the runpod SDK and RUNPOD_API_KEY)")
    p.add_argument("--recipe-on-volume", action="store_true", help="with --create: the carried recipe was copied")
    p.set_defaults(func=cmd_cloud_runpod)
