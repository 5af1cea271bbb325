"""The engine interface and what all engines share: running the trainer as a logged subprocess.

An engine turns a resolved stage config into a training process and reads back what it logged.
The runner (ftkit.pipeline.run) owns everything else: profiles, overrides, data checks, metrics.
"""

from __future__ import annotations

import json
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

from ftkit.cluster import SINGLE, Cluster
from ftkit.dotted_keys import get_path, has_path
from ftkit.engines.facts import EngineFacts
from ftkit.engines.forward_sigterm import ForwardSignals
from ftkit.errors import Problem
from ftkit.yaml_load import LocatedYaml

_SPLIT_SLICE = re.compile(r"(\[[^\]]*\])\s*$")  # the `[:16]` of `train[:16]`

REPORT_BACKENDS = ("none", "tensorboard", "wandb", "mlflow")
HISTORY_FILE = "history.jsonl"
HISTORY_ENV = (
    "FTKIT_HISTORY_FILE"  # where the training process appends its log records (ftkit.engines.trainer_callbacks)
)
_PROGRESS = re.compile(rb"(\d+)/(\d+) \[")


@dataclass
class StageContext:
    recipe_name: str
    stage: str
    stage_dir: Path
    recipe_dir: Path
    device: str  # "cpu" or "cuda"
    gpus: int
    # Where the trainer writes its checkpoints and final adapter, and the history: default `stage_dir/output`
    # (history in stage_dir); on SageMaker `/opt/ml/checkpoints/<stage>`, which survives a spot restart.
    checkpoint_dir: Path | None = None
    # Training processes per node (one per GPU; on CPU, gloo processes). None: one per GPU of `gpus`, at least one.
    processes: int | None = None
    cluster: Cluster = SINGLE  # this machine's place in a multi-node run; its processes are `local_processes`

    @property
    def local_processes(self) -> int:
        """Training processes on this machine."""
        return self.processes or max(1, self.gpus)

    @property
    def world_size(self) -> int:
        """Training processes of the whole run, every node's."""
        return self.cluster.world_size(self.local_processes)

    @property
    def log_path(self) -> Path:
        return self.stage_dir / "train.log"

    @property
    def output_dir(self) -> Path:
        return self.checkpoint_dir or self.stage_dir / "output"

    @property
    def history_path(self) -> Path:
        return (self.checkpoint_dir or self.stage_dir) / HISTORY_FILE


@dataclass
class ProcessResult:
    returncode: int
    max_rss_bytes: int
    wall_seconds: float
    signal: str | None = None  # a stop signal this process received (and forwarded) while the child ran


# Warnings a library raises on every step about another library's deprecated API, which no recipe can act on:
# DeepSpeed ZeRO's collectives print one per call (about 3,000 lines of a 9,000-line smoke log), because other
# code's `warnings.catch_warnings()` keeps resetting Python's shown-once registry.
QUIET_WARNINGS = (
    "ignore:`torch.distributed.reduce_scatter_tensor` is deprecated:FutureWarning",
    "ignore:`torch.distributed.all_gather_into_tensor` is deprecated:FutureWarning",
)


def quiet_warnings(existing: str) -> str:
    """PYTHONWARNINGS for a training process: ours first, so that the user's own filters (later) win."""
    return ",".join(p for p in (*QUIET_WARNINGS, existing) if p)


def run_logged(
    cmd: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    append: bool = False,
    launcher: bool = False,
) -> ProcessResult:
    """Run `cmd`, tee its output into `log_path` (appended to with `append`), report tqdm progress, return exit
    code and peak RSS. SIGTERM to this process while the child runs is forwarded to it
    (`ftkit.engines.forward_sigterm`), or, when the child is a `launcher` of several ranks, to the ranks."""
    start = time.monotonic()
    full_env = {**os.environ, **(env or {})}
    with log_path.open("ab" if append else "wb") as log, ForwardSignals(to_ranks=launcher) as forward:
        if append:
            log.write(f"\n===== ftkit: resumed {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n".encode())
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env)
        forward.attach(proc.pid)
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(65536):
            log.write(chunk)
            log.flush()
            if on_progress and (found := _PROGRESS.findall(chunk)):
                done, total = found[-1]
                on_progress(int(done), int(total))
        # wait4 gives this child's own resource usage (ru_maxrss in KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
        forward.detach()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return ProcessResult(proc.returncode, usage.ru_maxrss * 1024, time.monotonic() - start, forward.received)


def distributed_env(device: str, processes: int) -> dict[str, str]:
    """Environment of a multi-process launch. Axolotl execs `torchrun` by name: the interpreter's bin directory
    (the venv's) goes first on PATH. On CPU each rank gets its share of the cores (torch would give every rank all
    of them, and two ranks on two cores then fight over them)."""
    env = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    if device == "cpu":
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    return env


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def absolutize(path: str, base: Path) -> str:
    """A relative path that exists under `base` becomes absolute; anything else (a hub id) is kept."""
    candidate = base / path
    return str(candidate.resolve()) if not Path(path).is_absolute() and candidate.exists() else path


