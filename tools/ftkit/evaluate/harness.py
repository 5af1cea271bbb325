"""lm-evaluation-harness tasks on a model directory, through lm_eval's Python API.

Task datasets come from the Hugging Face Hub. Without a network the call runs in offline mode
(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), so a task whose dataset is not cached fails at once, by name,
before the model is loaded, instead of hanging on retries.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ftkit.errors import ExitCode, FtkitError, Problem

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}


def env_offline() -> bool:
    return any(os.environ.get(v, "").upper() in _TRUE for v in OFFLINE_VARS)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub (HF_ENDPOINT, default huggingface.co) accepts a TCP connection."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hf_offline(enabled: bool = True) -> Iterator[None]:
    """Offline mode for the Hub, datasets and transformers for the duration of the block, then restored.

    The libraries read the variables when first imported, so their module constants are set as well."""
    if not enabled:
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    saved_env = {v: os.environ.get(v) for v in OFFLINE_VARS}
    targets = [
        (huggingface_hub.constants, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_DATASETS_OFFLINE"),
    ]
    saved = [(mod, name, getattr(mod, name)) for mod, name in targets if hasattr(mod, name)]
    os.environ.update(dict.fromkeys(OFFLINE_VARS, "1"))
    for mod, name, _ in saved:
        setattr(mod, name, True)
    try:
        yield
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def lm_eval_arguments(
    model_dir: str | Path,
    tasks: Sequence[str],
    *,
    limit: int | float | None = None,
    batch_size: int | str = 1,
    dtype: str | None = None,
    device: str | None = None,
    num_fewshot: int | None = None,
    apply_chat_template: bool = False,
) -> dict[str, Any]:
    """The keyword arguments for lm_eval.simple_evaluate (pure). Safe defaults: no remote code."""
    if not tasks:
        raise FtkitError.one("no lm-eval tasks given", field="lm_eval_tasks", fix="name tasks, e.g. arc_easy,hellaswag")
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    model_args = {
        "pretrained": str(model_dir),
        "dtype": dtype or ("auto" if device.startswith("cuda") else "float32"),
        "device": device,
        "trust_remote_code": False,
    }
    return {
        "model": "hf",
        "model_args": model_args,
        "tasks": list(tasks),
        "limit": limit,
        "batch_size": batch_size,
        "num_fewshot": num_fewshot,
        "apply_chat_template": apply_chat_template,
        "log_samples": False,
    }


def _import_lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError as exc:
        raise FtkitError.one(
            f"lm-eval-harness is not installed ({exc})",
            field="lm_eval_tasks",
            fix="pip install lm_eval (0.4.x), or leave lm_eval_tasks out",
            code=ExitCode.ENVIRONMENT,
        ) from exc
    return lm_eval


def _dataset_of(manager: Any, task: str) -> str:
    with contextlib.suppress(Exception):
        config = manager._get_config(task)  # the task's YAML: dataset_path and dataset_name
        return "/".join(str(config[k]) for k in ("dataset_path", "dataset_name") if config.get(k))
    return "?"


def preflight_tasks(manager: Any, tasks: Sequence[str], *, offline: bool) -> dict[str, Any]:
    """Load every task (and its dataset) before the model; a failure names the task and the way out."""
    from lm_eval.tasks import get_task_dict

    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise FtkitError(
            f"unknown lm-eval task(s): {', '.join(unknown)}",
            [
                Problem(
                    f"lm-eval has no task '{t}'",
                    field="lm_eval_tasks",
                    fix="list tasks with `lm-eval ls tasks`, or add include_path for your own task YAML",
                )
                for t in unknown
            ],
        )
    loaded, problems = {}, []
    for task in tasks:
        try:
            loaded.update(get_task_dict([task], manager))
        except Exception as exc:  # datasets raises ConnectionError, FileNotFoundError, DatasetNotFoundError, ...
            mode = "offline (no network: HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1)" if offline else "online"
            problems.append(
                Problem(
                    f"task '{task}' could not load its dataset '{_dataset_of(manager, task)}' ({mode}): "
                    f"{type(exc).__name__}: {str(exc)[:300]}",
                    field="lm_eval_tasks",
                    fix="the dataset must be in the Hugging Face cache (HF_HOME / HF_DATASETS_CACHE, filled once on "
                    "a machine with network) or the Hub must be reachable; or drop the task",
                )
            )
    if problems:
        raise FtkitError("lm-eval task datasets are not available", problems, ExitCode.ENVIRONMENT)
    return loaded


def run_lm_eval(
    model_dir: str | Path,
    tasks: Sequence[str],
    limit: int | float | None = None,
    batch_size: int | str = 1,
    *,
    dtype: str | None = None,
    device: str | None = None,
    num_fewshot: int | None = None,
    apply_chat_template: bool = False,
    include_path: str | Path | None = None,
    include_defaults: bool = True,
    online: bool | None = None,
) -> dict[str, Any]:
    """Run lm-eval tasks on a model dir; returns {"results", "n_samples", "versions", "config", ...}.

    `online` None checks whether the Hub is reachable (unless an *_OFFLINE variable is already set)."""
    started = time.monotonic()
    lm_eval = _import_lm_eval()
    if not (Path(model_dir) / "config.json").is_file():
        raise FtkitError.one(
            f"{model_dir} is not a model directory (no config.json)",
            file=model_dir,
            fix="give the directory written by save_pretrained",
        )
    args = lm_eval_arguments(
        model_dir,
        tasks,
        limit=limit,
        batch_size=batch_size,
        dtype=dtype,
        device=device,
        num_fewshot=num_fewshot,
        apply_chat_template=apply_chat_template,
    )
    if online is None:
        online = not env_offline() and hub_reachable()
    from lm_eval.tasks import TaskManager

    with hf_offline(not online):
        manager = TaskManager(
            include_path=str(include_path) if include_path else None,
            include_defaults=include_defaults,
            metadata=dict(args["model_args"]),  # as simple_evaluate gives its own TaskManager
        )
        preflight_tasks(manager, args["tasks"], offline=not online)
        out = lm_eval.simple_evaluate(**args, task_manager=manager)
    return {
        "tasks": args["tasks"],
        "results": out.get("results", {}),
        "n_samples": out.get("n-samples", {}),
        "versions": out.get("versions", {}),
        "config": {k: v for k, v in args.items() if k != "model_args"} | {"model_args": args["model_args"]},
        "offline": not online,
        "seconds": round(time.monotonic() - started, 2),
    }
