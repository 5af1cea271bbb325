"""`ftkit plan`: from a goal, a data size and the GPUs at hand to a recipe of the catalog, its settings and why.

The rules (`ftkit.plan.rules`) order the objectives and methods; the recipes are the candidates; the estimator
(`ftkit.estimate`) says which candidate fits the GPUs given and what it costs. `recommend` is pure over its
inputs (candidates come in as data); `recipe_candidates` is the part that reads the recipes. Nodes: one machine is
preferred; with `max_nodes` > 1 a candidate may take the fewest nodes on which it fits and finishes within `hours`,
when no candidate does so on one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftkit.estimate.inputs import Setting
from ftkit.estimate.memory import GIB, estimate_memory
from ftkit.estimate.params import param_count
from ftkit.estimate.preflight import Change, changes_for, suggestions
from ftkit.estimate.specs import Architecture, Gpu
from ftkit.estimate.timecost import FIT_HEADROOM, gpu_options, significant
from ftkit.estimate.tokens import SequenceTokens, StageData
from ftkit.plan.rules import (
    FULL_FT_MIN_ROWS,
    Choice,
    DataKind,
    Goal,
    Hyper,
    hyperparameters,
    methods,
    objectives,
)

OBJECTIVE_OF_STAGES = {
    ("sft",): "sft",
    ("sft", "dpo"): "sft+dpo",
    ("dpo",): "dpo",
    ("orpo",): "orpo",
    ("kto",): "kto",
    ("reward",): "reward",
    ("grpo",): "grpo",
}

# Engine-neutral hyperparameter -> the engine config key (dotted) that sets it, for `--set` on a run.
ENGINE_KEYS: dict[str, dict[str, str]] = {
    "axolotl": {"epochs": "num_epochs", "learning_rate": "learning_rate", "lora_rank": "lora_r",
                "lora_alpha": "lora_alpha", "grad_accum": "gradient_accumulation_steps", "beta": "rl_beta"},
    "trl": {"epochs": "trainer.num_train_epochs", "learning_rate": "trainer.learning_rate", "lora_rank": "lora.r",
            "lora_alpha": "lora.lora_alpha", "grad_accum": "trainer.gradient_accumulation_steps",
            "beta": "trainer.beta"},
}  # fmt: skip
ENGINE_KEYS["unsloth"] = ENGINE_KEYS["trl"]  # the unsloth engine takes the TRL engine's config layout


@dataclass
class CandidateStage:
    stage: str
    arch: Architecture
    setting: Setting
    data: StageData | None = None  # how its engine reads data (sequence length, over-length rule, chat template)


@dataclass
class Candidate:
    """A recipe as the planner sees it."""

    recipe: str
    engine: str
    base_model: str
    objective: str
    method: str
    stages: list[CandidateStage]

    @property
    def params_b(self) -> float:
        return param_count(self.stages[0].arch) / 1e9


@dataclass
class Fit:
    fits: bool
    need_gib: float  # the hungriest stage, per GPU
    parallelism: str
    changes: list[str] = field(default_factory=list)  # pre-flight changes needed to fit (same global batch)


@dataclass
class Plan:
    goal: str
    data: str
    rows: int
    vram_gb: float
    gpus: int
    recipe: str | None
    objective: str | None
    method: str | None
    base_model: str | None
    fit: dict[str, Any] | None
    settings: dict[str, Any]
    sets: list[str]  # `--set KEY=VALUE` for `ftkit recipe run`
    time_cost: dict[str, Any] | None
    why: list[dict[str, Any]]
    warnings: list[str]
    alternatives: list[dict[str, str]]
    commands: list[str]
    nodes: int = 1  # machines of `gpus` GPUs each the recommendation runs on
    max_nodes: int = 1
    hours_budget: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _setting_for(s: Setting, gpus: int) -> Setting:
    """The recipe's setting on `gpus` GPUs: shard with the recipe's own parallelism when there are several,
    replicate (DDP) an unsharded recipe, drop sharding on one GPU."""
    par = s.parallel.strategy
    if gpus == 1:
        par = "none"
    elif par in ("none", "ddp"):
        par = "ddp"
    return s.with_changes(gpus=gpus, parallelism=par)


def _same_run(before: Setting, after: Setting) -> bool:
    """A pre-flight change that keeps what is trained and how: the method, the sequence length, no CPU offload.
    Others (QLoRA, offload, cut rows) are not taken to make a candidate fit: the next method in the rules' order
    is the honest alternative."""
    kept = (after.method, after.batch.seq_len, after.parallel.cpu_offload)
    return kept == (before.method, before.batch.seq_len, before.parallel.cpu_offload)


def _cheap_changes(s: Setting, engine: str | None = None) -> tuple[Change, ...]:
    return tuple((text, f) for text, f in changes_for(engine) if (changed := f(s)) is None or _same_run(s, changed))


def fit_on(c: Candidate, vram_gb: float, gpus: int) -> Fit:
    """Does the candidate fit `gpus` GPUs of `vram_gb` each, as written or after the pre-flight's cheap changes?"""
    worst, parallelism, changes, ok = 0.0, "none", [], True
    for st in c.stages:
        s = _setting_for(st.setting, gpus)
        parallelism = s.parallel.strategy
        need = estimate_memory(st.arch, s).device_total / GIB
        if need > vram_gb * FIT_HEADROOM:
            found = suggestions(st.arch, s, vram_gb, changes=_cheap_changes(s, c.engine))
            if not found:
                ok = False
            else:
                changes += [f"{st.stage}: {x}" for x in found[0].changes]
                need = found[0].need_gib
        worst = max(worst, need)
    return Fit(ok, round(worst, 2), parallelism, changes)


