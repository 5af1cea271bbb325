"""`ftkit recipe list|validate|run` and `ftkit metrics check`: parse, call the library, print (or --json)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ftkit.cli.console import FAILED, OK, print_json, say
from ftkit.cli.console import err_console as console
from ftkit.cli.console import out_console as out
from ftkit.errors import ExitCode, FtkitError
from ftkit.library_output import LibraryOutput


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
    from ftkit.yaml_load import load_yaml

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
        print_json(items)
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
        print_json(results)
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
    from ftkit.pipeline.resume import resume_arguments
    from ftkit.pipeline.run import RunOptions, run_recipe

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
        cluster=_cluster(args),
        processes=args.processes,
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
        print_json(result.metrics)
    elif not opts.cluster.is_main:
        say(out, f"node {opts.cluster.node_rank}: every stage trained; node 0 writes metrics.json and gates it")
        return int(ExitCode.OK)
    else:
        out.print(_checks_table(result.rows, f"{result.metrics['recipe']} ({profile}): expected-metrics.yaml"))
        say(out, f"report: {result.run_dir / 'report.md'}  curves: {result.run_dir / 'curves.png'}")
        say(out, _gate(result.passed))
    return int(ExitCode.OK if result.passed else ExitCode.METRICS_FAILED)


def _cluster(args: argparse.Namespace) -> Any:
    from ftkit.cluster import Cluster

    return Cluster(nodes=args.nodes, node_rank=args.node_rank, rdzv_host=args.master_addr,
                   rdzv_port=args.master_port, rdzv_id=args.rdzv_id, rendezvous=args.rendezvous)  # fmt: skip


def _gate(passed: bool) -> tuple[str, str]:
    return ("metrics gate passed", "green") if passed else ("metrics gate FAILED", "red")


def cmd_metrics_check(args: argparse.Namespace) -> int:
    from ftkit.pipeline.run import check_run

    result = check_run(Path(args.run_dir))
    if args.json:
        print_json(
            {"run_dir": str(result.run_dir), "passed": result.passed, "checks": [r.to_dict() for r in result.rows]}
        )
    else:
        out.print(_checks_table(result.rows, f"{result.metrics['recipe']} ({result.metrics['profile']})"))
        say(out, _gate(result.passed))
    return int(ExitCode.OK if result.passed else ExitCode.METRICS_FAILED)


def register(sub: Any) -> None:
    from ftkit.cli.recipe_tools import register_recipe_tools
    from ftkit.cluster import DEFAULT_PORT

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
    nodes = p.add_argument_group(
        "multi-node",
        "run this machine's share of a run across several machines: start the same command on every "
        "node with its own --node-rank (docs/multi-node.md; SageMaker and SkyPilot set these for you)",
    )
    nodes.add_argument("--nodes", type=int, default=1, help="machines in the run (default 1)")
    nodes.add_argument("--processes", type=int, metavar="N", help="training processes per node (default: the "
                       "profile's `processes`, else one per GPU)")  # fmt: skip
    nodes.add_argument("--node-rank", type=int, default=0, help="this machine's place, 0..nodes-1 (node 0 writes "
                       "metrics.json, merges and exports)")  # fmt: skip
    nodes.add_argument("--master-addr", help="node 0's address, where the nodes meet (torchrun's rendezvous)")
    nodes.add_argument("--master-port", type=int, default=DEFAULT_PORT,
                       help=f"the rendezvous port on node 0 (default {DEFAULT_PORT})")  # fmt: skip
    nodes.add_argument("--rdzv-id", default="ftkit", help="the run's id, the same on every node (default ftkit)")
    nodes.add_argument("--rendezvous", choices=("c10d", "static"), default="c10d",
                       help="c10d (default): nodes join in any order, the checkpoint dir must be shared; static: "
                       "ranks follow --node-rank, rank 0 on node 0")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print metrics.json instead of tables")
    p.add_argument("--verbose", action="store_true",
                   help="print what the libraries in this process print (transformers, torch, bitsandbytes, ... "
                   "messages and progress bars) on the terminal, as before; by default it goes to the run dir's "
                   "runner.log (the training process's output is always in each stage's train.log)")  # fmt: skip
    p.set_defaults(func=cmd_recipe_run)
    register_recipe_tools(rsub)

    metrics = sub.add_parser("metrics", help="metrics gate")
    msub = metrics.add_subparsers(dest="metrics_command", required=True)
    p = msub.add_parser("check", help="check a run dir's metrics.json against its recipe's expected-metrics.yaml")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_metrics_check)
