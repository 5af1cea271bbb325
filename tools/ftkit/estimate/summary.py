"""`ftkit estimate`: the data (a dict, also the --json output) and its rich rendering."""

from __future__ import annotations

from typing import Any

from ftkit.errors import FtkitError
from ftkit.estimate.from_recipe import StagePlan, recipe_stage_plans, resolve_architecture
from ftkit.estimate.inputs import Setting
from ftkit.estimate.memory import GIB, Breakdown, estimate_memory, sequences_per_step
from ftkit.estimate.timecost import (
    INTER_NODE_SOURCE,
    MFU,
    MFU_SOURCE,
    gpu_options,
    mfu,
    tokens_per_optimizer_step,
)
from ftkit.estimate.tokens import DEFAULT_SAMPLE, UNKNOWN_FIX, StageTokens, Tokenizers, si, stage_tokens, unknown


def _tokens(plan: StagePlan, tokens: float | None, rows: int | None, avg: int | None,
            tokenizers: Tokenizers | None) -> StageTokens:  # fmt: skip
    """The stage's tokens for time and cost: --tokens, else --rows × tokens per row, else its local datasets counted
    (`ftkit.estimate.tokens`), else max_steps of full sequences (an upper bound), else unknown with the reason."""
    s = plan.setting
    if tokens:
        return StageTokens(tokens, f"{si(tokens)} tokens, as given (--tokens)", {"method": "--tokens"})
    if rows:
        per_row = avg or s.batch.seq_len
        epochs = plan.epochs or 1.0
        # A preference row is two sequences; a GRPO prompt is a group of num_generations completions (its
        # micro-batch already counts completions, so sequences_per_step cannot tell the group size).
        seqs = s.grpo.num_generations if s.stage == "grpo" else sequences_per_step(s) // s.batch.micro_batch
        return StageTokens(rows * seqs * per_row * epochs,
                           f"{rows} rows × {seqs} sequences × {per_row} tokens × {epochs:g} epochs",
                           {"method": "--rows"})  # fmt: skip
    counted = stage_tokens(plan, tokenizers) if plan.data and tokenizers else None
    if counted and counted.tokens is not None:
        return counted
    if plan.max_steps:
        every = f"every sequence {s.batch.seq_len} tokens"
        upper = f"max_steps {plan.max_steps} × tokens per step ({every}: an upper bound)"
        detail = {"method": "max_steps upper bound"} | ({"data": counted.detail} if counted else {})
        return StageTokens(plan.max_steps * tokens_per_optimizer_step(s),
                           upper + (f"; data not counted: {counted.detail['reason']}" if counted else ""),
                           detail)  # fmt: skip
    return counted or unknown("no dataset to count" if tokenizers else "datasets not read", UNKNOWN_FIX)


def loss_hint(plan: StagePlan, memory: Breakdown) -> str | None:
    """When the logits are a standard-loss SFT stage's largest term: what a chunked loss would need instead."""
    s = plan.setting
    largest = max(memory.terms, key=lambda t: t.bytes)
    if s.stage != "sft" or s.compute.loss != "standard" or largest.name != "logits":
        return None
    chunked = estimate_memory(plan.arch, s.with_changes(loss="chunked"))
    return (
        f"the logits are the largest term ({largest.gib:.1f} GiB): a chunked loss (Axolotl: chunked_cross_entropy: "
        f"true; ftkit estimate --loss chunked) needs {chunked.device_total / GIB:.1f} GiB per GPU instead of "
        f"{memory.device_total / GIB:.1f}"
    )


def _gpus(name: str | None) -> list[Any]:
    from ftkit.estimate.gpus import GPUS, lookup_gpu

    if name is None:
        return list(GPUS.values())
    gpu = lookup_gpu(name)
    if gpu is None:
        raise FtkitError.one(f"unknown GPU '{name}'", field="--gpu", fix=f"use one of: {', '.join(GPUS)}")
    return [gpu]