def _size_rank(c: Candidate, rows: int) -> float:
    """Smaller is preferred: ~7-8B models below FULL_FT_MIN_ROWS rows (a 70B needs the data to pay for its
    training and serving), the largest that fits above it."""
    return -c.params_b if rows >= FULL_FT_MIN_ROWS else abs(c.params_b - 8.0)


def _keys(engine: str) -> dict[str, str]:
    return ENGINE_KEYS.get(engine, ENGINE_KEYS["axolotl"])


def run_sets(c: Candidate, hyper: Hyper, gpus: int) -> tuple[dict[str, Any], list[str]]:
    """The recommended settings, engine-neutral, and as `--set` arguments for the candidate's engine. Gradient
    accumulation keeps the global batch at `hyper.global_batch` with the recipe's micro-batch on `gpus` GPUs."""
    micro = c.stages[-1].setting.batch.micro_batch
    accum = max(1, hyper.global_batch // (micro * gpus))
    settings: dict[str, Any] = {
        "epochs": hyper.epochs,
        "learning_rate": hyper.learning_rate,
        "grad_accum": accum,
        "micro_batch": micro,
        "global_batch": micro * accum * gpus,
    }
    if hyper.lora_rank is not None and c.method != "full":
        settings |= {"lora_rank": hyper.lora_rank, "lora_alpha": 2 * hyper.lora_rank}
    if hyper.beta is not None and c.objective in ("dpo", "sft+dpo"):
        settings["beta"] = hyper.beta
    keys = _keys(c.engine)
    # A multi-stage recipe: the settings are for its last stage (the objective's); earlier stages keep theirs.
    prefix = f"{c.stages[-1].stage}." if len(c.stages) > 1 else ""
    sets = [f"{prefix}{keys[name]}={value:g}" for name, value in settings.items() if name in keys]
    return settings, sets


# Counts a dataset's tokens per sequence as a candidate's stages would see them (`ftkit.estimate.tokens`); the CLI
# passes one that reads the user's file, so `recommend` stays pure.
SequenceCounter = Callable[[Candidate], SequenceTokens]


def _time_cost(
    c: Candidate, hyper: Hyper, rows: int, avg_tokens: int, gpus: int, gpu: Gpu | None,
    counted: SequenceTokens | None = None, nodes: int = 1,
) -> dict | None:  # fmt: skip
    """Hours and cost of every stage on `gpus` × `gpu` (all `nodes` together): rows × tokens per sequence ×
    sequences per row × epochs, the tokens per sequence counted from the data where `counted` has them, else
    `avg_tokens`."""
    if gpu is None:
        return None
    total_h, total_tokens, costs, per_seq = 0.0, 0.0, {}, {}
    for st in c.stages:
        s = _setting_for(st.setting, gpus)
        pair = 2 if s.stage in ("dpo", "orpo", "reward") else s.grpo.num_generations if s.stage == "grpo" else 1
        per_seq[st.stage] = counted.per_stage.get(st.stage, avg_tokens) if counted else avg_tokens
        tokens = rows * per_seq[st.stage] * hyper.epochs * pair
        total_tokens += tokens
        [opt] = gpu_options(st.arch, s, tokens, [gpu], nodes)
        if opt.hours is None:
            return None
        total_h += opt.hours
        for provider, usd in opt.costs.items():
            costs[provider] = costs.get(provider, 0.0) + usd
    source = f"{avg_tokens:,} tokens per sequence, as given or assumed (not counted)"
    if counted:
        source = counted.text if counted.per_stage else f"{avg_tokens:,} tokens per sequence; the data {counted.text}"
    return {"gpu": gpu.name, "gpus": gpus, "nodes": nodes, "hours": significant(total_h),
            "cost_usd": {k: significant(v) for k, v in sorted(costs.items(), key=lambda kv: kv[1])},
            "tokens": significant(total_tokens), "tokens_per_sequence": {k: round(v, 2) for k, v in per_seq.items()},
            "tokens_source": source, "tokens_detail": counted.detail if counted else {"method": "--avg-tokens"},
            "source": "estimate (ftkit.estimate: FLOPs at an assumed MFU)"}  # fmt: skip


@dataclass
class _Option:
    """A candidate on the fewest nodes (up to the limit) on which it fits and finishes in time; nodes None: none."""

    nodes: int | None
    fit: Fit
    time_cost: dict | None


def nodes_for(
    c: Candidate, *, vram_gb: float, gpus: int, max_nodes: int, hours: float | None, hyper: Hyper, rows: int,
    avg_tokens: int, gpu: Gpu | None, counted: SequenceTokens | None = None,
) -> _Option:  # fmt: skip
    """The fewest nodes of `gpus` GPUs (1..max_nodes) on which the candidate fits and, with `hours` and a `gpu` for
    the time, finishes within `hours`."""
    fit, tc = Fit(False, 0.0, "none"), None
    for n in range(1, max_nodes + 1):
        fit = fit_on(c, vram_gb, gpus * n)
        if not fit.fits:
            continue
        if hours is None or gpu is None:
            return _Option(n, fit, None)
        tc = _time_cost(c, hyper, rows, avg_tokens, gpus * n, gpu, counted, n)
        if tc is None or tc["hours"] <= hours:
            return _Option(n, fit, tc)
    return _Option(None, fit, tc)


def _why_not(o: _Option, gpus: int, max_nodes: int, vram_gb: float, hours: float | None) -> str:
    where = f"{gpus} GPU(s)" + (f" × up to {max_nodes} nodes" if max_nodes > 1 else "")
    if not o.fit.fits:
        return f"needs ~{o.fit.need_gib:.1f} GiB per GPU on {where}; {vram_gb:g} GB given"
    took = f"~{o.time_cost['hours']:.3g} h" if o.time_cost else "more"
    return f"takes {took} on {where}; --hours {hours:g} given"


def recommend(
    candidates: list[Candidate],
    *,
    goal: Goal,
    data: DataKind,
    rows: int,
    vram_gb: float,
    gpus: int = 1,
    avg_tokens: int = 1000,
    gpu: Gpu | None = None,
    count: SequenceCounter | None = None,
    max_nodes: int = 1,
    hours: float | None = None,
) -> Plan:
    """The first (objective, method) the rules prefer that a recipe implements and the GPUs fit (and, with `hours`,
    finish in time) on one node of `gpus` GPUs; when none does, the candidate that needs the fewest nodes (up to
    `max_nodes`), the rules' order breaking ties. `count`: tokens per sequence of the user's data for the chosen
    recipe (else `avg_tokens` for every sequence)."""
    why: list[dict[str, Any]] = []
    alternatives: list[dict[str, str]] = []
    wanted = objectives(goal, data)
    plan = Plan(goal, data, rows, vram_gb, gpus, None, None, None, None, None, {}, [], None, why, [], alternatives, [],
                1, max_nodes, hours)  # fmt: skip
    if not wanted:
        plan.warnings.append(
            f"goal '{goal}' needs preference data (pairs, unpaired labels or a checkable answer); "
            f"'{data}' carries none: collect chosen/rejected pairs, or pick goal chat/domain/format"
        )
        return plan  # fmt: skip
    if hours is not None and gpu is None:
        plan.warnings.append("--hours is not checked: no catalog GPU gives the time (pass --gpu NAME)")

    def note(choice: Choice, kind: str) -> dict[str, Any]:
        return {"decision": kind, "choice": choice.value, "reason": choice.reason, "source": choice.source}

    def timed(c: Candidate) -> SequenceTokens | None:
        return count(c) if count and gpu and hours is not None else None

    several: list[tuple[int, int, Choice, Choice, Candidate, Hyper, _Option]] = []
    order = 0
    for objective in wanted:
        for method in methods(goal, rows, objective.value):
            found = sorted((c for c in candidates if c.objective == objective.value and c.method == method.value),
                           key=lambda c: _size_rank(c, rows))  # fmt: skip
            if not found:
                alternatives.append({"option": f"{objective.value} with {method.value}",
                                     "why_not": "no recipe in the catalog implements it"})  # fmt: skip
                continue
            hyper = hyperparameters(goal, rows, objective.value, method.value)
            for c in found:
                o = nodes_for(c, vram_gb=vram_gb, gpus=gpus, max_nodes=max_nodes, hours=hours, hyper=hyper, rows=rows,
                              avg_tokens=avg_tokens, gpu=gpu, counted=timed(c))  # fmt: skip
                option = f"{c.recipe} ({method.value}, {c.params_b:.1f}B)"
                if o.nodes is None:
                    alternatives.append({"option": option,
                                         "why_not": _why_not(o, gpus, max_nodes, vram_gb, hours)})  # fmt: skip
                elif o.nodes == 1:
                    _choose(plan, c, objective, method, hyper, o, note, count, gpu, avg_tokens)
                    return plan
                else:
                    order += 1
                    several.append((o.nodes, order, objective, method, c, hyper, o))
                    alternatives.append({"option": option, "why_not": f"needs {o.nodes} nodes; one-node options "
                                         "come first"})  # fmt: skip
    if several:
        _, _, objective, method, c, hyper, o = min(several, key=lambda t: (t[0], t[1]))
        alternatives[:] = [
            a | {"why_not": a["why_not"].replace("one-node options come first", f"{c.recipe} needs as few or "
                                                 "comes first in the rules' order")}
            for a in alternatives if not a["option"].startswith(f"{c.recipe} (")
        ]  # fmt: skip
        _choose(plan, c, objective, method, hyper, o, note, count, gpu, avg_tokens)
        return plan
    plan.warnings.append(f"nothing in the catalog fits {gpus} GPU(s) of {vram_gb:g} GB"
                         + (f" × {max_nodes} nodes" if max_nodes > 1 else "")
                         + (f" and finishes within {hours:g} h" if hours is not None and gpu else "")
                         + " for this goal: more GPUs or nodes (--max-nodes), larger ones, or a smaller base model "
                         "(fork a recipe with --base-model)")  # fmt: skip
    return plan


def _choose(plan: Plan, c: Candidate, objective: Choice, method: Choice, hyper: Hyper, o: _Option,
            note: Callable[[Choice, str], dict[str, Any]], count: SequenceCounter | None, gpu: Gpu | None,
            avg_tokens: int) -> None:  # fmt: skip
    """Fill `plan` with candidate `c` on `o.nodes` nodes: the reasons, the `--set`s, time and cost, the commands."""
    assert o.nodes is not None
    nodes, gpus, fit, vram_gb = o.nodes, plan.gpus, o.fit, plan.vram_gb
    why = plan.why
    why += [note(objective, "objective"), note(method, "method")]
    on = f" on {nodes} nodes of {gpus} GPU(s)" if nodes > 1 else ""
    why.append({"decision": "recipe", "choice": c.recipe,
                "reason": f"implements {objective.value} with {method.value} on {c.base_model} "
                          f"({c.params_b:.1f}B); fits: ~{fit.need_gib:.1f} GiB per GPU of "
                          f"{vram_gb:g} GB{on}" + (f" ({fit.parallelism})" if fit.parallelism != "none"
                                                   else ""), "source": "ftkit estimate"})  # fmt: skip
    if nodes > 1:
        because = ("one node cannot hold it" if not fit_on(c, vram_gb, gpus).fits
                   else f"one node cannot finish within {plan.hours_budget:g} h")  # fmt: skip
        why.append({"decision": "nodes", "choice": str(nodes),
                    "reason": f"{because}: {nodes} nodes × {gpus} GPU(s), the fewest that do (up to "
                              f"--max-nodes {plan.max_nodes})", "source": "ftkit estimate"})  # fmt: skip
    why += [{"decision": "hyperparameters", "choice": r, "reason": r, "source": None} for r in hyper.reasons]
    settings, sets = run_sets(c, hyper, gpus * nodes)
    plan.recipe, plan.objective, plan.method, plan.base_model = c.recipe, objective.value, method.value, c.base_model
    plan.fit, plan.nodes = asdict(fit), nodes
    plan.settings, plan.sets, plan.warnings = settings, sets, plan.warnings + hyper.warnings
    counted = count(c) if count and gpu else None
    plan.time_cost = _time_cost(c, hyper, plan.rows, avg_tokens, gpus * nodes, gpu, counted, nodes)
    fork = f"my-{plan.goal}"
    full = f"ftkit recipe run {fork} --profile full " + " ".join(f"--set {s}" for s in sets)
    plan.commands = [
        f"ftkit recipe new {fork} --from {c.recipe} "
        + " ".join(f"--dataset {st.stage}=<your-{st.stage}.jsonl>" for st in c.stages),
        f"ftkit recipe run {fork} --profile smoke",
        full + (f" --nodes {nodes} --node-rank <0..{nodes - 1}> --master-addr <node 0's address>" if nodes > 1
                else ""),
    ]  # fmt: skip
    if nodes > 1:
        plan.commands.append(f"ftkit cloud skypilot {fork} --nodes {nodes} --gpus-per-node {gpus} "
                             + " ".join(f"--set {s}" for s in sets))  # fmt: skip
    if fit.changes:
        plan.warnings.append("fits only with the pre-flight's changes: " + "; ".join(fit.changes))


# ------------------------------------------------------------------ the I/O edge: recipes -> candidates


def recipe_candidates(root: Path) -> list[Candidate]:
    """Every recipe's full profile as a Candidate (recipes the estimator cannot read are left out)."""
    from ftkit.errors import FtkitError
    from ftkit.estimate.from_recipe import recipe_stage_plans
    from ftkit.recipes.load import list_recipe_dirs, load_recipe

    out = []
    for d in list_recipe_dirs(root):
        try:
            loaded = load_recipe(str(d), check_profiles=False)
            plans = recipe_stage_plans(str(d), "full", loaded=loaded)
        except (FtkitError, KeyError):
            continue
        stages = tuple(p.setting.stage for p in plans)
        objective = OBJECTIVE_OF_STAGES.get(stages)
        if objective is None:
            continue
        method = plans[-1].setting.method
        out.append(Candidate(loaded.name, loaded.recipe.engine, loaded.recipe.base_model, objective, method,
                             [CandidateStage(p.stage, p.arch, p.setting, p.data) for p in plans]))  # fmt: skip
    return out


def dataset_counter(path: Path, tokenizer: str | None = None, sample: int | None = None) -> SequenceCounter:
    """A `recommend(count=...)` that counts `path` with the chosen recipe's base-model tokenizer (or `tokenizer`, or
    the labelled stand-in) at each of its stages' sequence lengths; the tokenizer and the file are read once."""
    from ftkit.estimate.tokens import DEFAULT_SAMPLE, Tokenizers, file_sequence_tokens

    tokenizers = Tokenizers(tokenizer, DEFAULT_SAMPLE if sample is None else sample)

    def count(c: Candidate) -> SequenceTokens:
        stages = [(st.stage, st.data, st.setting) for st in c.stages]
        return file_sequence_tokens(str(path), c.base_model, stages, tokenizers)

    return count


def gpu_for_vram(vram_gb: float, name: str | None = None) -> Gpu | None:
    """The catalog GPU named, else the smallest catalog GPU with about `vram_gb` of memory (for time and cost)."""
    from ftkit.estimate.gpus import GPUS, lookup_gpu

    if name:
        return lookup_gpu(name)
    near = [g for g in GPUS.values() if g.marketed_gb >= vram_gb and g.bf16_tflops > 0]
    if not near:
        return None
    smallest = min(g.marketed_gb for g in near)
    same = [g for g in near if g.marketed_gb == smallest]
    return min(same, key=lambda g: min((p.on_demand_per_h for p in g.prices), default=float("inf")))


@dataclass
class DatasetFacts:
    path: str
    rows: int
    kind: str | None  # DataKind of the most common format, None when no row has a known format
    formats: dict[str, int]  # format -> rows
    avg_tokens: int  # approximate: characters / 4 of each row's JSON


def inspect_dataset(path: Path) -> DatasetFacts:
    """Rows, format and rough length of a dataset file (every row read, streamed)."""
    import json

    from ftkit.data.formats import detect_format
    from ftkit.data.readers import iter_records
    from ftkit.plan.rules import FORMAT_KINDS

    rows, chars, formats = 0, 0, {}
    for rec in iter_records(path):
        rows += 1
        fmt = detect_format(rec.row) or "unknown"
        formats[fmt] = formats.get(fmt, 0) + 1
        chars += len(json.dumps(rec.row, ensure_ascii=False)) if rec.row is not None else len(rec.raw or "")
    known = {f: n for f, n in formats.items() if f in FORMAT_KINDS}
    kind = FORMAT_KINDS[max(known, key=known.__getitem__)] if known else None
    return DatasetFacts(str(path), rows, kind, formats, max(1, round(chars / 4 / rows)) if rows else 0)
