"""One container entrypoint for SageMaker training jobs and RunPod pods: `python -m ftkit.cloud.entrypoint [train]`.

SageMaker (found by `$FTKIT_SM_ROOT/input/config/hyperparameters.json`, root default /opt/ml):
  * hyperparameters.json: `recipe`, `profile` (default full) and any `--set` key (`sft.learning_rate: "1e-4"`);
    every value is a string and goes through the `--set` checks (errors name the hyperparameter);
  * input/data/<stage>/: a channel per stage replaces that stage's dataset (`ftkit.cloud.channels`);
  * checkpoints/<stage>/: the trainer's checkpoints, adapter and history, and checkpoints/metrics.json; SageMaker
    syncs the folder to `checkpoint_s3_uri` and restores it when a managed spot job restarts: the run then resumes
    (finished stages skipped, the stopped one from its last checkpoint);
  * output/data/run/: the run dir (logs, metrics.json, report, resolved configs), uploaded as output.tar.gz;
  * model/: the final merged model (or adapter), its exports and ftkit/metrics.json, uploaded as model.tar.gz;
  * output/failure: the error, when the job fails (SageMaker shows it as the job's FailureReason).

RunPod (found by `$RUNPOD_POD_ID`, or `$RECIPE` with a `$FTKIT_WORKSPACE` folder, default /workspace): env RECIPE,
PROFILE (default full), SET (space-separated KEY=VALUE); runs go to /workspace/runs on the pod's volume, and a pod
that restarts resumes its newest stopped run of the same recipe, profile and SET.

SIGTERM (spot reclaim, StopTrainingJob, pod stop): the stage saves a checkpoint at the end of its current step and the
process exits with 6. Exit codes are `ftkit recipe run`'s: 0 passed, 1 a metrics bound failed, 2 bad
hyperparameters/recipe, 3 invalid data, 4 the engine failed, 5 the machine cannot run it, 6 stopped by SIGTERM at a
checkpoint; 70 an unexpected error (a bug: the traceback is in the log and in output/failure).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftkit.cloud.channels import channel_sets, input_channels
from ftkit.cloud.publish import publish_run
from ftkit.cloud.settings import CloudRun, parse_hyperparameters, parse_runpod_env, validate_run
from ftkit.errors import ExitCode, FtkitError
from ftkit.recipes.load import load_recipe
from ftkit.recipes.resume import METRICS_FILE, RunInterrupted, find_resumable
from ftkit.recipes.run import RunOptions, RunResult, run_recipe

SM_ROOT_ENV = "FTKIT_SM_ROOT"
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


def _gate(result: RunResult) -> int:
    return int(ExitCode.OK if result.passed else ExitCode.METRICS_FAILED)


def _gate_failure(result: RunResult) -> str:
    failed = [f"{r.stage}.{r.metric}: {r.reason}" for r in result.rows if not r.passed]
    return f"metrics gate failed ({result.metrics.get('status')}): " + "; ".join(failed)


def run_sagemaker(root: Path, events: PrintEvents | None = None) -> int:
    """The SageMaker training job: run (or resume) the recipe, publish the model, write output/failure on failure."""
    paths = SageMakerPaths(root)
    events = events or PrintEvents()
    paths.failure.unlink(missing_ok=True)
    try:
        run = parse_hyperparameters(json.loads(paths.hyperparameters.read_text()), paths.hyperparameters)
        loaded = load_recipe(run.recipe, check_profiles=False)
        validate_run(loaded, run, str(paths.hyperparameters))
        sets = run.sets + channel_sets(loaded, run.profile, run.sets, input_channels(paths.data))
        resume = paths.checkpoints if (paths.checkpoints / METRICS_FILE).is_file() else None
        if resume is not None:  # a managed spot restart: the checkpoints came back from S3 (run_recipe checks them)
            events.message(f"resuming the run whose checkpoints are in {resume}")
        opts = RunOptions(run.profile, sets, run_dir=paths.run_dir, checkpoint_dir=paths.checkpoints, resume=resume)
        result = run_recipe(str(loaded.dir), opts, events)
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


def run_runpod(env: Mapping[str, str], events: PrintEvents | None = None) -> int:
    """The pod's job: run the recipe under /workspace/runs, resuming the newest stopped run of the same settings."""
    events = events or PrintEvents()
    try:
        run: CloudRun = parse_runpod_env(env)
        loaded = load_recipe(run.recipe, check_profiles=False)
        validate_run(loaded, run)
        runs = Path(env.get(WORKSPACE_ENV, "/workspace")) / "runs"
        resume = find_resumable(runs, loaded.name, run.profile, run.sets)
        if resume is not None:
            events.message(f"resuming {resume}")
        result = run_recipe(str(loaded.dir), RunOptions(run.profile, run.sets, runs_root=runs, resume=resume), events)
        if not result.passed:
            events.message(_gate_failure(result))
        return _gate(result)
    except FtkitError as exc:
        events.message(f"{'stopped' if isinstance(exc, RunInterrupted) else 'error'}: {exc}")
        return int(exc.code)
    except Exception:
        events.message(traceback.format_exc())
        return UNEXPECTED


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
    if platform == "sagemaker":
        return run_sagemaker(Path(env.get(SM_ROOT_ENV, "/opt/ml")))
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
