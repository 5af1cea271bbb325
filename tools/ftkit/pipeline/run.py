"""Run a recipe: pre-flight every stage, train them in order, merge, gate metrics, write the report.

The library returns data and reports progress through `RunEvents`; the CLI decides how to print.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ftkit import envinfo, library_output
from ftkit.cluster import SINGLE, Cluster
from ftkit.data.validate import ValidationReport, validate_file
from ftkit.dotted_keys import parse_set
from ftkit.engines import get_engine
from ftkit.engines.base import ProcessResult, StageContext
from ftkit.engines.forward_sigterm import StopRequest
from ftkit.errors import ExitCode, FtkitError, Problem
from ftkit.models import resolve_model
from ftkit.pipeline.export_stage import (
    HELDOUT_FIELD,
    export_passed,
    preflight_exports,
    require_exports_possible,
    run_exports,
    write_card,
)
from ftkit.pipeline.metrics_gate import CheckRow, attempt_work, check_metrics, summarize, throughput
from ftkit.pipeline.resume import (
    DONE,
    METRICS_FILE,
    REFUSED,
    RunInterrupted,
    check_resumable,
    checkpoint_step,
    drop_repeated_evals,
    interrupted,
    last_checkpoint,
    now,
    read_state,
    refusal_record,
    stage_done,
    trim_history,
    unique_evals,
)
from ftkit.pipeline.run_report import markdown_summary, plot_curves
from ftkit.recipes.load import LoadedRecipe, check_engine_configs, load_recipe
from ftkit.recipes.resolve import (
    ResolvedStage,
    SetOverrides,
    check_profile,
    resolve_stage,
    route_sets,
    validate_profiles,
)
from ftkit.recipes.schema import Export
from ftkit.run_record import RunRecord
from ftkit.yaml_load import dump_yaml


class RunEvents(Protocol):
    def message(self, text: str) -> None: ...
    def stage_start(self, stage: str, what: str) -> None: ...
    def progress(self, stage: str, done: int, total: int) -> None: ...
    def stage_log(self, stage: str, log: Path, history: Path) -> None: ...  # a training stage starts writing these
    def stage_end(self, stage: str, metrics: dict[str, Any]) -> None: ...


class QuietEvents:
    def message(self, text: str) -> None: ...
    def stage_start(self, stage: str, what: str) -> None: ...
    def progress(self, stage: str, done: int, total: int) -> None: ...
    def stage_log(self, stage: str, log: Path, history: Path) -> None: ...
    def stage_end(self, stage: str, metrics: dict[str, Any]) -> None: ...


@dataclass
class RunOptions:
    profile: str = "smoke"
    sets: list[str] = field(default_factory=list)
    runs_root: Path = Path("runs")
    run_dir: Path | None = None
    allow_pii: bool = False  # train even when the PII gate finds more than recipe.yaml's pii.max_rows
    force: bool = False  # train even when the VRAM pre-flight says a stage will not fit the GPU
    resume: Path | None = None  # continue the run whose metrics.json is here (a run dir, or a checkpoint dir)
    checkpoint_dir: Path | None = None  # each stage trains into <checkpoint_dir>/<stage> (default: the run dir)
    cluster: Cluster = SINGLE  # this node of a multi-node run (ftkit.cluster); one node by default
    processes: int | None = None  # training processes per node (default: the profile's, else one per GPU)


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    rows: list[CheckRow]

    @property
    def passed(self) -> bool:
        """Every bound met and every export check (GGUF load-back, gated evaluation) passed."""
        return all(r.passed for r in self.rows) and self.metrics.get("status") != "failed-export"


@dataclass
class PlannedStage:
    ctx: StageContext
    data_reports: list[ValidationReport]
    pii_reports: list[dict[str, Any]]
    vram: dict[str, Any] | None
    resolved: ResolvedStage  # the stage's engine config for this run, resolved once in the pre-flight
    init_model: str | None = None  # the earlier stage's merged model it starts from (init_from)


def _check_hardware(loaded: LoadedRecipe, profile: str, hw: dict[str, Any]) -> None:
    if profile == "smoke":
        return
    need = loaded.recipe.hardware
    have = hw["gpus"]
    if len(have) < need.gpus:
        raise FtkitError.one(
            f"the '{profile}' profile of {loaded.name} needs {need.gpus} GPU(s) with >= {need.min_vram_gb:g} GB; "
            f"this machine has {len(have) or 'no'} CUDA GPU(s)",
            file=loaded.source.path,
            field="hardware",
            fix=f"run the CPU smoke profile: make recipe NAME={loaded.name} PROFILE=smoke "
            f"(or ftkit recipe run {loaded.name} --profile smoke), or use a GPU machine",
            code=ExitCode.ENVIRONMENT,
        )


def _profile_nodes(loaded: LoadedRecipe, profile: str) -> int:
    """The nodes a profile is written for: its own `nodes`, else the recipe's hardware.nodes for the full profile
    (1 for the others, which run on one machine)."""
    own = loaded.recipe.profiles[profile].nodes if profile in loaded.recipe.profiles else None
    return own or (loaded.recipe.hardware.nodes if profile == "full" else 1)


def check_cluster(loaded: LoadedRecipe, opts: RunOptions, prev: dict[str, Any] | None) -> None:
    """Refuse (exit 2) a multi-node run this runner cannot carry: c10d rendezvous without a checkpoint dir every
    node shares (global rank 0 may be on any node, and a resume needs every rank's shards), and a stage that starts
    from an earlier stage's merged model (node 0 merges it into its own run dir, which the other nodes cannot read)."""
    cluster = opts.cluster
    if not cluster.multi:
        return
    shared = opts.checkpoint_dir or (prev or {}).get("checkpoint_dir")
    if cluster.rendezvous == "c10d" and not shared:
        raise FtkitError.one(
            f"a {cluster.nodes}-node run keeps its checkpoints where every node reads and writes them",
            field="--checkpoint-dir",
            fix="give every node the same --checkpoint-dir on shared storage (NFS, FSx, EFS, a SkyPilot bucket "
            "mount), e.g. make recipe … CHECKPOINT_DIR=/shared/ckpt/RUN",
        )
    if chained := [s.name for s in loaded.recipe.stages if s.init_from]:
        raise FtkitError.one(
            f"{loaded.name}: stage(s) {', '.join(chained)} start from an earlier stage's merged model, which a "
            "multi-node run does not carry between nodes yet",
            file=loaded.source.path, field="stages",
            fix="run the stages on one node, or run each stage as its own recipe across nodes (docs/multi-node.md)",
        )  # fmt: skip


def _load_tokenizer(model: str) -> Any:
    """The base model's tokenizer for length checks, or None when it cannot be had (a gated hub id offline)."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError):
        return None


def _preflight_data(
    loaded: LoadedRecipe, resolved: ResolvedStage, ctx: StageContext, tokenizer: Any = None
) -> list[ValidationReport]:
    """Validate every local dataset of the stage against its schema, format rules and, with a tokenizer,
    its sequence length; refuse to train on bad rows."""
    engine = get_engine(loaded.recipe.engine)
    files = loaded.stage_files(resolved.name)
    reports = []
    for path in engine.dataset_paths(resolved.config):
        if not Path(path).is_file():
            continue  # a hub dataset: the engine loads it (checked by `ftkit data validate` in issue 3)
        quarantine = ctx.stage_dir / f"quarantine-{Path(path).stem}.jsonl"
        max_len = engine.sequence_len(resolved.config) if tokenizer is not None else None
        report = validate_file(path, files.schema_path, quarantine, tokenizer=tokenizer, max_len=max_len)
        reports.append(report)
        if not report.ok:
            raise FtkitError(
                f"stage '{resolved.name}': {report.invalid} of {report.rows} rows of {path} break "
                f"{files.schema_path.name}; training did not start (rejected rows: {quarantine})",
                report.problems,
                ExitCode.DATA_INVALID,
            )
        quarantine.unlink(missing_ok=True)
        _check_kept_rows(engine, resolved, path, report)
    return reports


def _check_kept_rows(engine: Any, resolved: ResolvedStage, path: str, report: ValidationReport) -> None:
    """Refuse (exit 3) a dataset whose every row is longer than the sequence length when the engine leaves such
    rows out: it would stop later with an empty dataset (Axolotl: `num_samples=0`)."""
    lengths = report.lengths or {}
    over, seqs, max_len = lengths.get("over_max_len", 0), lengths.get("rows", 0), lengths.get("max_len")
    if seqs and over >= seqs and engine.drops_long_rows(resolved.config):
        raise FtkitError.one(
            f"stage '{resolved.name}': every row of {path} is longer than the sequence length ({max_len} tokens; "
            f"median {lengths.get('p50')}) and {engine.name} leaves such rows out: nothing would be trained",
            file=path, field="sequence_len",
            fix="raise sequence_len (e.g. --set sequence_len=N, or the profile's overrides), shorten the rows, or "
            "set excess_length_strategy: truncate", code=ExitCode.DATA_INVALID,
        )  # fmt: skip


def _pii_gate(
    loaded: LoadedRecipe, engine: Any, resolved: ResolvedStage, ctx: StageContext, allow: bool, events: RunEvents
) -> list[dict[str, Any]]:
    """Scan every local dataset of the stage for PII and refuse (exit 3) above `pii.max_rows`, unless allowed."""
    from ftkit.pii.gate import gate_dataset, policy_settings

    policy = loaded.recipe.pii
    settings, limits = policy_settings(policy.fields, policy.ner, dict(policy.max_rows))
    reports = []
    for path in engine.dataset_paths(resolved.config):
        if not Path(path).is_file():
            continue
        result = gate_dataset(
            path, settings, limits, allow=allow, policy_file=str(loaded.source.path),
            report_path=ctx.stage_dir / f"pii-{Path(path).stem}.json", workers=os.cpu_count() or 1,
        )  # fmt: skip
        found = ", ".join(f"{e} in {n} rows" for e, n in result["rows_by_entity"].items()) or "no PII found"
        events.message(f"pii: {resolved.name}: {Path(path).name}: {result['rows']} rows, {found}"
                       f" (gate {result['gate']['verdict']}; {result['ner']['reason']})")  # fmt: skip
        reports.append(result)
    return reports


def _vram_preflight(
    engine: Any,
    resolved: ResolvedStage,
    base: str,
    hw: dict[str, Any],
    force: bool,
    config_file: str,
    events: RunEvents,
    nodes: int = 1,
) -> dict[str, Any] | None:
    """On a GPU machine: estimate the stage's peak memory and refuse (exit 5) what will not fit, unless forced. A
    sharded config shards over the GPUs of every node (`nodes` machines like this one)."""
    if not hw["gpus"]:
        return None
    from ftkit.estimate.from_engine import setting_from_facts
    from ftkit.estimate.from_recipe import resolve_architecture
    from ftkit.estimate.preflight import check_stage

    try:
        arch = resolve_architecture(base)
    except FtkitError:
        events.message(f"vram: {resolved.name}: {base} is not in the estimator's catalog; memory not checked")
        return None
    # On the GPUs at hand (a sharded config on one GPU is no valid setting).
    setting = setting_from_facts(engine.engine_facts(resolved.config), gpus=max(len(hw["gpus"]), 1) * nodes)
    result = check_stage(arch, setting, hw["gpus"], stage=resolved.name,
                         config_file=config_file, force=force, engine=engine.name)  # fmt: skip
    events.message(f"vram: {resolved.name}: needs about {result['need_gib']} GiB of {result['budget_gib']} GiB "
                   f"per GPU ({result['verdict']})")  # fmt: skip
    return result


def _check_local_weights(base_model: str, stage: str) -> None:
    """Safe default: weights load from safetensors only; a local dir with only pickle files is refused."""
    path = Path(base_model)
    if not path.is_dir():
        return  # a hub id: transformers prefers safetensors; the engine config decides the rest
    if not any(path.glob("*.safetensors")):
        raise FtkitError.one(
            f"stage '{stage}': {path} has no *.safetensors weights (pickle checkpoints can run code on load)",
            file=path,
            field="base_model",
            fix="convert the checkpoint to safetensors (model.save_pretrained(dir, safe_serialization=True))",
            code=ExitCode.USAGE,
        )


def _write_resolved(run_dir: Path, resolved: ResolvedStage) -> Path:
    out = run_dir / "resolved"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{resolved.name}.yaml"
    path.write_text(dump_yaml(resolved.config))
    (out / f"{resolved.name}.changes.yaml").write_text(dump_yaml([c.to_dict() for c in resolved.changes]))
    return path


def _read_log(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def _tail(path: Path, lines: int = 40) -> str:
    text = _read_log(path).replace("\r", "\n")
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])


def run_recipe(name: str, opts: RunOptions, events: RunEvents | None = None) -> RunResult:
    """Run (or, with `opts.resume`, continue) a recipe. SIGTERM during the run stops it cleanly: the training process
    saves a checkpoint, metrics.json records the interruption and `RunInterrupted` (exit code 6) is raised."""
    with StopRequest() as stop:
        return _run(name, opts, events or QuietEvents(), stop)


def _run(name: str, opts: RunOptions, events: RunEvents, stop: StopRequest) -> RunResult:
    """plan (every check that needs no training) -> train the stages -> exports -> gate -> report."""
    loaded, sets, prev = _load_checked(name, opts)
    hw = envinfo.hardware()
    engine = get_engine(loaded.recipe.engine)
    started = dt.datetime.now(dt.UTC)
    # A worker node's run dir holds only its logs: never the resumed run's dir (node 0's, or the shared checkpoints).
    resumed_dir = opts.resume if opts.cluster.is_main else None
    run_dir = (
        opts.run_dir or resumed_dir or _new_dir(opts.runs_root / loaded.name, f"{started:%Y%m%d-%H%M%S}-{opts.profile}")
    )
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    events.message(f"run dir: {run_dir}")
    if runner_log := library_output.route_to(run_dir):
        events.message(f"runner log: {runner_log}")
    ckpt_root = opts.checkpoint_dir or (Path(prev["checkpoint_dir"]) if prev and prev.get("checkpoint_dir") else None)
    ckpt_root = ckpt_root.resolve() if ckpt_root else None
    run = _Run(loaded, opts, engine, hw, run_dir, ckpt_root, prev, events, stop, started)
    if opts.cluster.multi:
        events.message(f"cluster: {opts.cluster.describe()}; checkpoints in {ckpt_root or run_dir}")
    plan = _preflight(run, sets)
    return _execute(run, plan) if opts.cluster.is_main else _execute_worker(run, plan)


def _load_checked(name: str, opts: RunOptions) -> tuple[LoadedRecipe, SetOverrides, dict[str, Any] | None]:
    """The recipe, the routed `--set` values and the state of the run to resume; config errors (a typo in a key,
    stage or profile) are answered before any engine is imported, then the engine's full schema runs."""
    loaded = load_recipe(name, check_profiles=False, quick=True)
    stage_names = [s.name for s in loaded.recipe.stages]
    prev = read_state(opts.resume) if opts.resume else None
    if prev is not None and opts.resume is not None:
        check_resumable(prev, loaded.name, opts.profile, opts.sets, opts.resume)
    check_profile(loaded, opts.profile)  # a mistyped profile is a usage error, not "needs a GPU"
    check_cluster(loaded, opts, prev)
    sets = route_sets(parse_set(opts.sets), stage_names, recipe=loaded)
    problems = validate_profiles(loaded, sets, quick=True)  # a mistyped --set key before the engine's import
    if not problems:
        check_engine_configs(loaded)  # then the engine's full schema, as load_recipe does
        problems = validate_profiles(loaded, sets)
    if problems:
        raise FtkitError(f"{loaded.name}: the resolved configs are invalid", problems)
    return loaded, sets, prev


@dataclass
class _Run:
    """What every step of one run shares: the recipe, where it runs, and how it reports."""

    loaded: LoadedRecipe
    opts: RunOptions
    engine: Any
    hw: dict[str, Any]
    run_dir: Path
    ckpt_root: Path | None
    prev: dict[str, Any] | None  # the metrics.json of the run being resumed
    events: RunEvents
    stop: StopRequest
    started: dt.datetime

    def ctx_for(self, stage: str) -> StageContext:
        d = self.run_dir / stage
        d.mkdir(parents=True, exist_ok=True)
        profile = self.loaded.recipe.profiles.get(self.opts.profile)
        return StageContext(self.loaded.name, stage, d, self.loaded.dir, self.hw["device"], len(self.hw["gpus"]),
                            self.ckpt_root / stage if self.ckpt_root else None,
                            self.opts.processes or (profile.processes if profile else None),
                            self.opts.cluster)  # fmt: skip

    def new_record(self) -> RunRecord:
        """A new run's record before any stage: what runs where, on what, with which versions; a resumed run keeps
        its start, stops, resumes and refusals."""
        record = RunRecord(
            recipe=self.loaded.name, recipe_dir=str(self.loaded.dir), profile=self.opts.profile, sets=self.opts.sets,
            run_dir=str(self.run_dir), checkpoint_dir=str(self.ckpt_root) if self.ckpt_root else None,
            started=self.started.isoformat(timespec="seconds"), git_commit=envinfo.git_commit(self.loaded.dir),
            hardware=self.hw, hardware_label=envinfo.hardware_label(self.hw), versions=envinfo.versions(),
            engine=self.engine.name, image=_image_record(self.loaded, self.events),
            cluster=self.opts.cluster.to_dict() if self.opts.cluster.multi else None,
        )  # fmt: skip
        if self.prev is not None:
            record.started = self.prev["started"]
            record.interruptions = list(self.prev.get("interruptions", []))
            record.resumes = list(self.prev.get("resumes", []))
            record.refusals = list(self.prev.get("refusals", []))
        return record


@dataclass
class _Plan:
    """The pre-flight's result: each stage resolved once and checked, and the exports to make."""

    stages: dict[str, PlannedStage]
    export: Export
    root_base: str  # the first stage's base model: the tokenizer and the reference every later stage keeps


def _preflight(run: _Run, sets: SetOverrides) -> _Plan:
    """The hardware, then resolve, validate and check the data of every stage before any training starts. A
    refusal is recorded in the run dir (metrics.json, report.md) and raised with its own exit code."""
    loaded, opts, engine, events = run.loaded, run.opts, run.engine, run.events
    events.stage_start("pre-flight", "configs and data")
    checking = _Checking()
    model_cache: dict[str, str] = {}

    def resolver(ref: str) -> str:
        if ref not in model_cache:
            events.message(f"base model: {ref}")
            outer, checking.what = checking.what, "model"
            model_cache[ref] = resolve_model(ref)
            checking.what = outer
        return model_cache[ref]

    planned: dict[str, PlannedStage] = {}
    train_files: list[str] = []
    tokenizers: dict[str, Any] = {}
    root_base = ""
    try:
        _check_hardware(loaded, opts.profile, run.hw)
        if (written := _profile_nodes(loaded, opts.profile)) != opts.cluster.nodes:
            events.message(f"nodes: the '{opts.profile}' profile is written for {written} node(s), this run has "
                           f"{opts.cluster.nodes}: the global batch changes with it (micro batch x accumulation x "
                           "GPUs of every node), and the memory check shards over this run's GPUs")  # fmt: skip
        for stage in loaded.recipe.stages:
            checking.stage, checking.what = stage.name, "checkpoints"
            ctx = run.ctx_for(stage.name)
            if run.prev is None and (found := last_checkpoint(ctx.output_dir)):
                raise FtkitError.one(
                    f"stage '{stage.name}': {found} is a checkpoint of an earlier run; a new run would mix with it",
                    file=found, field="--checkpoint-dir",
                    fix=f"resume that run (--resume RUN_DIR, or {METRICS_FILE} beside the checkpoints), or use an "
                    "empty checkpoint dir",
                )  # fmt: skip
            checking.what = "config"
            # A stage that starts from an earlier one trains on that stage's merged model, which `_merge_stage`
            # writes to <run dir>/<stage>/merged: the config names that path now and is resolved only this once.
            init_model = str(ctx.stage_dir.parent / stage.init_from / "merged") if stage.init_from else None
            resolved = resolve_stage(
                loaded, stage.name, opts.profile, sets, model_resolver=resolver, init_model=init_model, ctx=ctx
            )
            if not stage.init_from:
                _check_local_weights(engine.base_model(resolved.config), stage.name)
            stage_problems = engine.validate(resolved.config, None, f"{stage.config} (resolved)")
            if stage_problems:
                raise FtkitError(f"stage '{stage.name}': the resolved config is invalid", stage_problems)
            # A stage that starts from an earlier one keeps that stage's tokenizer: the root stage's base model.
            base = root_base if stage.init_from else engine.base_model(resolved.config)
            root_base = root_base or base
            if base not in tokenizers:
                tokenizers[base] = _load_tokenizer(base)
                if tokenizers[base] is None:
                    events.message(f"no tokenizer for {base}: token lengths not checked before training")
            checking.what = "data"
            data_reports = _preflight_data(loaded, resolved, ctx, tokenizers[base])
            checking.what = "pii"
            pii_reports = _pii_gate(loaded, engine, resolved, ctx, opts.allow_pii, events)
            checking.what = "vram"
            vram = _vram_preflight(engine, resolved, base, run.hw, opts.force, str(loaded.dir / stage.config), events,
                                   opts.cluster.nodes)  # fmt: skip
            planned[stage.name] = PlannedStage(ctx, data_reports, pii_reports, vram, resolved, init_model)
            train_files += [str(p) for p in engine.dataset_paths(resolved.config)]
        checking.stage, checking.what = None, "exports"
        export_plan = loaded.recipe.export_for(opts.profile)
        require_exports_possible(preflight_exports(loaded, export_plan, train_files, cuda=bool(run.hw["gpus"])))
    except FtkitError as exc:
        record = RunRecord.from_dict(run.prev) if run.prev is not None else run.new_record()
        _record_refusal(checking.refusal(exc), record, run.prev is not None, run.run_dir, loaded, opts.profile)
        raise
    return _Plan(planned, export_plan, root_base)


def _execute(run: _Run, plan: _Plan) -> RunResult:
    """Train every stage in order (a resumed run keeps the finished ones), merge where a later stage or the
    export needs it, make the exports, gate the metrics and write the report, whatever happened on the way."""
    loaded, engine, events, stop, prev = run.loaded, run.engine, run.events, run.stop, run.prev
    record = run.new_record()
    if prev is not None:
        record.resumes.append({"at": now(), "from": str(run.opts.resume), "skipped_stages": []})
    record.write(run.run_dir, run.ckpt_root)
    histories: dict[str, list[dict[str, float]]] = {}
    merged: dict[str, Path] = {}
    needs_merge = {s.init_from for s in loaded.recipe.stages if s.init_from}
    last = loaded.recipe.stages[-1]
    try:
        for stage in loaded.recipe.stages:
            planned = plan.stages[stage.name]
            ctx, resolved = planned.ctx, planned.resolved
            if stop.requested:
                raise _stopped_between(record, stage.name, stop, run.run_dir)
            if stage.init_from and str(merged[stage.init_from]) != planned.init_model:
                # a resumed run's kept merge from an earlier run dir: point the config at it
                resolved.set(engine.base_model_key, str(merged[stage.init_from]),
                             f"init_from: {stage.init_from} (merged model kept from the interrupted run)")  # fmt: skip
            wants_merge = stage.name in needs_merge or (stage is last and plan.export.merge)
            if prev is not None and stage_done(prev, stage.name):
                summary = record.stages[stage.name] = prev["stages"][stage.name]
                histories[stage.name] = engine.history(ctx)
                record.resumes[-1]["skipped_stages"].append(stage.name)
                events.message(f"resume: stage '{stage.name}' finished before; its metrics are kept")
                _write_resolved(run.run_dir, resolved)
                if wants_merge:
                    merged[stage.name] = _kept_merge(engine, resolved, ctx, plan.export, summary, events)
                continue
            events.stage_start(stage.name, f"{engine.name} on {Path(engine.base_model(resolved.config)).name}")
            summary = _train_stage(engine, resolved, ctx, run.run_dir, planned, prev, record, stop, events)
            histories[stage.name] = engine.history(ctx)
            events.stage_end(stage.name, summary)
            summary["status"] = DONE  # trained; a resume merges it again unless `merged_dir` is recorded
            record.write(run.run_dir, run.ckpt_root)
            if wants_merge:
                merged[stage.name] = _merge_stage(engine, resolved, ctx, stage.name, plan.export, summary, events)
                record.write(run.run_dir, run.ckpt_root)
        record.status = "trained"
        if plan.export.merge and (plan.export.gguf or plan.export.quantize or plan.export.eval):
            if stop.requested:
                raise _stopped_between(record, "export", stop, run.run_dir)
            summary = record.stages[last.name]
            record.export = run_exports(loaded, plan.export, run.run_dir, Path(summary["merged_dir"]), plan.root_base,
                                        events, summary.get("sequence_len"))  # fmt: skip
            ok, failed = export_passed(record.export, plan.export)
            if not ok:
                record.status = "failed-export"
                record.export["failed"] = failed
                events.message("export FAILED: " + "; ".join(failed))
    except RunInterrupted:
        record.status = "interrupted"
        raise
    except FtkitError:
        record.status = "failed"
        raise
    finally:
        rows = _finish(run, plan, record, histories)
    return RunResult(run.run_dir, record.to_dict(), rows)


def _execute_worker(run: _Run, plan: _Plan) -> RunResult:
    """A node other than node 0 of a multi-node run: train every stage's share on this node and nothing else.
    Node 0 writes the history, metrics.json, merged models, exports and the report; global rank 0 of the trainer
    writes the checkpoints' shared files (`ftkit.cluster`)."""
    loaded, engine, events, stop, prev = run.loaded, run.engine, run.events, run.stop, run.prev
    node = f"node {run.opts.cluster.node_rank}"
    for stage in loaded.recipe.stages:
        ctx, resolved = plan.stages[stage.name].ctx, plan.stages[stage.name].resolved
        if prev is not None and stage_done(prev, stage.name):
            events.message(f"resume: stage '{stage.name}' finished before")
            continue
        if stop.requested:
            raise interrupted(stage.name, stop.signal, None, run.run_dir)
        if (checkpoint := _resume_point(engine, resolved, ctx, prev)) is not None:
            events.message(f"resume: stage '{stage.name}' continues from {checkpoint}")
        events.stage_start(stage.name, f"{engine.name}, {node} of {run.opts.cluster.nodes}")
        events.stage_log(stage.name, ctx.log_path, ctx.history_path)
        result = engine.train(_write_resolved(run.run_dir, resolved), ctx, append_log=checkpoint is not None)
        if _stopped(result, stop):
            raise interrupted(stage.name, stop.signal or result.signal, last_checkpoint(ctx.output_dir), run.run_dir)
        if result.returncode != 0:
            raise _engine_failed(engine, ctx, stage.name, result.returncode, run.run_dir)
        events.message(f"{stage.name}: {node} done; node 0 writes the metrics, merges and exports")
    info = {"recipe": loaded.name, "profile": run.opts.profile, "status": "trained"}
    return RunResult(run.run_dir, info | {"cluster": run.opts.cluster.to_dict()}, [])


def _engine_failed(engine: Any, ctx: StageContext, stage: str, code: int, run_dir: Path) -> FtkitError:
    """A training process that exited non-zero, with its log's tail; in a multi-node run, the nodes it lost."""
    tail = _tail(ctx.log_path)
    problems = [Problem(tail, str(ctx.log_path), None, None, "read the log above; "
                        f"`ftkit doctor {run_dir}` names known failures and their fixes")]  # fmt: skip
    title = f"stage '{stage}': {engine.name} exited with code {code}"
    if ctx.cluster.multi and (cause := ctx.cluster.failure(_read_log(ctx.log_path))):
        ending, message, fix = cause
        title += f" {ending}"
        problems.insert(0, Problem(message, str(ctx.log_path), None, "cluster", fix))
    return FtkitError(title, problems, ExitCode.ENGINE_FAILED)


def _finish(run: _Run, plan: _Plan, record: RunRecord, histories: dict[str, list[dict[str, float]]]) -> list[CheckRow]:
    """The gate, the model card, metrics.json and report.md of a run that ended (passed, failed or stopped)."""
    loaded = run.loaded
    record.finished = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    rows = check_metrics(record.stages, loaded.expected, run.opts.profile) if loaded.expected else []
    if record.status == "trained":
        record.status = "passed" if all(r.passed for r in rows) else "failed-metrics"
    record.checks = [r.to_dict() for r in rows]
    last_merged = record.stages.get(loaded.recipe.stages[-1].name, {}).get("merged_dir")
    if last_merged and record.status not in ("failed", "interrupted"):
        configs = {name: p.resolved.config for name, p in plan.stages.items() if name in record.stages}
        record.model_card = str(write_card(loaded, record.to_dict(), run.engine, configs, record.export))
    record.write(run.run_dir, run.ckpt_root)
    plot = plot_curves(histories, run.run_dir / "curves.png") if histories else None
    (run.run_dir / "report.md").write_text(markdown_summary(record.to_dict(), rows, plot))
    return rows


@dataclass
class _Checking:
    """Which pre-flight check is running (a key of `resume.PREFLIGHT_CHECKS`), and on which stage."""

    what: str = "hardware"
    stage: str | None = None

    def refusal(self, exc: FtkitError) -> dict[str, Any]:
        what = self.what
        if what == "exports" and any(p.field == HELDOUT_FIELD for p in exc.problems):
            what = "leakage"
        return refusal_record(what, self.stage, exc)


def _record_refusal(
    refusal: dict[str, Any], record: RunRecord, resuming: bool, run_dir: Path, loaded: LoadedRecipe, profile: str
) -> None:
    """metrics.json and report.md of a run the pre-flight refused. A new run gets status 'refused'; a refused resume
    keeps the run's status and stages (it stays resumable) and adds the refusal. Written in the run dir only, never
    beside the checkpoints: those may hold another run's state (the checkpoint-dir refusal)."""
    if not resuming:
        record.status, record.finished, record.checks = REFUSED, refusal["at"], []
    record.run_dir, record.refused, record.refusals = str(run_dir), refusal, [*record.refusals, refusal]
    record.write(run_dir, None)
    rows = check_metrics(record.stages, loaded.expected, profile) if loaded.expected and record.stages else []
    plot = run_dir / "curves.png"  # a resumed run's curves of what trained before
    (run_dir / "report.md").write_text(markdown_summary(record.to_dict(), rows, plot if plot.is_file() else None))


def _kept_merge(
    engine: Any, resolved: ResolvedStage, ctx: StageContext, plan: Export, summary: dict[str, Any], events: RunEvents
) -> Path:
    """A finished stage's merged model: the one recorded, or merged again from its kept adapter (a restarted
    machine has a new run dir; the adapter lives beside the checkpoints)."""
    kept = Path(str(summary.get("merged_dir") or ""))
    if summary.get("merged_dir") and (kept / "config.json").is_file():
        return kept
    return _merge_stage(engine, resolved, ctx, resolved.name, plan, summary, events)


def _new_dir(parent: Path, name: str) -> Path:
    """parent/name, or parent/name-2, -3… when a run started in the same second."""
    candidate, n = parent / name, 2
    while candidate.exists():
        candidate, n = parent / f"{name}-{n}", n + 1
    return candidate


def _stopped_between(record: RunRecord, where: str, stop: StopRequest, run_dir: Path) -> RunInterrupted:
    """SIGTERM came while nothing trained (pre-flight, a merge): stop before `where` starts."""
    info = {"stage": where, "signal": stop.signal, "at": now(), "checkpoint": None, "step": None}
    record.interruptions.append(info)
    return interrupted(where, stop.signal, None, run_dir)


def _resume_point(engine: Any, resolved: ResolvedStage, ctx: StageContext, prev: dict[str, Any] | None) -> Path | None:
    """When resuming, the stage's last checkpoint, set as the engine's resume key; None for a new run."""
    checkpoint = last_checkpoint(ctx.output_dir) if prev is not None else None
    if checkpoint is not None:
        resolved.set(engine.resume_key, str(checkpoint), f"resume: {checkpoint.name} of the interrupted run")
    return checkpoint


def _stopped(result: ProcessResult, stop: StopRequest) -> bool:
    """Whether the training process ended on a stop: its own clean stop (exit 6), or any exit after SIGTERM came."""
    return result.returncode == ExitCode.INTERRUPTED or (stop.requested and result.returncode != 0)


def _train_stage(
    engine: Any, resolved: ResolvedStage, ctx: StageContext, run_dir: Path, plan: PlannedStage,
    prev: dict[str, Any] | None, record: RunRecord, stop: StopRequest, events: RunEvents,
) -> dict[str, Any]:  # fmt: skip
    """Train one stage (from its last checkpoint when resuming) and summarise it into record.stages. Raises
    `RunInterrupted` when SIGTERM stopped it, `FtkitError` when the engine failed."""
    name = resolved.name
    checkpoint = _resume_point(engine, resolved, ctx, prev)
    attempt: dict[str, Any] = {"started": now(), "resumed_from": str(checkpoint) if checkpoint else None}
    if checkpoint is not None:
        step = checkpoint_step(checkpoint)
        dropped = trim_history(ctx.history_path, step)
        record.resumes[-1] |= {"stage": name, "checkpoint": str(checkpoint), "step": step}
        events.message(f"resume: stage '{name}' continues from {checkpoint} (step {step}; {dropped} log records "
                       "after it dropped: they are logged again)")  # fmt: skip
    else:
        ctx.history_path.unlink(missing_ok=True)
    before = engine.history(ctx) if ctx.history_path.is_file() else []  # kept from earlier attempts
    config_path = _write_resolved(run_dir, resolved)
    events.stage_log(name, ctx.log_path, ctx.history_path)
    result = engine.train(config_path, ctx, lambda d, t: events.progress(name, d, t), append_log=checkpoint is not None)
    stopped = _stopped(result, stop)
    attempt |= {"wall_seconds": round(result.wall_seconds, 1), "returncode": result.returncode}
    attempt |= attempt_work(engine.history(ctx)[len(before) :], before)
    if repeated := drop_repeated_evals(ctx.history_path):
        events.message(f"history: stage '{name}': {repeated} repeated evaluation(s) at a step already evaluated "
                       "dropped (the same weights scored again)")  # fmt: skip
    history = unique_evals(engine.history(ctx))
    (ctx.stage_dir / "history.json").write_text(json.dumps(history, indent=1))
    earlier = (prev or {}).get("stages", {}).get(name, {}).get("attempts", [])
    summary = _summary(engine, resolved, ctx, plan, history, result, [*earlier, attempt])
    record.stages[name] = summary
    if stopped:
        saved = last_checkpoint(ctx.output_dir)
        info = {
            "stage": name,
            "signal": stop.signal or result.signal,
            "at": now(),
            "checkpoint": str(saved) if saved else None,
            "step": checkpoint_step(saved) if saved else None,
        }
        attempt["interrupted"] = info
        record.interruptions.append(info)
        summary["status"] = "interrupted"
        raise interrupted(name, info["signal"], saved, run_dir)
    if result.returncode != 0:
        summary["status"] = "failed"
        raise _engine_failed(engine, ctx, name, result.returncode, run_dir)
    return summary


def _summary(
    engine: Any, resolved: ResolvedStage, ctx: StageContext, plan: PlannedStage, history: list[dict[str, float]],
    result: ProcessResult, attempts: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    from ftkit.engines.facts import method_of

    summary: dict[str, Any] = dict(summarize(history))
    cuda_peak = summary.pop("cuda_peak_gib")
    summary |= {
        "base_model": engine.base_model(resolved.config),
        "wall_seconds": round(sum(a.get("wall_seconds", 0.0) for a in attempts), 1),
        "peak_memory_gib": round(cuda_peak if cuda_peak else result.max_rss_bytes / 2**30, 3),
        "peak_memory_kind": "cuda_max_allocated" if cuda_peak else "process_peak_rss",
        "returncode": result.returncode,
        "data": [r.to_dict() for r in plan.data_reports],
        "pii": plan.pii_reports,
        "vram_estimate": plan.vram,
        "adapter_dir": str(engine.adapter_dir(ctx)),
        "method": method_of(engine.engine_facts(resolved.config)),
        "sequence_len": engine.sequence_len(resolved.config),
        "attempts": attempts,
    }
    if any("train_seconds" in a for a in attempts):  # every attempt's work, not only the last one's
        summary |= throughput(attempts)
    if hasattr(engine, "loader_ran"):  # engines that load the model more than one way say which way ran
        summary["loader"] = engine.loader_ran(ctx)
    return summary


def _image_record(loaded: LoadedRecipe, events: RunEvents) -> dict[str, Any]:
    """The image this run is in (its digest, from FTKIT_IMAGE_DIGEST) and the one the recipe pins; a
    mismatch is said once, and every metric of the run then names the digest it really ran on."""
    from ftkit.image_refs import digest_warning, running_image_digest

    running = running_image_digest()
    warning = digest_warning(loaded.recipe.container, running)
    if warning:
        events.message(f"warning: {warning}")
    return {"running_digest": running, "pinned": loaded.recipe.container.model_dump(), "warning": warning}


def _merge_stage(
    engine: Any, resolved: ResolvedStage, ctx: StageContext, name: str, plan: Export, summary: dict[str, Any],
    events: RunEvents,
) -> Path:  # fmt: skip
    """The stage's final model in `merged/`: its adapter merged into the base (unquantized) and verified against
    base + adapter; a full fine-tune's trained checkpoint re-saved in the export dtype and verified against it."""
    from ftkit.export.merge import final_dtype, merge_adapter, require_merged, save_trained_model
    from ftkit.export.verify_merge import describe_merge_check, verify_merge, verify_resaved

    base, out = engine.base_model(resolved.config), ctx.stage_dir / "merged"
    full = summary.get("method") == "full"  # no adapter: the trained weights are the model
    dtype = final_dtype(plan.dtype, engine.adapter_dir(ctx), full)
    if full:
        events.stage_start(f"{name}-save", f"the fully trained model, {dtype}, without the trainer's state")
        result = save_trained_model(engine.adapter_dir(ctx), out, dtype, max_shard_size=plan.max_shard_size)
        if plan.verify:
            result.check = verify_resaved(engine.adapter_dir(ctx), result.out_dir, dtype)
    else:
        events.stage_start(f"{name}-merge", f"adapter into the base, {dtype}")
        result = merge_adapter(base, engine.adapter_dir(ctx), out, dtype, max_shard_size=plan.max_shard_size,
                               trained_on_4bit=summary.get("method") == "qlora")  # fmt: skip
        if plan.verify:
            result.check = verify_merge(base, engine.adapter_dir(ctx), result.out_dir, dtype)
    if result.check:
        events.message(f"merge: {name}: {describe_merge_check(result.check)}")
    summary["merged_dir"] = str(result.out_dir)
    summary["merge"] = result.to_dict()
    require_merged(result)
    return result.out_dir


def check_run(run_dir: Path) -> RunResult:
    """Re-check a finished run's metrics.json against its recipe's current expected-metrics.yaml."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise FtkitError.one("no metrics.json here", file=path, fix="pass a run dir written by `ftkit recipe run`")
    metrics = json.loads(path.read_text())
    record = RunRecord.from_dict(metrics)
    if record.status == REFUSED:
        refused = record.refused or {}
        raise FtkitError.one(
            f"the pre-flight refused this run ({refused.get('message', 'no message recorded')}): nothing trained, "
            "nothing to check", file=path, field="status", fix=f"`ftkit doctor {run_dir}` explains the refusal",
        )  # fmt: skip
    loaded = load_recipe(record.recipe_dir, check_profiles=False)
    if loaded.expected is None:
        raise FtkitError.one("the recipe has no expected-metrics.yaml", file=loaded.dir)
    rows = check_metrics(record.stages, loaded.expected, record.profile)
    return RunResult(run_dir, metrics, rows)
