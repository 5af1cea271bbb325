"""One container entrypoint for SageMaker training jobs and RunPod pods: `python -m ftkit.cloud.entrypoint [train]`.

SageMaker is found by `$FTKIT_SM_ROOT/input/config/hyperparameters.json` (hyperparameters become `--set`s, a channel
per stage replaces its dataset); RunPod by `$RUNPOD_POD_ID` (env RECIPE, PROFILE, SET). A restarted spot job or pod
resumes. A job of several instances (SageMaker's resourceconfig.json, RunPod's NUM_NODES) runs this node of it
(`ftkit.cloud.nodes`); node 0 alone publishes the model. The recipe is the image's or a carried one
(`ftkit.cloud.carry`). Exit codes are `ftkit recipe run`'s, 70 for a bug. The platform contract: docs/cloud.md,
"`cloud/entrypoint.py`: the platform contract", and containers/README.md, "Run".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftkit.cloud.carry import RECIPE_CHANNEL, RECIPE_DIR_ENV, check_copy
from ftkit.cloud.channels import channel_sets, input_channels
from ftkit.cloud.job_user import drop_root, first_unwritable, unwritable_reason
from ftkit.cloud.nodes import RESOURCE_CONFIG, runpod_nodes, sagemaker_nodes
from ftkit.cloud.publish import publish_run
from ftkit.cloud.settings import CloudRun, parse_hyperparameters, parse_runpod_env, validate_run
from ftkit.cluster import SINGLE, Cluster
from ftkit.errors import ExitCode, FtkitError
from ftkit.pipeline.resume import METRICS_FILE, RunInterrupted, find_resumable
from ftkit.pipeline.run import RunOptions, RunResult, run_recipe
from ftkit.recipes.load import RECIPE_FILE, LoadedRecipe, load_recipe

SM_ROOT_ENV = "FTKIT_SM_ROOT"
ENGINE_ENV = "FTKIT_ENGINE"  # set by the engine images (containers/engine/Dockerfile)
GPU_ONLY_ENGINES = {"unsloth": "Unsloth imports only with a CUDA GPU"}
WORKSPACE_ENV = "FTKIT_WORKSPACE"
UNEXPECTED = 70  # EX_SOFTWARE: not one of ftkit's own errors
FAILURE_LIMIT = 1024  # SageMaker keeps the first 1 KiB of output/failure as the FailureReason


@dataclass(frozen=True)
class SageMakerPaths:
    root: Path

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    @property
    def resourceconfig(self) -> Path:
        return self.root / "input" / "config" / RESOURCE_CONFIG

    @property
    def data(self) -> Path:
        return self.root / "input" / "data"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def run_dir(self) -> Path:
        return self.root / "output" / "data" / "run"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"


class PrintEvents:
    """Progress as plain lines on stdout (CloudWatch, pod logs): stage starts and ends, every 5 % of the steps."""

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self.say = say or (lambda text: print(text, flush=True))
        self._last: dict[str, int] = {}

    def message(self, text: str) -> None:
        self.say(text)

    def stage_start(self, stage: str, what: str) -> None:
        self.say(f"== {stage}: {what}")

    def progress(self, stage: str, done: int, total: int) -> None:
        every = max(1, total // 20)
        if done != self._last.get(stage) and (done % every == 0 or done == total):
            self._last[stage] = done
            self.say(f"{stage}: step {done}/{total}")

    def stage_log(self, stage: str, log: Path, history: Path) -> None:
        self.say(f"{stage}: log {log}")

    def stage_end(self, stage: str, metrics: dict[str, Any]) -> None:
        first, tail = (metrics.get(k) for k in ("train_loss_first", "train_loss_tail"))
        loss = f"loss {first:.4g} -> {tail:.4g}" if first is not None and tail is not None else "no loss logged"
        self.say(f"== {stage}: done, {int(metrics.get('steps') or 0)} steps, {loss}")


def detect(env: Mapping[str, str]) -> str | None:
    """'sagemaker', 'runpod', or None when neither platform's configuration is there."""
    if SageMakerPaths(Path(env.get(SM_ROOT_ENV, "/opt/ml"))).hyperparameters.is_file():
        return "sagemaker"
    if env.get("RUNPOD_POD_ID") or (env.get("RECIPE") and Path(env.get(WORKSPACE_ENV, "/workspace")).is_dir()):
        return "runpod"
    return None


