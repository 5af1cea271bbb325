"""`ftkit cloud sagemaker|runpod|skypilot`: print (or, with --launch/--create, start) a recipe's cloud run."""

from __future__ import annotations

import argparse
from pathlib import Path
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
        instance_count=args.instance_count,
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


def cmd_cloud_skypilot(args: argparse.Namespace) -> int:
    from ftkit.cloud.skypilot import render_yaml, skypilot_task

    loaded, run, source = _run(args)
    task, notes = skypilot_task(
        loaded,
        run,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        accelerator=args.accelerator,
        image=args.image,
        bucket=args.bucket,
        run_id=args.run_id,
        spot=args.spot,
        disk_gb=args.disk_gb,
        source=source,
    )
    text = render_yaml(task)
    if args.output:
        Path(args.output).write_text(text)
    if args.json:
        print_json({"task": task, "yaml": text, "notes": notes, "recipe": source.to_dict(), "written": args.output})
    else:
        print(text, end="")
        _notes(notes + ([f"written to {args.output}: sky launch -c ftkit --secret HF_TOKEN {args.output}"]
                        if args.output else []))  # fmt: skip
    return 0


def register(sub: Any) -> None:
    cloud = sub.add_parser(
        "cloud",
        help="run a recipe on SageMaker, RunPod or SkyPilot: print the launch (or start it)",
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
    p.add_argument("--instance-count", type=int, metavar="N",
                   help="instances (nodes) of the job; each runs one node of the run (default: the profile's nodes, "
                   "hardware.nodes of recipe.yaml)")  # fmt: skip
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

    p = csub.add_parser("skypilot", help="the SkyPilot task YAML (num_nodes GPU VMs on any cloud SkyPilot reaches)")
    common(p)
    p.add_argument("--nodes", type=int, metavar="N", help="num_nodes (default: the profile's nodes)")
    p.add_argument("--gpus-per-node", type=int, metavar="G", help="GPUs per node (default: hardware.gpus)")
    p.add_argument("--accelerator", metavar="NAME",
                   help="SkyPilot's accelerator: H100, A100-80GB (default: from hardware.recommended)")  # fmt: skip
    p.add_argument("--bucket", metavar="URI", help="s3://, gs:// or r2:// prefix mounted on every node for checkpoints")
    p.add_argument("--run-id", help="names the run's checkpoint folder and rendezvous (default: recipe and time)")
    p.add_argument("--spot", action=argparse.BooleanOptionalAction, default=False,
                   help="spot VMs (with `sky jobs launch`, which recovers preempted jobs; default off)")  # fmt: skip
    p.add_argument("--disk-gb", type=int, default=500, help="disk per node (default 500)")
    p.add_argument("--output", "-o", metavar="FILE", help="also write the YAML to FILE")
    p.set_defaults(func=cmd_cloud_skypilot)
