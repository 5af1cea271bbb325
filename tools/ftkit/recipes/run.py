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

from ftkit import envinfo
from ftkit.data.validate import ValidationReport, validate_file
from ftkit.engines import get_engine
from ftkit.engines.base import StageContext
from ftkit.errors import ExitCode, FtkitError, Problem
from ftkit.models import resolve_model
from ftkit.recipes.export_stage import (
    export_passed,
    preflight_exports,
    require_exports_possible,
    run_exports,
    write_card,
)
from ftkit.recipes.load import LoadedRecipe, load_recipe
from ftkit.recipes.metrics import CheckRow, check_metrics, summarize
from ftkit.recipes.overrides import parse_set
from ftkit.recipes.report import markdown_summary, plot_curves
from ftkit.recipes.resolve import ResolvedStage, resolve_stage, route_sets, validate_profiles
from ftkit.recipes.schema import Export
from ftkit.yamlio import dump_yaml

METRICS_FILE = "metrics.json"


class RunEvents(Protocol):
    def message(self, text: str) -> None: ...
    def stage_start(self, stage: str, what: str) -> None: ...
    def progress(self, stage: str, done: int, total: int) -> None: ...
    def stage_end(self, stage: str, metrics: dict[str, Any]) -> None: ...


class QuietEvents:
    def message(self, text: str) -> None: ...
    def stage_start(self, stage: str, what: str) -> None: ...
    def progress(self, stage: str, done: int, total: int) -> None: ...
    def stage_end(self, stage: str, metrics: dict[str, Any]) -> None: ...


@dataclass
class RunOptions:
    profile: str = "smoke"
    sets: list[str] = field(default_factory=list)
    runs_root: Path = Path("runs")
    run_dir: Path | None = None
    allow_pii: bool = False  # train even when the PII gate finds more than recipe.yaml's pii.max_rows
    force: bool = False  # train even when the VRAM pre-flight says a stage will not fit the GPU


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    rows: list[CheckRow]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)


@dataclass
class PlannedStage:
    ctx: StageContext
    data_reports: list[ValidationReport]
    pii_reports: list[dict[str, Any]]
    vram: dict[str, Any] | None = None


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
    return reports


def _pii_gate(
    loaded: LoadedRecipe, engine: Any, resolved: ResolvedStage, ctx: StageContext, allow: bool, events: RunEvents
) -> list[dict[str, Any]]:
    """Scan every local dataset of the stage for PII and refuse (exit 3) above `pii.max_rows`, unless allowed."""
    from ftkit.pii.fields import parse_patterns
    from ftkit.pii.gate import gate_dataset, thresholds
    from ftkit.pii.rows import ScanSettings

    policy = loaded.recipe.pii
    patterns = parse_patterns(policy.fields)
    settings = ScanSettings(tuple(patterns) if patterns else None, ner=policy.ner)
    limits = thresholds(dict(policy.max_rows))
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
) -> dict[str, Any] | None:
    """On a GPU machine: estimate the stage's peak memory and refuse (exit 5) what will not fit, unless forced."""
    if not hw["gpus"]:
        return None
    from ftkit.estimate.inputs import Setting
    from ftkit.estimate.preflight import check_stage
    from ftkit.estimate.resolve import resolve_architecture

    try:
        arch = resolve_architecture(base)
    except FtkitError:
        events.message(f"vram: {resolved.name}: {base} is not in the estimator's catalog; memory not checked")
        return None
    engine_setting = engine.estimate_setting(resolved.config)
    result = check_stage(arch, Setting(**engine_setting), hw["gpus"], stage=resolved.name,
                         config_file=config_file, force=force)  # fmt: skip
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


def _tail(path: Path, lines: int = 25) -> str:
    if not path.is_file():
        return ""
    text = path.read_text(errors="replace").replace("\r", "\n")
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])


