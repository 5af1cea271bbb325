"""`ftkit plan`: parse, call ftkit.plan.recommend, print the recommendation and its reasons (or --json)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from ftkit.cli.console import consoles, print_json, say
from ftkit.errors import ExitCode, FtkitError


def cmd_plan(args: argparse.Namespace) -> int:
    from ftkit.plan.recommend import dataset_counter, gpu_for_vram, inspect_dataset, recipe_candidates, recommend
    from ftkit.plan.rules import DEFAULT_DATA, objectives
    from ftkit.recipes.load import recipes_root

    console, out = consoles()
    facts = inspect_dataset(Path(args.dataset)) if args.dataset else None
    rows = args.rows if args.rows is not None else facts.rows if facts else None
    if not rows:
        raise FtkitError.one("how many training rows? none given", field="--rows",
                             fix="pass --rows N, or --dataset FILE to count them", code=ExitCode.USAGE)  # fmt: skip
    data = args.data or (facts.kind if facts and facts.kind else DEFAULT_DATA[args.goal])
    avg_tokens = args.avg_tokens or (facts.avg_tokens if facts else 1000)
    if args.max_nodes < 1 or (args.hours is not None and args.hours <= 0):
        raise FtkitError.one("--max-nodes must be at least 1 and --hours above 0", field="--max-nodes/--hours",
                             fix="--max-nodes 4 --hours 12", code=ExitCode.USAGE)  # fmt: skip
    gpu = gpu_for_vram(args.vram, args.gpu)
    if args.gpu and gpu is None:
        raise FtkitError.one(f"unknown GPU '{args.gpu}'", field="--gpu",
                             fix="a catalog name such as H100, A100 80GB, L4, A10G (ftkit estimate --help)",
                             code=ExitCode.USAGE)  # fmt: skip
    # --dataset without --avg-tokens: its tokens are counted with the recommended recipe's tokenizer
    counting = facts is not None and not args.avg_tokens
    count = dataset_counter(Path(args.dataset), args.tokenizer, args.token_sample) if counting else None
    with console.status("reading the recipes and estimating each on your GPUs"):
        candidates = recipe_candidates(recipes_root())
        plan = recommend(candidates, goal=args.goal, data=data, rows=rows, vram_gb=args.vram, gpus=args.gpus,
                         avg_tokens=avg_tokens, gpu=gpu, count=count, max_nodes=args.max_nodes,
                         hours=args.hours)  # fmt: skip
    result = plan.to_dict() | {"dataset": facts.__dict__ if facts else None}
    if args.json:
        print_json(result)
    else:
        _print(out, result)
    if plan.recipe:
        return ExitCode.OK
    return ExitCode.ENVIRONMENT if objectives(args.goal, data) else ExitCode.USAGE  # no GPU fits / wrong data


def _print(out: Any, plan: dict[str, Any]) -> None:
    facts = plan["dataset"]
    if facts:
        say(out, f"dataset {facts['path']}: {facts['rows']:,} rows, formats {facts['formats']}, "
            f"~{facts['avg_tokens']} tokens per row (characters / 4)")  # fmt: skip
    gpus = f"{plan['gpus']} GPU(s) × {plan['vram_gb']:g} GB"
    if plan["nodes"] > 1:
        gpus = f"{plan['nodes']} nodes × {gpus}"
    elif plan["max_nodes"] > 1:
        gpus += f" (up to {plan['max_nodes']} nodes)"
    if plan["hours_budget"] is not None:
        gpus += f", within {plan['hours_budget']:g} h"
    head = f"goal {plan['goal']}, data: {plan['data']}, {plan['rows']:,} rows, {gpus}"
    if not plan["recipe"]:
        say(out, ("no recommendation", "red"), f" for {head}")
    else:
        say(out, (plan["recipe"], "bold green"), f": {plan['objective']} with {plan['method']} on "
            f"{plan['base_model']} ({head})")  # fmt: skip
        table = Table(title="why", title_justify="left", show_lines=False)
        for col in ("decision", "choice", "reason"):
            table.add_column(col, overflow="fold")
        for w in plan["why"]:
            if w["decision"] == "hyperparameters":
                table.add_row(w["decision"], "", escape(w["reason"]))
            else:
                src = f" [dim]({escape(w['source'])})[/dim]" if w["source"] else ""
                table.add_row(w["decision"], w["choice"], escape(w["reason"]) + src)
        out.print(table)
        tc = plan["time_cost"]
        if tc:
            from ftkit.estimate.summary import duration, usd
            from ftkit.estimate.tokens import si

            cost = ", ".join(f"{k} {usd(v)}" for k, v in tc["cost_usd"].items()) or "no price"
            took = duration(tc["hours"])
            took = took if took.startswith("<") else f"~{took}"
            where = f"{tc['nodes']} nodes × {tc['gpus'] // tc['nodes']}" if tc.get("nodes", 1) > 1 else tc["gpus"]
            say(out, f"time and cost (estimate): {took} on {where} × {tc['gpu']}; {cost}")
            say(out, f"  for {si(tc['tokens'])} tokens: {tc['tokens_source']}", style="dim")
        say(out, "next:")
        for c in plan["commands"]:
            say(out, f"  {c}")
    for w in plan["warnings"]:
        say(out, ("warning", "yellow"), f": {w}")
    if plan["alternatives"]:
        say(out, "considered and passed over:", style="dim")
        for a in plan["alternatives"][:8]:
            say(out, f"  {a['option']}: {a['why_not']}", style="dim")


def register(sub: Any) -> None:
    from ftkit.plan.rules import DATA_KINDS, GOALS

    p = sub.add_parser(
        "plan",
        help="recommend a recipe and its settings for a goal, a dataset size and your GPUs, and say why",
        description="The decision framework as code: the goal and the data pick the objective (SFT, SFT→DPO, "
        "ORPO, KTO, reward model, GRPO); the data size and the GPUs pick the method (full fine-tune, LoRA, DoRA, "
        "QLoRA) among the catalog's recipes that the estimator says fit; the data size sets epochs, rank, "
        "learning rate and global batch. Prints the recipe, the reasons with their sources, the `--set` values "
        "and the commands to fork and run it. Exit 5 when nothing in the catalog fits the GPUs given, 2 when the "
        "data cannot serve the goal (e.g. preference without pairs or labels).",
    )
    p.add_argument("--vram", type=float, required=True, metavar="GB", help="memory per GPU, in GB")
    p.add_argument("--gpus", type=int, default=1, metavar="N", help="GPUs on the machine (per node; default 1)")
    p.add_argument("--max-nodes", type=int, default=1, metavar="N",
                   help="machines of --gpus GPUs you can start (default 1): more are proposed only when no recipe "
                   "for the goal fits, or finishes within --hours, on one")  # fmt: skip
    p.add_argument(
        "--hours",
        type=float,
        metavar="H",
        help="time budget for the whole run, in hours (estimated on --gpu, or the catalog GPU of --vram)",
    )
    p.add_argument("--rows", type=int, metavar="N", help="training rows (or --dataset to count them)")
    p.add_argument("--goal", choices=GOALS, required=True,
                   help="chat: an assistant; format: a fixed output format; domain: domain knowledge; "
                   "preference: align to preferences; safety: refusals and harmlessness")  # fmt: skip
    p.add_argument("--data", choices=DATA_KINDS,
                   help="what the rows are (default: detected from --dataset, else the goal's usual data): "
                   "conversations, pairs (chosen/rejected), unpaired (KTO labels), verifiable (prompts with a "
                   "checkable answer)")  # fmt: skip
    p.add_argument("--dataset", metavar="FILE", help="a JSONL/JSON/Parquet file: counts rows, detects the format")
    p.add_argument("--avg-tokens", type=int, metavar="N",
                   help="tokens per sequence for time and cost (default: counted in --dataset with the recommended "
                   "recipe's tokenizer; without --dataset 1000)")  # fmt: skip
    p.add_argument("--tokenizer", metavar="DIR",
                   help="count --dataset with this tokenizer (a local dir) instead of the recommended recipe's base "
                   "model's (default: that one when on this machine, else a labelled stand-in)")  # fmt: skip
    p.add_argument("--token-sample", type=int, default=2000, metavar="N",
                   help="rows of --dataset tokenized at most, spread evenly (default 2000; 0: every row)")  # fmt: skip
    p.add_argument("--gpu", metavar="NAME", help="the GPU model for time and cost (default: a catalog GPU of --vram)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)