def _cuda_available() -> bool:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(torch.cuda.is_available())


def gpu_refusal(env: Mapping[str, str], cuda_available: Callable[[], bool] = _cuda_available) -> str | None:
    """One line saying why this image cannot run here (its engine needs a GPU and none is visible), else None."""
    engine = env.get(ENGINE_ENV, "")
    if engine not in GPU_ONLY_ENGINES or cuda_available():
        return None
    return (
        f"the {engine} image needs an NVIDIA GPU ({GPU_ONLY_ENGINES[engine]}) and this container sees none: "
        f"run it with --gpus all on a GPU host, or run the recipe's smoke profile in the axolotl image"
    )


def job_folders(platform: str, env: Mapping[str, str]) -> list[Path]:
    """The folders a job writes: SageMaker's model/, output/ and checkpoints/; RunPod's runs/ on the volume."""
    if platform == "sagemaker":
        paths = SageMakerPaths(Path(env.get(SM_ROOT_ENV, "/opt/ml")))
        return [paths.model, paths.failure.parent, paths.checkpoints]
    return [Path(env.get(WORKSPACE_ENV, "/workspace")) / "runs"]


def _gate(result: RunResult) -> int:
    return int(ExitCode.OK if result.passed else ExitCode.METRICS_FAILED)


def _gate_failure(result: RunResult) -> str:
    failed = [f"{r.stage}.{r.metric}: {r.reason}" for r in result.rows if not r.passed]
    return f"metrics gate failed ({result.metrics.get('status')}): " + "; ".join(failed)


def carried_recipe(channels: dict[str, Path], name: str) -> Path | None:
    """The recipe folder carried as the `recipe` input channel (`input/data/recipe/<name>/`), taken out of
    `channels` so that the stages' data channels stay; None when the job carries none."""
    channel = channels.get(RECIPE_CHANNEL)
    if channel is None:
        return None
    if (channel / name / RECIPE_FILE).is_file():
        del channels[RECIPE_CHANNEL]
        return channel / name
    if any(channel.rglob(RECIPE_FILE)):
        raise FtkitError.one(
            f"input channel '{RECIPE_CHANNEL}' holds a {RECIPE_FILE}, but not {name}/{RECIPE_FILE}",
            file=channel,
            field=RECIPE_CHANNEL,
            fix=f"upload the folder under {name}/ of the channel's S3 prefix: S3Uploader.upload('recipes/{name}', "
            f"'<channel URI>/{name}'), as `ftkit cloud sagemaker {name}` prints it",
        )
    return None  # a stage's data channel that happens to be named 'recipe'


def _checked_copy(
    loaded: LoadedRecipe, run: CloudRun, carried: bool, fix: str, events: PrintEvents, env: Mapping[str, str]
) -> None:
    """Stop (exit 2) unless the recipe about to run is the one the launcher printed the job for; the image names
    its commit in FTKIT_GIT_COMMIT."""
    commit = env.get("FTKIT_GIT_COMMIT", "")
    sha = check_copy(loaded.dir, run.fingerprint, carried=carried, image_commit=commit, fix=fix)
    whose = "carried into the job" if carried else "the image's copy"
    events.message(f"recipe: {loaded.dir} ({whose}, sha256 {sha[:12]})")


Runner = Callable[[str, RunOptions, Any], RunResult]


