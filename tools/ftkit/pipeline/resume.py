"""Resuming a run that stopped: what earlier attempts left (metrics.json, checkpoints, history) and how to continue.

metrics.json is written after the pre-flight and every stage, and mirrored into the checkpoint dir when there is
one. `ftkit recipe run --resume DIR` skips the stages done, continues the stopped one from its last complete
checkpoint (its history cut back to that step) and runs the rest. A run the pre-flight refuses leaves status
`refused` and a `refused` record. In full: docs/resume-and-doctor.md, "`pipeline/resume.py`: what a run leaves and
how it resumes".
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from ftkit.errors import ExitCode, FtkitError, Problem
from ftkit.run_record import METRICS_FILE, PREFLIGHT_CHECKS, REFUSED

DONE = "done"  # a stage's status once it trained (and merged, when a later stage or the export needs it)
RESUMABLE = ("running", "interrupted", "failed")  # run statuses a resume accepts; the others finished training
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
MAX_PROBLEMS = 20  # problems kept in a refusal record (a file of bad rows can have thousands; the count is kept)


class RunInterrupted(FtkitError):
    """SIGTERM stopped the run; metrics.json says where, and `--resume RUN_DIR` continues it."""


def interrupted(stage: str, signal: str | None, checkpoint: Path | None, run_dir: Path) -> RunInterrupted:
    saved = f"checkpoint saved: {checkpoint}" if checkpoint else "no checkpoint yet: the stage starts again"
    fix = f"continue it: ftkit recipe run --resume {run_dir}"
    problem = Problem(f"the run stopped cleanly; {saved}", str(run_dir / METRICS_FILE), None, "status", fix)
    return RunInterrupted(
        f"stopped by {signal or 'a signal'} during '{stage}' ({saved})", [problem], ExitCode.INTERRUPTED
    )


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def read_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / METRICS_FILE
    if not path.is_file():
        raise FtkitError.one(
            f"nothing to resume in {state_dir}: no {METRICS_FILE}",
            file=path,
            field="--resume",
            fix="pass the run dir that `ftkit recipe run` printed (runs/<recipe>/<time>-<profile>/)",
        )
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise FtkitError.one(f"{path} is not valid JSON ({exc})", file=path, fix="resume from another run dir") from exc
    return state


def resume_arguments(
    state_dir: Path, name: str | None, profile: str | None, sets: list[str] | None
) -> tuple[str, str, list[str]]:
    """Recipe, profile and `--set` values of the run to resume; those given must equal the run's own."""
    state = read_state(state_dir)
    run_sets = list(state.get("sets") or []) if sets is None else sets
    return name or str(state["recipe_dir"]), profile or str(state["profile"]), run_sets


def check_resumable(state: dict[str, Any], recipe: str, profile: str, sets: list[str], where: Path) -> None:
    """The state belongs to this recipe, profile and `--set` values, and training is not finished."""
    file = where / METRICS_FILE
    for field, want, have in (("recipe", recipe, state.get("recipe")), ("profile", profile, state.get("profile")),
                              ("sets", sets, state.get("sets") or [])):  # fmt: skip
        if want != have:
            raise FtkitError.one(
                f"cannot resume: the run was started with {field} {have!r}, not {want!r}",
                file=file,
                field=field,
                fix="resume with the run's own recipe, profile and --set values (leave them out), or start a new run",
            )
    if state.get("status") == REFUSED:
        refused = state.get("refused") or {}
        raise FtkitError.one(
            f"cannot resume: {PREFLIGHT_CHECKS.get(refused.get('check', ''), 'the pre-flight')} refused this run "
            f"before training ({refused.get('message', 'no message recorded')}); nothing trained, nothing to resume",
            file=file,
            field="status",
            fix=f"fix what it names (`ftkit doctor {where}` shows it), then start a new run: ftkit recipe run "
            f"{state.get('recipe', 'NAME')} --profile {state.get('profile', 'smoke')}",
        )
    if state.get("status") not in RESUMABLE:
        raise FtkitError.one(
            f"cannot resume: the run's status is {state.get('status')!r}; training finished",
            file=file,
            field="status",
            fix=f"runs with status {', '.join(RESUMABLE)} resume; re-check a finished one with `ftkit metrics check`",
        )


def refusal_record(check: str, stage: str | None, exc: FtkitError) -> dict[str, Any]:
    """What metrics.json keeps of a refused pre-flight: which check (a key of PREFLIGHT_CHECKS) on which stage,
    the error's message, its first problems (each with file, line, field and fix) and the exit code the user got."""
    return {
        "check": check,
        "stage": stage,
        "at": now(),
        "exit_code": int(exc.code),
        "message": exc.title,
        "problems": [p.to_dict() for p in exc.problems[:MAX_PROBLEMS]],
        "problems_total": len(exc.problems),
    }


def stage_done(state: dict[str, Any] | None, stage: str) -> bool:
    return bool(state) and (state or {}).get("stages", {}).get(stage, {}).get("status") == DONE


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete HF Trainer checkpoint (`checkpoint-N` holding trainer_state.json, written last)."""
    if not output_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    complete = [(step, p) for step, p in found if (p / "trainer_state.json").is_file()]
    return max(complete)[1] if complete else None


def checkpoint_step(checkpoint: Path) -> int:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return int(state["global_step"])


def _is_eval(record: dict[str, Any]) -> bool:
    return "loss" not in record and "train_runtime" not in record and any(k.startswith("eval_") for k in record)


def unique_evals(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with one evaluation per step and eval set: a later eval record with the same step and the same
    `eval_*` keys as an earlier one is dropped. Two evaluations at one step scored the same weights (no optimizer step
    between them): Axolotl evaluates again when a resumed process starts, and an engine's final evaluation repeats an
    in-training one at the last step. Several eval sets log different keys (`eval_<name>_loss`): each is kept."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for r in records:
        if _is_eval(r):
            key = (r.get("step"), *sorted(k for k in r if k.startswith("eval_")))
            if key in seen:
                continue
            seen.add(key)
        out.append(r)
    return out


def drop_repeated_evals(path: Path) -> int:
    """Rewrite a history file with `unique_evals`; returns the records dropped."""
    if not path.is_file():
        return 0
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    keep = unique_evals([json.loads(ln) for ln in lines])
    if len(keep) != len(lines):
        path.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    return len(lines) - len(keep)


def trim_history(path: Path, upto_step: int) -> int:
    """Keep the records logged up to the checkpoint's step (the resumed process logs the later ones again) and drop
    the end-of-training summary of the stopped attempt. Returns the records dropped."""
    if not path.is_file():
        return 0
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    keep = [ln for ln in lines if (r := json.loads(ln)).get("step", 0) <= upto_step and "train_runtime" not in r]
    path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")
    return len(lines) - len(keep)


def find_resumable(runs: Path, recipe: str, profile: str, sets: list[str]) -> Path | None:
    """The newest run dir of this recipe under `runs` that stopped before its training finished, started with
    the same profile and `--set` values (a pod that restarts on its volume continues it)."""
    base = runs / recipe
    if not base.is_dir():
        return None
    for run_dir in sorted((p for p in base.iterdir() if (p / METRICS_FILE).is_file()), reverse=True):
        state = read_state(run_dir)
        if state.get("profile") == profile and (state.get("sets") or []) == sets:
            return run_dir if state.get("status") in RESUMABLE else None
    return None