class Engine(ABC):
    """One training engine. Subclasses are small: config keys, command line, log format."""

    name: ClassVar[str]
    base_model_key: ClassVar[str]  # dotted path of the base model in the engine config
    trust_remote_code_key: ClassVar[str]
    resume_key: ClassVar[str]  # dotted path of the checkpoint to resume training from

    @abstractmethod
    def validate(self, cfg: dict[str, Any], source: LocatedYaml | None, label: str) -> list[Problem]:
        """Schema problems of an engine config (unknown keys, wrong types), located in `source`."""

    def quick_check(self, cfg: dict[str, Any], source: LocatedYaml | None, label: str) -> list[Problem]:
        """The problems of `validate` found without importing the engine (unknown keys, from the stored key lists
        of `ftkit.engines.known_keys`): checked first, so a typo is answered in a second. None by default."""
        return []

    @abstractmethod
    def runtime_overrides(self, cfg: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        """Keys the runner sets for this run: output dir, absolute data paths, caches."""

    @abstractmethod
    def report_overrides(self, backend: str, ctx: StageContext) -> dict[str, Any]:
        """Keys that send training logs to a backend (tensorboard, wandb, mlflow, none)."""

    @abstractmethod
    def command(self, config_path: Path, ctx: StageContext) -> list[str]:
        """The command line that trains from a written config file."""

    def config_keys(self) -> frozenset[str]:
        """Top-level keys the engine's config schema knows (empty: not known). `--set a.b=…` uses them to tell a
        nested engine key from a mistyped stage name."""
        return frozenset()

    def history(self, ctx: StageContext) -> list[dict[str, float]]:
        """Logged records (train steps, evals, the final summary) as floats, in order, each with its `step`:
        what `ftkit.engines.trainer_callbacks.HistoryLog` appended to `ctx.history_path` in the training process."""
        return read_history(ctx.history_path)

    @abstractmethod
    def dataset_paths(self, cfg: dict[str, Any]) -> list[str]:
        """Dataset locations the config trains on (local files or hub ids)."""

    @abstractmethod
    def sequence_len(self, cfg: dict[str, Any]) -> int | None:
        """The training sequence length (tokens) the config truncates rows to."""

    def drops_long_rows(self, cfg: dict[str, Any]) -> bool:
        """Whether a row longer than the sequence length is left out of training (else it is cut to fit)."""
        return False

    @abstractmethod
    def engine_facts(self, cfg: dict[str, Any]) -> EngineFacts:
        """What the config says about the stage, in engine-neutral names and with this engine's defaults; the
        estimator maps it to its setting (`ftkit.estimate.from_engine`)."""

    def env(self, ctx: StageContext) -> dict[str, str]:
        return {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", HISTORY_ENV: str(ctx.history_path),
                "PYTHONWARNINGS": quiet_warnings(os.environ.get("PYTHONWARNINGS", ""))}  # fmt: skip

    def adapter_dir(self, ctx: StageContext) -> Path:
        return ctx.output_dir

    def base_model(self, cfg: dict[str, Any]) -> str:
        return str(get_path(cfg, self.base_model_key))

    def trusts_remote_code(self, cfg: dict[str, Any]) -> bool:
        return has_path(cfg, self.trust_remote_code_key) and bool(get_path(cfg, self.trust_remote_code_key))

    def local_dataset_keys(self, cfg: dict[str, Any], path: str, index: int = 0) -> dict[str, Any]:
        """The dotted keys that make dataset `index` of `cfg` the local file `path`: the entry's `path`, and its
        `split` renamed to `train` where it names one (a local JSONL/Parquet file has only that split), keeping a
        slice: `train_prefs` -> `train`, `train[:16]` stays (the profile's amount of data). Both engines keep a
        dataset as a mapping with `path` (Axolotl `datasets.N`, TRL `dataset`). IndexError if none."""
        wanted = self.dataset_paths(cfg)
        entries = [key for key, entry in _mappings_with_path(cfg, "") if str(entry["path"]) in wanted]
        key = entries[index]
        out: dict[str, Any] = {f"{key}.path": path}
        if "split" in (entry := get_path(cfg, key)):
            out[f"{key}.split"] = "train" + (m.group(1) if (m := _SPLIT_SLICE.search(str(entry["split"]))) else "")
        return out

    def train(
        self,
        config_path: Path,
        ctx: StageContext,
        on_progress: Callable[[int, int], None] | None = None,
        append_log: bool = False,
    ) -> ProcessResult:
        """Train from a written config; exit code `ExitCode.INTERRUPTED` when SIGTERM stopped it at a checkpoint."""
        return run_logged(self.command(config_path, ctx), ctx.log_path, self.env(ctx), on_progress, append_log,
                          launcher=ctx.world_size > 1)  # fmt: skip


def read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _mappings_with_path(value: Any, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    """(dotted key, mapping) of every mapping under `value` that has a `path` key, in document order."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(value, dict) and prefix and "path" in value:
        found.append((prefix, value))
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        found += _mappings_with_path(child, f"{prefix}.{key}" if prefix else str(key))
    return found