def sagemaker_cluster(paths: SageMakerPaths, env: MutableMapping[str, str], events: PrintEvents) -> Cluster:
    """This instance's node of the job (one instance, or no resourceconfig.json: `SINGLE`); the socket interface
    SageMaker names goes into `env`, for torchrun and its ranks."""
    if not paths.resourceconfig.is_file():
        return SINGLE
    try:
        config = json.loads(paths.resourceconfig.read_text())
    except json.JSONDecodeError as exc:
        raise FtkitError.one(f"not JSON: {exc}", file=paths.resourceconfig, fix="SageMaker writes this file") from exc
    cluster, extra = sagemaker_nodes(config, env, str(paths.resourceconfig))
    env.update(extra)
    if cluster.multi:
        events.message(f"cluster: {cluster.describe()}" + (f", {', '.join(f'{k}={v}' for k, v in extra.items())}"
                                                            if extra else ""))  # fmt: skip
    return cluster


def run_sagemaker(
    root: Path,
    events: PrintEvents | None = None,
    runner: Runner | None = None,
    env: MutableMapping[str, str] | None = None,
) -> int:
    """The SageMaker training job: run (or resume) the recipe, publish the model, write output/failure on failure.
    On an instance other than node 0 of a multi-instance job, the run is that node's ranks: nothing is published
    (node 0 writes /opt/ml/model), and an error still goes to this instance's output/failure."""
    paths = SageMakerPaths(root)
    events = events or PrintEvents()
    env = os.environ if env is None else env
    runner = runner or run_recipe
    paths.failure.unlink(missing_ok=True)
    try:
        cluster = sagemaker_cluster(paths, env, events)
        run = parse_hyperparameters(json.loads(paths.hyperparameters.read_text()), paths.hyperparameters)
        channels = input_channels(paths.data)
        carried = carried_recipe(channels, run.recipe)
        loaded = load_recipe(str(carried or run.recipe), check_profiles=False)
        again = (
            "upload the folder again (the printed S3Uploader.upload, a new --run-id) and start the job again"
            if carried
            else f"print the job again with --carry-recipe (ftkit cloud sagemaker {run.recipe} --carry-recipe): "
            "your folder then goes into the job as the 'recipe' channel"
        )
        _checked_copy(loaded, run, carried is not None, again, events, env)
        validate_run(loaded, run, str(paths.hyperparameters))
        sets = run.sets + channel_sets(loaded, run.profile, run.sets, channels)
        resume = paths.checkpoints if (paths.checkpoints / METRICS_FILE).is_file() else None
        if resume is not None:  # a managed spot restart: the checkpoints came back from S3 (run_recipe checks them)
            events.message(f"resuming the run whose checkpoints are in {resume}")
        opts = RunOptions(run.profile, sets, run_dir=paths.run_dir, checkpoint_dir=paths.checkpoints, resume=resume,
                          cluster=cluster)  # fmt: skip
        result = runner(str(loaded.dir), opts, events)
        if not cluster.is_main:
            events.message(f"node {cluster.node_rank}: done; node 0 publishes the model")
            return int(ExitCode.OK)
        published = publish_run(result.metrics, loaded.recipe.stages[-1].name, result.run_dir, paths.model)
        events.message(f"model: {published['from']} -> {published['model_dir']} ({published['files']} files)")
        if not result.passed:
            _write_failure(paths.failure, _gate_failure(result))
        return _gate(result)
    except RunInterrupted as exc:
        events.message(f"stopped: {exc}")
        return int(exc.code)
    except FtkitError as exc:
        events.message(f"error: {exc}")
        _write_failure(paths.failure, str(exc))
        return int(exc.code)
    except Exception:
        text = traceback.format_exc()
        events.message(text)
        _write_failure(paths.failure, f"unexpected error (ftkit bug):\n{text}")
        return UNEXPECTED


