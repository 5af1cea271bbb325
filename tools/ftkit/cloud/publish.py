"""Put what a finished run made where the platform collects it (SageMaker: /opt/ml/model -> model.tar.gz)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

# Trainer checkpoints and the history stay beside the checkpoints; they are not part of the model.
_SKIP_NAMES = ("history.jsonl", "training_args.bin")
_SKIP_DIRS = ("checkpoint-",)


def link_tree(src: Path, dst: Path) -> list[Path]:
    """Hard-link (or copy, across file systems) every file of `src` into `dst`; returns the files written."""
    written = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if not path.is_file() or rel.name in _SKIP_NAMES or any(p.startswith(_SKIP_DIRS) for p in rel.parts):
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
        written.append(target)
    return written


def final_model(metrics: dict[str, Any], last_stage: str) -> Path:
    """The last stage's merged model, or its adapter when the recipe does not merge."""
    stage = metrics["stages"][last_stage]
    return Path(stage.get("merged_dir") or stage["adapter_dir"])


def publish_run(metrics: dict[str, Any], last_stage: str, run_dir: Path, model_dir: Path) -> dict[str, Any]:
    """model_dir gets the final model (merged, else the adapter), the exports (GGUF, AWQ/GPTQ) under export/, and
    metrics.json and report.md under ftkit/. Returns what was written, for metrics and logs."""
    model_dir.mkdir(parents=True, exist_ok=True)
    source = final_model(metrics, last_stage)
    files = link_tree(source, model_dir)
    if (run_dir / "export").is_dir():
        files += link_tree(run_dir / "export", model_dir / "export")
    for name in ("metrics.json", "report.md", "curves.png"):
        if (run_dir / name).is_file():
            files += [target := model_dir / "ftkit" / name]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run_dir / name, target)
    return {"model_dir": str(model_dir), "from": str(source), "files": len(files)}
