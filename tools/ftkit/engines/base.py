"""The engine interface and what all engines share: running the trainer as a logged subprocess.

An engine turns a resolved stage config into a training process and reads back what it logged.
The runner (ftkit.recipes.run) owns everything else: profiles, overrides, data checks, metrics.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ftkit.errors import Problem
from ftkit.recipes.overrides import get_path, has_path
from ftkit.yamlio import LocatedYaml

REPORT_BACKENDS = ("none", "tensorboard", "wandb", "mlflow")
_PROGRESS = re.compile(rb"(\d+)/(\d+) \[")


@dataclass
class StageContext:
    recipe_name: str
    stage: str
    stage_dir: Path
    recipe_dir: Path
    device: str  # "cpu" or "cuda"
    gpus: int

    @property
    def log_path(self) -> Path:
        return self.stage_dir / "train.log"

    @property
    def output_dir(self) -> Path:
        return self.stage_dir / "output"


@dataclass
class ProcessResult:
    returncode: int
    max_rss_bytes: int
    wall_seconds: float


def run_logged(
    cmd: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ProcessResult:
    """Run `cmd`, tee its output into `log_path`, report tqdm progress, return exit code and peak RSS."""
    start = time.monotonic()
    full_env = {**os.environ, **(env or {})}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env)
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(65536):
            log.write(chunk)
            log.flush()
            if on_progress and (found := _PROGRESS.findall(chunk)):
                done, total = found[-1]
                on_progress(int(done), int(total))
        # wait4 gives this child's own resource usage (ru_maxrss in KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return ProcessResult(proc.returncode, usage.ru_maxrss * 1024, time.monotonic() - start)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def absolutize(path: str, base: Path) -> str:
    """A relative path that exists under `base` becomes absolute; anything else (a hub id) is kept."""
    candidate = base / path
    return str(candidate.resolve()) if not Path(path).is_absolute() and candidate.exists() else path


def optimizer_kind(name: str) -> str:
    """An HF/Axolotl optimizer name -> the estimator's kind (adamw, adamw_8bit, paged_adamw_8bit, adafactor, sgd)."""
    name = name.lower()
    if "paged" in name and "8bit" in name:
        return "paged_adamw_8bit"
    if "8bit" in name:
        return "adamw_8bit"
    if "adafactor" in name:
        return "adafactor"
    if name.startswith("sgd"):
        return "sgd"
    return "adamw"


class Engine(ABC):
    """One training engine. Subclasses are small: config keys, command line, log format."""

    name: ClassVar[str]
    base_model_key: ClassVar[str]  # dotted path of the base model in the engine config
    trust_remote_code_key: ClassVar[str]

    @abstractmethod
    def validate(self, cfg: dict[str, Any], source: LocatedYaml | None, label: str) -> list[Problem]:
        """Schema problems of an engine config (unknown keys, wrong types), located in `source`."""

    @abstractmethod
    def runtime_overrides(self, cfg: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        """Keys the runner sets for this run: output dir, absolute data paths, caches."""

    @abstractmethod
    def report_overrides(self, backend: str, ctx: StageContext) -> dict[str, Any]:
        """Keys that send training logs to a backend (tensorboard, wandb, mlflow, none)."""

    @abstractmethod
    def command(self, config_path: Path, ctx: StageContext) -> list[str]:
        """The command line that trains from a written config file."""

    @abstractmethod
    def history(self, ctx: StageContext) -> list[dict[str, float]]:
        """Logged records (train steps, evals, the final summary) as floats, in order."""

    @abstractmethod
    def dataset_paths(self, cfg: dict[str, Any]) -> list[str]:
        """Dataset locations the config trains on (local files or hub ids)."""

    @abstractmethod
    def sequence_len(self, cfg: dict[str, Any]) -> int | None:
        """The training sequence length (tokens) the config truncates rows to."""

    @abstractmethod
    def estimate_setting(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """The memory/time estimator's view of the config (`ftkit.estimate.inputs.Setting` fields)."""

    def env(self, ctx: StageContext) -> dict[str, str]:
        return {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}

    def adapter_dir(self, ctx: StageContext) -> Path:
        return ctx.output_dir

    def base_model(self, cfg: dict[str, Any]) -> str:
        return str(get_path(cfg, self.base_model_key))

    def trusts_remote_code(self, cfg: dict[str, Any]) -> bool:
        return has_path(cfg, self.trust_remote_code_key) and bool(get_path(cfg, self.trust_remote_code_key))

    def train(
        self, config_path: Path, ctx: StageContext, on_progress: Callable[[int, int], None] | None = None
    ) -> ProcessResult:
        return run_logged(self.command(config_path, ctx), ctx.log_path, self.env(ctx), on_progress)