def run_runpod(env: Mapping[str, str], events: PrintEvents | None = None, runner: Runner | None = None) -> int:
    """The pod's job: run the recipe under /workspace/runs, resuming the newest stopped run of the same settings.
    A node of a RunPod Instant Cluster (NUM_NODES > 1) runs its node of the run; /workspace must then be a network
    volume all nodes share (the checkpoints and the run are there)."""
    events = events or PrintEvents()
    runner = runner or run_recipe
    try:
        run: CloudRun = parse_runpod_env(env)
        cluster, extra = runpod_nodes(env, f"ftkit-{run.recipe}-{run.profile}")
        os.environ.update(extra)
        if cluster.multi:
            events.message(f"cluster: {cluster.describe()}")
        carried = Path(env[RECIPE_DIR_ENV]) if env.get(RECIPE_DIR_ENV) else None
        loaded = load_recipe(str(_volume_recipe(carried, run.recipe) if carried else run.recipe), check_profiles=False)
        again = (
            "copy the folder to the volume again (the printed `aws s3 sync … --delete`) and restart the pod"
            if carried
            else f"print the pod again with --carry-recipe (ftkit cloud runpod {run.recipe} --carry-recipe "
            "--network-volume ID): your folder then goes onto the network volume"
        )
        _checked_copy(loaded, run, carried is not None, again, events, env)
        validate_run(loaded, run)
        runs = Path(env.get(WORKSPACE_ENV, "/workspace")) / "runs"
        resume = find_resumable(runs, loaded.name, run.profile, run.sets)
        if resume is not None:
            events.message(f"resuming {resume}")
        opts = RunOptions(run.profile, run.sets, runs_root=runs, resume=resume, cluster=cluster)
        result = runner(str(loaded.dir), opts, events)
        if not cluster.is_main:
            return int(ExitCode.OK)
        if not result.passed:
            events.message(_gate_failure(result))
        return _gate(result)
    except FtkitError as exc:
        events.message(f"{'stopped' if isinstance(exc, RunInterrupted) else 'error'}: {exc}")
        return int(exc.code)
    except Exception:
        events.message(traceback.format_exc())
        return UNEXPECTED


def _volume_recipe(folder: Path, name: str) -> Path:
    """RECIPE_DIR: the carried recipe's folder on the network volume, which must hold recipe `name`."""
    fix = (
        f"copy the recipe onto the network volume before the pod starts: the `aws s3 sync` that "
        f"`ftkit cloud runpod {name} --network-volume ID` printed"
    )
    if not (folder / RECIPE_FILE).is_file():
        raise FtkitError.one(f"no {RECIPE_FILE} in {folder} (RECIPE_DIR)", file=folder, field=RECIPE_DIR_ENV, fix=fix)
    if folder.name != name:
        raise FtkitError.one(f"RECIPE_DIR {folder} is not recipe '{name}' (RECIPE)", field=RECIPE_DIR_ENV, fix=fix)
    return folder


def _write_failure(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text[:FAILURE_LIMIT] + ("\n…" if len(text) > FAILURE_LIMIT else ""))


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ftkit.cloud.entrypoint",
        description="Run a recipe as a SageMaker training job or in a RunPod pod (see the module docstring).",
    )
    parser.add_argument("mode", nargs="?", choices=["train"], help="SageMaker starts the container with 'train'")
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    platform = detect(env)
    sm_root = Path(env.get(SM_ROOT_ENV, "/opt/ml"))
    if (refusal := gpu_refusal(env)) is not None:
        print(f"error: {refusal}", file=sys.stderr)
        if platform == "sagemaker":
            _write_failure(SageMakerPaths(sm_root).failure, refusal)
        return int(ExitCode.ENVIRONMENT)
    if platform is not None:
        folders = job_folders(platform, env)
        drop_root(folders, env)
        if (folder := first_unwritable(folders)) is not None:
            print(f"error: {unwritable_reason(folder, platform)}", file=sys.stderr)
            return int(ExitCode.ENVIRONMENT)
    if platform == "sagemaker":
        return run_sagemaker(sm_root)
    if platform == "runpod":
        return run_runpod(env)
    print(
        f"neither SageMaker ({SM_ROOT_ENV} or /opt/ml with input/config/hyperparameters.json) nor RunPod "
        f"(RUNPOD_POD_ID, or RECIPE with {WORKSPACE_ENV} or /workspace) found: nothing to run",
        file=sys.stderr,
    )
    return int(ExitCode.USAGE)


if __name__ == "__main__":
    sys.exit(main())
