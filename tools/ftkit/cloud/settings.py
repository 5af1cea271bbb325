"""What to run, from the platform's configuration: SageMaker's hyperparameters.json or RunPod's environment.

Every value becomes a `KEY=VALUE` string and goes through the same checks as `ftkit recipe run --set` (YAML
value parsing, then the engine's schema of every stage's resolved config), with errors naming the hyperparameter
or variable it came from.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftkit.cloud.carry import FINGERPRINT_ENV, FINGERPRINT_KEY
from ftkit.dotted_keys import parse_set
from ftkit.errors import FtkitError, Problem
from ftkit.recipes.load import LoadedRecipe
from ftkit.recipes.resolve import route_sets, validate_profiles

RESERVED = ("recipe", "profile", FINGERPRINT_KEY)  # hyperparameters that are not `--set` overrides
IGNORED_PREFIXES = ("sagemaker_", "_")  # keys SageMaker itself may add (framework estimators, tuning jobs)
DEFAULT_PROFILE = "full"


@dataclass
class CloudRun:
    recipe: str
    profile: str = DEFAULT_PROFILE
    sets: list[str] = field(default_factory=list)  # KEY=VALUE, as `--set` takes them
    source: str = ""  # what set them, for error messages: "hyperparameter", "SET item" ("": `--set`)
    fingerprint: str = ""  # sha256 of the recipe the job was printed for (ftkit.cloud.carry); "": not checked


def _text(value: Any) -> str:
    """SageMaker passes strings; framework estimators JSON-encode them once more ('"full"'); tests may pass JSON."""
    if not isinstance(value, str):
        return json.dumps(value)
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value


def _checked(item: str, field_name: str, file: str | None, what: str) -> str:
    try:
        parse_set([item])
    except FtkitError as exc:
        raise FtkitError.one(
            f"{what} '{field_name}': {exc.problems[0].message if exc.problems else exc.title}",
            file=file,
            field=field_name,
            fix=exc.problems[0].fix if exc.problems else None,
        ) from exc
    return item


def parse_hyperparameters(raw: Any, source: Path) -> CloudRun:
    """hyperparameters.json -> the run: `recipe` (required), `profile` (default full), `recipe_sha256` (the recipe's
    fingerprint, checked by the entrypoint), every other key a `--set`."""
    if not isinstance(raw, Mapping):
        raise FtkitError.one(
            "hyperparameters.json is not a JSON object",
            file=source,
            fix='write {"recipe": "NAME", "profile": "full", "sft.learning_rate": "1e-4"}',
        )
    values = {str(k): _text(v) for k, v in raw.items() if not str(k).startswith(IGNORED_PREFIXES)}
    recipe = values.get("recipe", "").strip()
    if not recipe:
        raise FtkitError.one(
            "no 'recipe' hyperparameter: which recipe should run?",
            file=source,
            field="recipe",
            fix="set hyperparameters={'recipe': 'llama8b-qlora-dpo', ...} on the estimator",
        )
    sets = [
        _checked(f"{key}={value}", key, str(source), "hyperparameter")
        for key, value in values.items()
        if key not in RESERVED
    ]
    profile = values.get("profile", DEFAULT_PROFILE).strip() or DEFAULT_PROFILE
    return CloudRun(recipe, profile, sets, "hyperparameter", values.get(FINGERPRINT_KEY, "").strip())


def parse_runpod_env(env: Mapping[str, str]) -> CloudRun:
    """RECIPE (required), PROFILE (default full), SET: space-separated KEY=VALUE items (shell quoting allowed),
    RECIPE_SHA256 (the recipe's fingerprint, checked by the entrypoint)."""
    recipe = env.get("RECIPE", "").strip()
    if not recipe:
        raise FtkitError.one(
            "environment variable RECIPE is not set: which recipe should run?",
            field="RECIPE",
            fix="set RECIPE=llama8b-qlora-dpo (and PROFILE, SET) in the pod template",
        )
    try:
        items = shlex.split(env.get("SET", ""))
    except ValueError as exc:
        raise FtkitError.one(
            f"SET is not a valid space-separated list ({exc})",
            field="SET",
            fix="quote values with spaces: SET='a=1 b=\"x y\"'",
        ) from exc
    sets = [_checked(item, item.partition("=")[0] or item, None, "environment variable SET, item") for item in items]
    profile = env.get("PROFILE", "").strip() or DEFAULT_PROFILE
    return CloudRun(recipe, profile, sets, "SET item", env.get(FINGERPRINT_ENV, "").strip())


def validate_run(loaded: LoadedRecipe, run: CloudRun, file: str | None = None) -> None:
    """The profile exists and every stage's config, with the overrides, passes the engine's schema; problems name
    the hyperparameter (or SET item) that set the value."""
    if run.profile not in loaded.recipe.profiles:
        raise FtkitError.one(
            f"recipe '{loaded.name}' has no profile '{run.profile}'",
            file=file,
            field="profile",
            fix=f"use one of {', '.join(loaded.recipe.profiles)}",
        )
    sets = route_sets(parse_set(run.sets), [s.name for s in loaded.recipe.stages], recipe=loaded)
    problems = validate_profiles(loaded, sets)
    for p in problems:
        if run.source and p.file and p.file.startswith("--set "):
            key = p.file.removeprefix("--set ")
            p.message = p.message.replace(f"--set {key}", f"{run.source} '{key}'")
            p.file, p.field = file, key
    if problems:
        raise FtkitError(f"{loaded.name}: the overrides make a stage config invalid", _unique(problems))


def _unique(problems: list[Problem]) -> list[Problem]:
    out: list[Problem] = []
    for p in problems:
        if not any(q.render() == p.render() for q in out):
            out.append(p)
    return out
