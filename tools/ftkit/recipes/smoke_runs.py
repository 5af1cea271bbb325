"""Each shipped recipe's last passing smoke run (`recipes/smoke-runs.yaml`), and the CI rotation over the catalog.

The record is written by `scripts/smoke_all.py --record` from runs made on a clean checkout; the catalog shows
its date and commit per recipe, so a reader sees when a recipe last passed. `rotation` picks the few recipes one
CI run can afford, so that consecutive commits cycle through the whole catalog.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ftkit.errors import FtkitError

RECORD = "smoke-runs.yaml"
HEADER = (
    "# Each recipe's last smoke run that passed its metrics gate, on a clean checkout (no local changes).\n"
    "# Written by `scripts/smoke_all.py --record` (do not edit by hand); recipes/README.md's catalog shows\n"
    "# the date and commit. metrics: the gated values of the last run; repeats: runs that agreed.\n"
)


class SmokeRun(BaseModel):
    """One recipe's last passing smoke run."""

    model_config = ConfigDict(extra="forbid")

    date: str  # YYYY-MM-DD (UTC) when the run started
    commit: str  # the clean commit it ran at
    wall_s: float  # `ftkit recipe run` as a user runs it, start to exit
    repeats: int = Field(ge=1)  # consecutive runs whose gated metrics agreed
    threads: str  # the thread settings it ran with ("default" when nothing was set)
    hardware: str
    metrics: dict[str, float]  # stage.metric -> value, the gate's metrics


def record_path(root: Path) -> Path:
    return root / RECORD


def load_smoke_runs(root: Path) -> dict[str, SmokeRun]:
    """The record, validated; {} where there is none yet."""
    path = record_path(root)
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    try:
        return {name: SmokeRun.model_validate(entry) for name, entry in data.items()}
    except Exception as exc:  # pydantic's message names the recipe's field
        raise FtkitError.one(f"{path} is not a valid smoke-run record: {exc}", file=path,
                             fix="regenerate it with scripts/smoke_all.py --record") from exc  # fmt: skip


def write_smoke_runs(root: Path, runs: dict[str, SmokeRun]) -> Path:
    path = record_path(root)
    body = {name: runs[name].model_dump() for name in sorted(runs)}
    path.write_text(HEADER + yaml.safe_dump(body, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def gated_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """stage.metric -> value for every bound the run was checked against (metrics.json's `checks`)."""
    return {f"{c['stage']}.{c['metric']}": c["value"] for c in metrics.get("checks", []) if c.get("value") is not None}


def smoke_run_from(metrics: dict[str, Any], wall_s: float, repeats: int, threads: str) -> SmokeRun:
    """The record of one passing run, from its metrics.json."""
    return SmokeRun(
        date=str(metrics["started"])[:10],
        commit=str(metrics["git_commit"]),
        wall_s=round(wall_s, 1),
        repeats=repeats,
        threads=threads,
        hardware=str(metrics.get("hardware_label", "")),
        metrics={k: round(v, 6) for k, v in gated_metrics(metrics).items()},
    )


def disagreements(runs: list[dict[str, float]], rel: float, floor: float) -> list[str]:
    """Gated metrics whose values differ between repeats by more than max(rel x |value|, floor)."""
    found = []
    for key in sorted({k for r in runs for k in r}):
        values = [r.get(key) for r in runs]
        if any(v is None for v in values):
            found.append(f"{key}: missing in a run")
            continue
        spread = max(values) - min(values)  # type: ignore[type-var,operator]
        if spread > max(rel * max(abs(v) for v in values), floor):  # type: ignore[arg-type]
            found.append(f"{key}: {', '.join(f'{v:.4g}' for v in values)}")  # type: ignore[str-format]
    return found


def rotation(names: list[str], index: int, per_run: int) -> tuple[int, int, list[str]]:
    """(slot, slots, the names of this slot): `names` dealt into ceil(n / per_run) slots, slot = index mod slots,
    so any `slots` consecutive indexes run every name once."""
    ordered = sorted(names)
    slots = max(1, math.ceil(len(ordered) / max(per_run, 1)))
    slot = index % slots
    return slot, slots, ordered[slot::slots]
