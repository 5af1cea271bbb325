"""Which metric bounds a fork's changes invalidate, and the honest replacement for each.

A bound was measured (or judged) for one base model and one dataset per stage. When a fork changes
what a stage of a profile trains (its resolved base model or dataset paths), or what the stage
starts from (`init_from`), the bounds of that stage in that profile become estimates, with a note.
"""

from __future__ import annotations

from typing import Any

from ftkit.engines import get_engine
from ftkit.recipes.load import LoadedRecipe
from ftkit.recipes.resolve import resolve_stage
from ftkit.recipes.schema import Bound

StageKey = tuple[str, str]  # (profile, stage)


def stage_inputs(loaded: LoadedRecipe) -> dict[StageKey, tuple[str, tuple[str, ...]]]:
    """(base model, dataset paths) each stage trains on, per profile, as its engine config resolves."""
    engine = get_engine(loaded.recipe.engine)
    out = {}
    for profile in loaded.recipe.profiles:
        for stage in loaded.recipe.stages:
            cfg = resolve_stage(loaded, stage.name, profile).config
            out[(profile, stage.name)] = (engine.base_model(cfg), tuple(engine.dataset_paths(cfg)))
    return out


def changed_stages(
    before: dict[StageKey, tuple[str, tuple[str, ...]]],
    after: dict[StageKey, tuple[str, tuple[str, ...]]],
    init_from: dict[str, str | None],
) -> dict[StageKey, list[str]]:
    """Why each (profile, stage) trains on something else now; stages in `init_from`'s order."""
    out: dict[StageKey, list[str]] = {}
    for (profile, stage), (base, data) in after.items():
        old_base, old_data = before[(profile, stage)]
        reasons = []
        if base != old_base:
            reasons.append(f"base model {base} (was {old_base})")
        if data != old_data:
            reasons.append(f"stage {stage} trains on {', '.join(data) or 'nothing'} (was {', '.join(old_data)})")
        parent = init_from.get(stage)
        if parent and (profile, parent) in out and not reasons:
            reasons.append(f"it starts from stage {parent}, which changed")
        if reasons:
            out[(profile, stage)] = reasons
    return out


def as_estimate(bound: Bound, source: str, reasons: list[str]) -> dict[str, Any]:
    """The bound kept as a judgement (`source: estimate`) with a note saying why it is no longer measured."""
    why = f"forked from {source} with {'; '.join(reasons)}"
    if bound.source == "measured" and bound.measured is not None:
        m = bound.measured
        note = (f"{why}: the value measured for {source} ({m.value:g}, commit {m.commit[:7]}, {m.date}) does not "
                "apply here; this bound is a judgement until a run of this recipe measures it")  # fmt: skip
    else:
        note = f"{why}; the source's estimate" + (f" said: {bound.note}" if bound.note else " had no note")
    out: dict[str, Any] = {k: v for k, v in (("min", bound.min), ("max", bound.max)) if v is not None}
    return out | {"source": "estimate", "note": note}


def estimate_changes(loaded: LoadedRecipe, changed: dict[StageKey, list[str]], source: str) -> dict[str, Any]:
    """Dotted expected-metrics.yaml paths -> replacement bounds, for every bound of a changed stage."""
    if loaded.expected is None:
        return {}
    out = {}
    for (profile, stage), reasons in changed.items():
        for metric, bound in loaded.expected.profiles.get(profile, {}).get(stage, {}).items():
            out[f"profiles.{profile}.{stage}.{metric}"] = as_estimate(bound, source, reasons)
    return out