def run_recipe(name: str, opts: RunOptions, events: RunEvents | None = None) -> RunResult:
    events = events or QuietEvents()
    loaded = load_recipe(name, check_profiles=False)
    stage_names = [s.name for s in loaded.recipe.stages]
    sets = route_sets(parse_set(opts.sets), stage_names)
    problems = validate_profiles(loaded, sets)
    if problems:
        raise FtkitError(f"{loaded.name}: the resolved configs are invalid", problems)
    hw = envinfo.hardware()
    _check_hardware(loaded, opts.profile, hw)
    engine = get_engine(loaded.recipe.engine)

    started = dt.datetime.now(dt.UTC)
    run_dir = opts.run_dir or (opts.runs_root / loaded.name / f"{started:%Y%m%d-%H%M%S}-{opts.profile}")
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    events.message(f"run dir: {run_dir}")

    def ctx_for(stage: str) -> StageContext:
        d = run_dir / stage
        d.mkdir(parents=True, exist_ok=True)
        return StageContext(loaded.name, stage, d, loaded.dir, hw["device"], len(hw["gpus"]))

    # Pre-flight: resolve, validate and check the data of every stage before any training starts.
    events.stage_start("pre-flight", "configs and data")
    model_cache: dict[str, str] = {}

    def resolver(ref: str) -> str:
        if ref not in model_cache:
            events.message(f"base model: {ref}")
            model_cache[ref] = resolve_model(ref)
        return model_cache[ref]

    planned: dict[str, PlannedStage] = {}
    train_files: list[str] = []
    tokenizers: dict[str, Any] = {}
    root_base = ""
    for stage in loaded.recipe.stages:
        ctx = ctx_for(stage.name)
        placeholder = str(ctx.stage_dir.parent / (stage.init_from or "") / "merged") if stage.init_from else None
        resolved = resolve_stage(
            loaded, stage.name, opts.profile, sets, model_resolver=resolver, init_model=placeholder, ctx=ctx
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
        data_reports = _preflight_data(loaded, resolved, ctx, tokenizers[base])
        pii_reports = _pii_gate(loaded, engine, resolved, ctx, opts.allow_pii, events)
        vram = _vram_preflight(engine, resolved, base, hw, opts.force, str(loaded.dir / stage.config), events)
        planned[stage.name] = PlannedStage(ctx, data_reports, pii_reports, vram)
        train_files += [str(p) for p in engine.dataset_paths(resolved.config)]
    export_plan = loaded.recipe.export_for(opts.profile)
    require_exports_possible(preflight_exports(loaded, export_plan, train_files, cuda=bool(hw["gpus"])))

    metrics: dict[str, Any] = {
        "recipe": loaded.name,
        "recipe_dir": str(loaded.dir),
        "profile": opts.profile,
        "sets": opts.sets,
        "run_dir": str(run_dir),
        "started": started.isoformat(timespec="seconds"),
        "git_commit": envinfo.git_commit(loaded.dir),
        "hardware": hw,
        "hardware_label": envinfo.hardware_label(hw),
        "versions": envinfo.versions(),
        "engine": engine.name,
        "status": "running",
        "stages": {},
    }
    histories: dict[str, list[dict[str, float]]] = {}
    resolved_configs: dict[str, dict[str, Any]] = {}
    merged: dict[str, Path] = {}
    needs_merge = {s.init_from for s in loaded.recipe.stages if s.init_from}
    try:
        for stage in loaded.recipe.stages:
            ctx = planned[stage.name].ctx
            init_model = str(merged[stage.init_from]) if stage.init_from else None
            resolved = resolve_stage(
                loaded, stage.name, opts.profile, sets, model_resolver=resolver, init_model=init_model, ctx=ctx
            )
            config_path = _write_resolved(run_dir, resolved)
            resolved_configs[stage.name] = resolved.config
            events.stage_start(stage.name, f"{engine.name} on {Path(engine.base_model(resolved.config)).name}")
            result = engine.train(config_path, ctx, lambda d, t, s=stage.name: events.progress(s, d, t))
            history = engine.history(ctx)
            histories[stage.name] = history
            (ctx.stage_dir / "history.json").write_text(json.dumps(history, indent=1))
            summary = summarize(history)
            cuda_peak = summary.pop("cuda_peak_gib")
            summary |= {
                "base_model": engine.base_model(resolved.config),
                "wall_seconds": round(result.wall_seconds, 1),
                "peak_memory_gib": round(cuda_peak if cuda_peak else result.max_rss_bytes / 2**30, 3),
                "peak_memory_kind": "cuda_max_allocated" if cuda_peak else "process_peak_rss",
                "returncode": result.returncode,
                "data": [r.to_dict() for r in planned[stage.name].data_reports],
                "pii": planned[stage.name].pii_reports,
                "vram_estimate": planned[stage.name].vram,
                "adapter_dir": str(engine.adapter_dir(ctx)),
                "method": engine.estimate_setting(resolved.config).get("method"),
                "sequence_len": engine.sequence_len(resolved.config),
            }
            metrics["stages"][stage.name] = summary
            if result.returncode != 0:
                raise FtkitError(
                    f"stage '{stage.name}': {engine.name} exited with code {result.returncode}",
                    [Problem(_tail(ctx.log_path), str(ctx.log_path), None, None, "read the log above; "
                             "`ftkit doctor` (issue 8) will triage common failures")],
                    ExitCode.ENGINE_FAILED,
                )  # fmt: skip
            events.stage_end(stage.name, summary)
            if stage.name in needs_merge or (stage is loaded.recipe.stages[-1] and export_plan.merge):
                merged[stage.name] = _merge_stage(engine, resolved, ctx, stage.name, export_plan, summary, events)
        metrics["status"] = "trained"
        if export_plan.merge and (export_plan.gguf or export_plan.quantize or export_plan.eval):
            last = loaded.recipe.stages[-1]
            metrics["export"] = run_exports(loaded, export_plan, run_dir, metrics, root_base, events,
                                            metrics["stages"][last.name].get("sequence_len"))  # fmt: skip
            ok, failed = export_passed(metrics["export"], export_plan)
            if not ok:
                metrics["status"] = "failed-export"
                metrics["export"]["failed"] = failed
        metrics["status"] = "trained"
    except FtkitError:
        metrics["status"] = "failed"
        raise
    finally:
        metrics["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        rows = check_metrics(metrics["stages"], loaded.expected, opts.profile) if loaded.expected else []
        if metrics["status"] == "trained":
            metrics["status"] = "passed" if all(r.passed for r in rows) else "failed-metrics"
        metrics["checks"] = [r.to_dict() for r in rows]
        last_merged = metrics["stages"].get(loaded.recipe.stages[-1].name, {}).get("merged_dir")
        if last_merged and metrics["status"] != "failed":
            metrics["model_card"] = str(write_card(loaded, metrics, engine, resolved_configs, metrics.get("export")))
        (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=str))
        plot = plot_curves(histories, run_dir / "curves.png") if histories else None
        (run_dir / "report.md").write_text(markdown_summary(metrics, rows, plot))
    return RunResult(run_dir, metrics, rows)


def _merge_stage(
    engine: Any, resolved: ResolvedStage, ctx: StageContext, name: str, plan: Export, summary: dict[str, Any],
    events: RunEvents,
) -> Path:  # fmt: skip
    """Merge the stage's adapter into its base (unquantized) and verify it against base + adapter."""
    from ftkit.export.merge import merge_adapter, require_merged
    from ftkit.export.verify_merge import verify_merge

    base = engine.base_model(resolved.config)
    events.stage_start(f"{name}-merge", f"adapter into the base, {plan.dtype}")
    result = merge_adapter(base, engine.adapter_dir(ctx), ctx.stage_dir / "merged", plan.dtype,
                           max_shard_size=plan.max_shard_size,
                           trained_on_4bit=summary.get("method") == "qlora")  # fmt: skip
    if plan.verify:
        result.check = verify_merge(base, engine.adapter_dir(ctx), result.out_dir, plan.dtype)
        c = result.check
        events.message(f"merge: {name}: logits vs base + adapter: max |diff| {c['max_abs_diff']:.3g} (tolerance "
                       f"{c['tolerance']:g}), top-1 agreement {c['top1_agreement']:.1%} "
                       f"({'passed' if c['passed'] else 'FAILED'})")  # fmt: skip
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
    loaded = load_recipe(metrics["recipe_dir"], check_profiles=False)
    if loaded.expected is None:
        raise FtkitError.one("the recipe has no expected-metrics.yaml", file=loaded.dir)
    rows = check_metrics(metrics["stages"], loaded.expected, metrics["profile"])
    return RunResult(run_dir, metrics, rows)
