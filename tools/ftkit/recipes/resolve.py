"""Resolve one stage's engine config for a profile, recording where every changed key came from.

Order (later wins): the stage's engine YAML -> profile base_model -> profile overrides (all
stages) -> profile overrides for the stage -> `--set` -> report_to -> init_from -> runner keys.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ftkit.dotted_keys import get_path, has_path, set_path
from ftkit.engines import get_engine
from ftkit.engines.base import REPORT_BACKENDS, StageContext
from ftkit.errors import FtkitError, Problem
from ftkit.recipes.load import LoadedRecipe


@dataclass
class Change:
    key: str
    old: Any
    new: Any
    origin: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "from": self.old, "to": self.new, "origin": self.origin}


@dataclass
class ResolvedStage:
    name: str
    config: dict[str, Any]
    changes: list[Change] = field(default_factory=list)

    def set(self, key: str, value: Any, origin: str) -> None:
        old = get_path(self.config, key) if has_path(self.config, key) else None
        set_path(self.config, key, copy.deepcopy(value))
        self.changes.append(Change(key, old, value, origin))


@dataclass
class SetOverrides:
    """`--set` values split into global keys, per-stage keys and the report backend."""

    common: dict[str, Any] = field(default_factory=dict)
    per_stage: dict[str, dict[str, Any]] = field(default_factory=dict)
    report_to: str | None = None


def config_heads(loaded: LoadedRecipe) -> set[str]:
    """Top-level engine-config keys a `--set a.b=…` may reach into: those of any stage's engine YAML and of the
    profiles' overrides (the engine schema's keys are asked for only when these do not have it)."""
    heads = {str(k) for files in loaded.stages if isinstance(files.config.data, dict) for k in files.config.data}
    for profile in loaded.recipe.profiles.values():
        heads |= {str(k).partition(".")[0] for k in profile.overrides}
        heads |= {str(k).partition(".")[0] for keys in profile.stages.values() for k in keys}
    return heads


def _unknown_stage(key: str, value: Any, stage_names: list[str], recipe: str) -> FtkitError:
    """The error for `--set nosuchstage.key=…`: it names the unknown stage, the recipe's stages, and the form
    that sets the key for every stage."""
    head, _, rest = key.partition(".")
    shown = value if isinstance(value, str) else json.dumps(value, default=str)
    near = difflib.get_close_matches(head, stage_names, n=1)
    stage = near[0] if near else stage_names[0] if stage_names else "STAGE"
    return FtkitError.one(
        f"--set {key}={shown}: '{head}' is not a stage of {recipe} (stages: {', '.join(stage_names)}); "
        f"for an engine-config key of every stage write {rest}={shown}",
        field="--set",
        fix=f"{'did you mean ' if near else 'write '}{stage}.{rest}={shown} (stage {stage} only), "
        f"or {rest}={shown} (every stage){'?' if near else ''}",
    )


def route_sets(
    pairs: list[tuple[str, Any]], stage_names: list[str], *, recipe: LoadedRecipe | None = None
) -> SetOverrides:
    """Split `--set` pairs: `STAGE.KEY` for one stage, `report_to`, the rest for every stage. With `recipe`, a
    dotted key whose first part is neither a stage nor a key of an engine config, the profiles or the engine's
    schema is refused as a mistyped stage (exit code 2) rather than written into every stage's config."""
    routed = SetOverrides()
    heads: set[str] | None = None
    for key, value in pairs:
        if key == "report_to":
            if value not in REPORT_BACKENDS:
                raise FtkitError.one(
                    f"report_to={value!r} is not a known backend",
                    field="--set report_to",
                    fix=f"use one of {', '.join(REPORT_BACKENDS)}",
                )
            routed.report_to = value
            continue
        head, _, rest = key.partition(".")
        if head in stage_names and rest:
            routed.per_stage.setdefault(head, {})[rest] = value
            continue
        if recipe is not None and rest:
            heads = config_heads(recipe) if heads is None else heads
            if head not in heads and head not in get_engine(recipe.recipe.engine).config_keys():
                raise _unknown_stage(key, value, stage_names, recipe.name)
        routed.common[key] = value
    return routed