def estimate_report(
    *,
    recipe: str | None = None,
    model: str | None = None,
    profile: str = "full",
    overrides: dict[str, Any] | None = None,
    tokens: float | None = None,
    rows: int | None = None,
    avg_tokens: int | None = None,
    gpu: str | None = None,
    loaded: Any = None,
    tokenizer: str | None = None,
    token_sample: int = DEFAULT_SAMPLE,
    count_tokens: bool = True,
    nodes: int | None = None,
) -> dict[str, Any]:
    """Memory, tokens, time and cost of each stage of a recipe (or of one setting of a model). `tokenizer`: count
    the recipe's local datasets with this tokenizer instead of the base model's; `token_sample`: rows counted per
    file at most (0: every row); `count_tokens=False`: read no dataset (a caller that wants the memory only).
    `nodes`: machines of `gpus` GPUs each (default: the recipe profile's nodes, 1 for a model); the states shard
    over all their GPUs, and time and cost count every one."""
    if nodes is not None and nodes < 1:
        raise FtkitError.one(f"--nodes {nodes}: at least one node", field="--nodes", fix="--nodes 2")
    if recipe:
        plans = recipe_stage_plans(recipe, profile, {**(overrides or {}), "nodes": nodes}, loaded)
    else:
        assert model is not None
        given = dict(overrides or {})
        given["gpus"] = (nodes or 1) * int(given.get("gpus") or 1)
        try:
            setting = Setting(**given)
        except ValueError as exc:
            raise FtkitError.one(f"cannot estimate this setting: {exc}", fix="check the options named") from exc
        plans = [StagePlan(setting.stage, model, resolve_architecture(model), setting, None, None, "",
                           nodes=nodes or 1)]  # fmt: skip
    gpus = _gpus(gpu)
    tokenizers = Tokenizers(tokenizer, token_sample) if count_tokens else None
    stages = []
    for plan in plans:
        memory = estimate_memory(plan.arch, plan.setting)
        counted = _tokens(plan, tokens, rows, avg_tokens, tokenizers)
        n_tokens, source = counted.tokens, counted.source
        stages.append({
            "stage": plan.stage,
            "base_model": plan.base_model,
            "architecture": plan.arch.name,
            "config": plan.config_file,
            "nodes": plan.nodes,
            "gpus_per_node": plan.setting.parallel.gpus // plan.nodes,
            "global_batch": sequences_per_step(plan.setting) * plan.setting.batch.grad_accum
            * plan.setting.parallel.gpus,
            "setting": plan.setting.flat(mode="json"),
            "memory": memory.to_dict(),
            "tokens": None if n_tokens is None else round(n_tokens, 1),
            "tokens_source": source,
            "tokens_detail": counted.detail,
            "hint": loss_hint(plan, memory),
            "mfu": round(mfu(plan.setting), 3),
            "mfu_source": MFU_SOURCE,
            "gpus": [o.to_dict() for o in gpu_options(plan.arch, plan.setting, n_tokens, gpus, plan.nodes)],
        })  # fmt: skip
    most = max(p.nodes for p in plans)
    return {
        "recipe": recipe,
        "profile": profile if recipe else None,
        "nodes": most,
        "stages": stages,
        "notes": [
            "memory is per GPU; 'need' = PyTorch's reserved memory at the peak + the CUDA context",
            f"time uses an MFU of {', '.join(f'{k} {v:.0%}' for k, v in MFU.items())}: {MFU_SOURCE}",
            "prices are on-demand USD per GPU-hour as read on the date shown; cost = hours × price × GPUs"
            + (" of all nodes" if most > 1 else ""),
            *([f"{most} nodes: the states shard over all their GPUs; time {INTER_NODE_SOURCE}"] if most > 1 else []),
        ],
    }


def _setting_line(st: dict[str, Any]) -> str:
    s = st["setting"]
    lora = f" r={s['lora_rank']} on {len(s['lora_targets'])} modules" if s["method"] != "full" else ""
    return (
        f"{st['architecture']} {s['method']}{lora}, {s['stage']}, seq {s['seq_len']} × micro-batch "
        f"{s['micro_batch']} (× {s['grad_accum']} accumulation × {_gpus_text(st)}), checkpointing "
        f"{'on' if s['gradient_checkpointing'] else 'off'}, {s['attention']} attention, {s['optimizer']}"
        + (" (foreach)" if s["optimizer"] == "adamw" and s.get("adamw_kernel") == "foreach" else "")
        + (f", {s['parallelism']}" if s["parallelism"] != "none" else "")
        + (f", {s['loss']} loss" if s.get("loss", "standard") != "standard" else "")
    )


def _gpus_text(st: dict[str, Any]) -> str:
    """'8 GPU', or '2 nodes × 8 GPUs = 16 GPUs' for a stage spread over several nodes."""
    gpus, nodes = st["setting"]["gpus"], st.get("nodes", 1)
    return f"{gpus} GPU" if nodes <= 1 else f"{nodes} nodes × {st['gpus_per_node']} GPUs = {gpus} GPUs"


