"""The model card (README.md with YAML front matter) of an exported model: how it was made, by whom
measured, and the exact command that makes it again. `render_model_card` is a pure function of
`CardFacts`; `card_facts_from_run` gathers them from a run dir of `ftkit recipe run`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ftkit.models import BUILTIN_MODELS
from ftkit.run_record import cell, describe_event, describe_override, gate_overrides, run_events


@dataclass
class CardFacts:
    name: str
    base_model: str  # a hub id where one is known, else the path trained from
    license: str | None = None
    datasets: list[str] = field(default_factory=list)  # hub ids and local files, as the engine read them
    recipe: str | None = None
    profile: str | None = None
    engine: str | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)  # expected-metrics.yaml rows of the run
    provenance: dict[str, Any] = field(default_factory=dict)  # hardware, versions, commit, dates, container
    reproduce: list[str] = field(default_factory=list)  # shell lines
    merge: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    exports: list[dict[str, Any]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    interruptions: list[str] = field(default_factory=list)  # 'when: what' lines: stops, resumes, refused resumes
    overrides: list[str] = field(default_factory=list)  # pre-flight gates passed with --allow-pii or --force


def hub_id(base: str) -> str:
    """The hub id of a built-in model name (or of its materialised dir); other refs as they are."""
    name = Path(base).name if Path(base).is_absolute() else base
    return BUILTIN_MODELS[name].hub_id if name in BUILTIN_MODELS else base


def _is_hub_id(ref: str) -> bool:
    return ref.count("/") == 1 and not Path(ref).exists() and not ref.startswith((".", "/"))


def front_matter(facts: CardFacts) -> dict[str, Any]:
    classifier = (facts.merge or {}).get("task_type") == "SEQ_CLS"  # a reward model scores, it does not generate
    meta: dict[str, Any] = {"base_model": facts.base_model, "library_name": "transformers",
                            "pipeline_tag": "text-classification" if classifier else "text-generation"}  # fmt: skip
    if facts.license:
        meta["license"] = facts.license
    hub_datasets = [d for d in facts.datasets if _is_hub_id(d)]
    if hub_datasets:
        meta["datasets"] = hub_datasets
    meta["tags"] = sorted({"finetune-recipes", *facts.tags})
    if facts.recipe:
        meta["recipe"] = {"name": facts.recipe, "profile": facts.profile, "engine": facts.engine}
    if facts.checks:
        meta["metrics"] = [
            {k: c.get(k) for k in ("stage", "metric", "value", "min", "max", "source", "passed")} for c in facts.checks
        ]
    return meta


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def render_model_card(facts: CardFacts) -> str:
    meta = yaml.safe_dump(front_matter(facts), sort_keys=False, allow_unicode=True).strip()
    prov = facts.provenance
    out = ["---", meta, "---", "", f"# {facts.name}", ""]
    made = f"Fine-tuned from `{facts.base_model}`"
    if facts.recipe:
        made += f" by the finetune-recipes recipe `{facts.recipe}` (profile `{facts.profile}`, engine {facts.engine})"
    out += [made + ".", ""]
    if facts.profile == "smoke":
        out += ["> This is a **smoke** run: a few CPU steps on a small model to check the pipeline. It is not a "
                "useful model; its metrics only say the recipe runs.", ""]  # fmt: skip
    if facts.stages:
        out += ["## Training", ""]
        out += _table(["stage", "method", "base", "steps", "loss first → last", "wall s", "peak GiB"], [
            [s.get("name"), s.get("method"), s.get("base_model"), s.get("steps"),
             f"{cell(s.get('train_loss_first'))} → {cell(s.get('train_loss_tail'))}",
             s.get("wall_seconds"), s.get("peak_memory_gib")] for s in facts.stages
        ])  # fmt: skip
        out.append("")
    if facts.interruptions:
        out += ["Training was interrupted and resumed (the figures above count every attempt):", ""]
        out += [f"- {line}" for line in facts.interruptions] + [""]
    if facts.datasets:
        out += ["Data: " + ", ".join(f"`{d}`" for d in facts.datasets), ""]
    if facts.overrides:
        out += ["## Pre-flight gates overridden", "", "This model was trained past a gate that would have refused "
                "the run:", ""]  # fmt: skip
        out += [f"- {line}" for line in facts.overrides] + [""]
    if facts.checks:
        out += ["## Metrics", "", "Checked against the recipe's `expected-metrics.yaml` after the run:", ""]
        out += _table(["stage", "metric", "value", "min", "max", "bound source", "result"], [
            [c.get("stage"), c.get("metric"), c.get("value"), c.get("min"), c.get("max"), c.get("source"),
             "pass" if c.get("passed") else "FAIL"] for c in facts.checks
        ])  # fmt: skip
        out.append("")
    if facts.evaluation:
        out += ["## Evaluation", "", "```json", _compact_eval(facts.evaluation), "```", ""]
    if facts.merge:
        m = facts.merge
        check = m.get("check") or {}
        full = m.get("kind") == "full"
        line = f"The adapter was merged into the unquantized base in {m.get('dtype')}"
        if full:
            line = f"Full fine-tune (every weight trained, no adapter): the trained weights saved in {m.get('dtype')}"
        if m.get("trained_on_4bit"):
            line += " (it was trained on a 4-bit base; the base was loaded unquantized for the merge)"
        out += ["## Merge" if not full else "## Final weights", "", line + "."]
        if check:
            against = "the trained checkpoint" if full else "base + adapter"
            out.append(f"Verified: logits of this model vs {against} on {check.get('prompts')} prompts: max "
                       f"|diff| {cell(check.get('max_abs_diff'))} (tolerance {cell(check.get('tolerance'))}), top-1 "
                       f"agreement {check.get('top1_agreement', 0):.1%}, "
                       f"{'passed' if check.get('passed') else 'FAILED'}.")  # fmt: skip
        out.append("")
    if facts.exports:
        out += ["## Exports", ""]
        out += _table(["file", "format", "quant", "check"], [
            [e.get("file"), e.get("format"), e.get("quant"), e.get("check")] for e in facts.exports
        ])  # fmt: skip
        out.append("")
    if prov:
        out += ["## Provenance", ""]
        for key in ("hardware", "git_commit", "container", "started", "finished"):
            if prov.get(key):
                out.append(f"- {key.replace('_', ' ')}: {prov[key]}")
        if prov.get("versions"):
            out.append("- versions: " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items()))
        out.append("")
    if facts.reproduce:
        out += ["## Reproduce", "", "```bash", *facts.reproduce, "```", ""]
    return "\n".join(out)


def _compact_eval(evaluation: dict[str, Any]) -> str:
    import json

    keep = {k: v for k, v in evaluation.items() if k not in ("versions",)}
    return json.dumps(keep, indent=1, default=str)[:4000]


def container_ref(container: dict[str, Any] | None) -> str | None:
    if not container or not container.get("image"):
        return None
    ref = f"{container['image']}:{container.get('tag')}"
    return ref + (f"@{container['digest']}" if container.get("digest") else " (digest: not published yet)")


def reproduce_lines(metrics: dict[str, Any], container: dict[str, Any] | None = None) -> list[str]:
    commit = str(metrics.get("git_commit") or "unknown")
    lines = []
    if commit.endswith("-dirty"):
        lines.append(f"# the run had uncommitted changes on top of {commit.removesuffix('-dirty')}")
    lines.append(f"git checkout {commit.removesuffix('-dirty')}")
    make = f"make recipe NAME={metrics.get('recipe')} PROFILE={metrics.get('profile')}"
    if metrics.get("sets"):
        make += " SET=" + shlex.quote(" ".join(metrics["sets"]))
    lines.append(make)
    if container_ref(container):
        lines.append(f"# inside the recipe's container: {container_ref(container)}")
    return lines


def card_facts_from_run(
    metrics: dict[str, Any],
    *,
    license_id: str | None,
    container: dict[str, Any] | None,
    datasets: list[str],
    methods: dict[str, str],
    merge: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    exports: list[dict[str, Any]] | None = None,
) -> CardFacts:
    stages = [{"name": n, "method": methods.get(n), **s} for n, s in (metrics.get("stages") or {}).items()]
    first = stages[0] if stages else {}
    base = hub_id(str(first.get("base_model", "")))
    run_dir = str(metrics.get("run_dir") or "")
    tags = [metrics.get("recipe"), metrics.get("engine"), *methods.values(), *(metrics.get("stages") or {})]
    return CardFacts(
        name=f"{metrics.get('recipe')}-{Path(str(metrics.get('run_dir', 'run'))).name}",
        base_model=base,
        license=license_id,
        datasets=datasets,
        recipe=metrics.get("recipe"),
        profile=metrics.get("profile"),
        engine=metrics.get("engine"),
        stages=stages,
        checks=list(metrics.get("checks") or []),
        provenance={
            "hardware": metrics.get("hardware_label"),
            "git_commit": metrics.get("git_commit"),
            "container": container_ref(container),
            "started": metrics.get("started"),
            "finished": metrics.get("finished"),
            "versions": metrics.get("versions"),
        },
        reproduce=reproduce_lines(metrics, container),
        merge=merge,
        evaluation=evaluation,
        exports=exports or [],
        tags=[str(t) for t in tags if t],
        interruptions=[f"{e.get('at')}: {describe_event(e, run_dir)}" for e in run_events(metrics)],
        overrides=[describe_override(o) for o in gate_overrides(metrics)],
    )