def check_profile(loaded: LoadedRecipe, profile_name: str) -> None:
    """Raise the usage error (exit code 2) for a profile the recipe does not have."""
    if profile_name not in loaded.recipe.profiles:
        raise FtkitError.one(
            f"recipe '{loaded.name}' has no profile '{profile_name}'",
            file=loaded.source.path,
            field="profiles",
            fix=f"use one of {', '.join(loaded.recipe.profiles)}",
        )


def resolve_stage(
    loaded: LoadedRecipe,
    stage_name: str,
    profile_name: str,
    sets: SetOverrides | None = None,
    *,
    model_resolver: Callable[[str], str] = lambda ref: ref,
    init_model: str | None = None,
    ctx: StageContext | None = None,
) -> ResolvedStage:
    recipe = loaded.recipe
    check_profile(loaded, profile_name)
    profile = recipe.profiles[profile_name]
    engine = get_engine(recipe.engine)
    files = loaded.stage_files(stage_name)
    resolved = ResolvedStage(stage_name, copy.deepcopy(files.config.data))
    where = f"recipe.yaml profiles.{profile_name}"
    if profile.base_model:
        resolved.set(engine.base_model_key, model_resolver(profile.base_model), f"{where}.base_model")
    for key, value in profile.overrides.items():
        resolved.set(key, value, f"{where}.overrides")
    for key, value in profile.stages.get(stage_name, {}).items():
        resolved.set(key, value, f"{where}.stages.{stage_name}")
    sets = sets or SetOverrides()
    for key, value in sets.common.items():
        resolved.set(key, value, f"--set {key}")
    for key, value in sets.per_stage.get(stage_name, {}).items():
        resolved.set(key, value, f"--set {stage_name}.{key}")
    if ctx is not None and sets.report_to:
        for key, value in engine.report_overrides(sets.report_to, ctx).items():
            resolved.set(key, value, f"--set report_to={sets.report_to}")
    if init_model is not None:
        stage = recipe.stage(stage_name)
        resolved.set(engine.base_model_key, init_model, f"init_from: {stage.init_from} (merged adapter)")
    if ctx is not None:
        for key, value in engine.runtime_overrides(resolved.config, ctx).items():
            resolved.set(key, value, "runner")
    return resolved


def _origin(resolved: ResolvedStage, key: str | None) -> str | None:
    """Where the value at `key` (or a parent of it) was last set, if not in the engine YAML itself."""
    return next((c.origin for c in reversed(resolved.changes) if key and key.startswith(c.key)), None)


def validate_profiles(loaded: LoadedRecipe, sets: SetOverrides | None = None, *, quick: bool = False) -> list[Problem]:
    """Validate each profile's resolved config (with `--set` values, built-in models not built): the
    engine's schema, and trust_remote_code stays off unless recipe.yaml says why. With `quick`, only the
    engine's checks that import no engine (`Engine.quick_check`: unknown keys)."""
    engine = get_engine(loaded.recipe.engine)
    check = engine.quick_check if quick else engine.validate
    problems: list[Problem] = []
    for profile_name in loaded.recipe.profiles:
        for files in loaded.stages:
            resolved = resolve_stage(loaded, files.stage.name, profile_name, sets)
            label = f"{files.stage.config} as resolved for profile '{profile_name}'"
            found = check(resolved.config, None, label)
            if engine.trusts_remote_code(resolved.config) and not loaded.recipe.trust_remote_code_reason:
                key = engine.trust_remote_code_key
                found.append(
                    Problem(
                        "trust_remote_code is on but the recipe does not say why",
                        str(files.config.path),
                        files.config.line_of(key),
                        key,
                        "turn it off, or set trust_remote_code_reason in recipe.yaml",
                    )
                )
            for p in found:
                if origin := _origin(resolved, p.field):
                    p.message += f" (value set by {origin})"
                    p.file = str(loaded.source.path) if origin.startswith("recipe.yaml") else origin
                    p.line = None
                if not any(q.render() == p.render() for q in problems):
                    problems.append(p)
    return problems