def duration(hours: float) -> str:
    """Hours for people: '< 1 min', '12 min', '3.4 h', '1,250 h' (a short run never reads '0.0 h')."""
    if hours * 60 < 1:
        return "< 1 min"
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:,.1f} h" if hours < 100 else f"{hours:,.0f} h"


def usd(value: float) -> str:
    """Dollars for people: cents below $10 (a short run never reads '$0'), whole dollars above."""
    return "< $0.01" if value < 0.005 else f"${value:,.2f}" if value < 10 else f"${value:,.0f}"


def tokens_label(stage: dict[str, Any]) -> str:
    """'1.23 M tokens', '≈1.23 M tokens, sampled', or 'tokens unknown', for a table title."""
    if stage["tokens"] is None:
        return "tokens unknown: no time or cost"
    detail = stage.get("tokens_detail") or {}
    approx = "≈" if detail.get("approximate") or detail.get("method") == "max_steps upper bound" else ""
    how = {"sampled": ", sampled", "max_steps upper bound": ", upper bound"}.get(detail.get("method", ""), "")
    return f"{approx}{si(stage['tokens'])} tokens{how}"


def print_report(report: dict[str, Any], console: Any, top: int = 8) -> None:
    from rich.table import Table
    from rich.text import Text

    for st in report["stages"]:
        mem = st["memory"]
        table = Table(title=f"stage {st['stage']}: {_setting_line(st)}", title_justify="left")
        table.add_column("term")
        table.add_column("GiB", justify="right")
        table.add_column("how", overflow="fold")
        for t in mem["terms"]:
            table.add_row(t["name"], f"{t['gib']:.2f}", t["note"])
        if mem.get("load_peak_gib"):
            table.add_row("peak before training", f"{mem['load_peak_gib']:.2f}",
                          f"{mem.get('load_note', '')}; not part of the terms above")  # fmt: skip
        table.add_row("[bold]peak allocated[/bold]", f"[bold]{mem['peak_allocated_gib']:.2f}[/bold]",
                      f"at the {mem['peak_phase']}")  # fmt: skip
        loading = mem.get("load_peak_gib") and mem["reserved_gib"] <= mem["load_peak_gib"]
        how = (
            "the peak before training (loading does not fragment the pool)"
            if loading
            else (f"+{mem['assumptions']['fragmentation']:.0%} allocator fragmentation")
        )
        table.add_row("reserved", f"{mem['reserved_gib']:.2f}", how)
        table.add_row("[bold]need per GPU[/bold]", f"[bold]{mem['device_total_gib']:.2f}[/bold]",
                      f"+{mem['assumptions']['cuda_context_gib']} GiB CUDA context")  # fmt: skip
        console.print(table)
        if st.get("hint"):
            console.print(f"[yellow]hint:[/yellow] {st['hint']}")
        console.print(Text(f"tokens (stage {st['stage']}): {st['tokens_source']}"), soft_wrap=True)
        where = f", {st['nodes']} nodes × {st['gpus_per_node']}" if st.get("nodes", 1) > 1 else ""
        gpus = Table(title=f"GPUs for stage {st['stage']} ({tokens_label(st)}{where})", title_justify="left")
        for col in ("GPU", "memory GiB", "fits", "time", "cheapest", "on demand (all providers)", "prices read"):
            gpus.add_column(col, justify="right" if col in ("memory GiB", "time") else "left")
        for o in st["gpus"][:top]:
            costs = o["cost_usd"]
            cheapest = min(costs.items(), key=lambda kv: kv[1]) if costs else None
            gpus.add_row(
                o["gpu"], f"{o['memory_gib']:.1f}",
                ("[green]yes[/green]" if o["bf16"] else "yes, no bf16") if o["fits"] else "[red]no[/red]",
                "–" if o["hours"] is None else duration(o["hours"]),
                f"{usd(cheapest[1])} {cheapest[0]}" if cheapest else "–",
                ", ".join(f"{k} {usd(v)}" for k, v in sorted(costs.items(), key=lambda kv: kv[1])) or "–",
                ", ".join(sorted(set(o["prices_read"].values()))) or "–",
            )  # fmt: skip
        console.print(gpus)
    for note in report["notes"]:
        console.print(f"[dim]{note}[/dim]")
