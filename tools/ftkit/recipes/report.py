"""A run report a person can read: loss and reward curves (PNG) and a Markdown summary, with what happened on the
way (stops, resumes, a refused pre-flight, gates passed with --allow-pii or --force)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftkit.recipes.metrics import CheckRow
from ftkit.recipes.resume import PREFLIGHT_CHECKS, REFUSED


def plot_curves(histories: dict[str, list[dict[str, float]]], out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, str, list[tuple[str, list[float], list[float]]]]] = []
    for stage, hist in histories.items():
        train = [r for r in hist if "loss" in r and "train_runtime" not in r and "eval_loss" not in r]
        steps = [r.get("step", i + 1) for i, r in enumerate(train)]
        series = [("train loss", steps, [r["loss"] for r in train])]
        evals = [r for r in hist if "eval_loss" in r]
        if evals:
            last = steps[-1] if steps else 0
            series.append(("eval loss", [r.get("step", last) for r in evals], [r["eval_loss"] for r in evals]))
        panels.append((f"{stage}: loss", "loss", series))
        if any("rewards/margins" in r for r in train):
            panels.append(
                (
                    f"{stage}: DPO rewards",
                    "reward",
                    [
                        ("margin (chosen - rejected)", steps, [r.get("rewards/margins", 0.0) for r in train]),
                        ("accuracy", steps, [r.get("rewards/accuracies", 0.0) for r in train]),
                    ],
                )
            )
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (title, ylabel, series) in zip(axes[0], panels, strict=True):
        for label, xs, ys in series:
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def cell(value: Any) -> str:
    """A table cell: '–' for None, 4 significant digits for floats."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _short_model(base_model: str, run_dir: str) -> str:
    """A run's own merged model as 'sft/merged'; a cache dir by its name; a hub id as it is."""
    path = Path(base_model)
    if path.is_relative_to(run_dir):
        return str(path.relative_to(run_dir))
    return path.name if path.is_absolute() else base_model


def run_events(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's stops, resumes and refused pre-flights in time order. Each: at, what ('stopped': the checkpoint
    saved; 'resumed': the checkpoint continued from; 'refused': the check), stage, step, signal, checkpoint."""
    found = [{"what": "stopped", **{k: i.get(k) for k in ("at", "stage", "step", "signal", "checkpoint")}}
             for i in metrics.get("interruptions") or []]  # fmt: skip
    found += [{"what": "resumed", "at": r.get("at"), "stage": r.get("stage"), "step": r.get("step"), "signal": None,
               "checkpoint": r.get("checkpoint"), "skipped_stages": r.get("skipped_stages") or []}
              for r in metrics.get("resumes") or []]  # fmt: skip
    found += [{"what": "refused", "at": r.get("at"), "stage": r.get("stage"), "step": None, "signal": None,
               "checkpoint": None, "check": r.get("check")} for r in metrics.get("refusals") or []]  # fmt: skip
    order = {"stopped": 0, "resumed": 1, "refused": 2}
    return sorted(found, key=lambda e: (str(e.get("at") or ""), order[e["what"]]))


def describe_event(event: dict[str, Any], run_dir: str = "") -> str:
    """One line: 'sft stopped by SIGTERM at step 6, checkpoint saved: sft/output/checkpoint-6'."""
    stage = event.get("stage") or "the run"
    ckpt = _short_model(str(event["checkpoint"]), run_dir) if event.get("checkpoint") else None
    step = f" at step {event['step']}" if event.get("step") is not None else ""
    if event["what"] == "stopped":
        saved = f", checkpoint saved: `{ckpt}`" if ckpt else f", no checkpoint: {stage} starts from its beginning"
        return f"{stage} stopped by {event.get('signal') or 'a signal'}{step}{saved}"
    if event["what"] == "resumed":
        skipped = event.get("skipped_stages") or []
        kept = f" ({', '.join(skipped)} finished before: kept)" if skipped else ""
        if ckpt:
            return f"resumed: {stage} continued from `{ckpt}`{step}{kept}"
        return f"resumed: no checkpoint to continue from, the next stage started from its beginning{kept}"
    return f"resume refused by {PREFLIGHT_CHECKS.get(str(event.get('check')), 'the pre-flight')}" + (
        f" (stage {event['stage']})" if event.get("stage") else ""
    )


def gate_overrides(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The pre-flight gates this run went past: the PII gate with --allow-pii (per stage and file: the entities over
    their limits, in how many rows and at which lines) and the VRAM pre-flight with --force (need and budget)."""
    out: list[dict[str, Any]] = []
    for stage, st in (metrics.get("stages") or {}).items():
        for scan in st.get("pii") or []:
            gate = scan.get("gate") or {}
            if gate.get("verdict") != "overridden":
                continue
            found = [{**v, "lines": [e.get("line") for e in (scan.get("examples") or {}).get(v.get("entity"), [])]}
                     for v in gate.get("violations") or []]  # fmt: skip
            out.append({"gate": "pii", "flag": "--allow-pii", "stage": stage, "file": scan.get("path"),
                        "rows": scan.get("rows"), "found": found})  # fmt: skip
        vram = st.get("vram_estimate") or {}
        if vram.get("verdict") == "forced":
            out.append({"gate": "vram", "flag": "--force", "stage": stage, "need_gib": vram.get("need_gib"),
                        "budget_gib": vram.get("budget_gib")})  # fmt: skip
    return out


def describe_override(o: dict[str, Any]) -> str:
    """One line saying what a gate found and that the run went past it, and with which flag."""
    if o["gate"] == "pii":
        found = "; ".join(
            f"{v.get('entity')} in {v.get('rows')} of {o.get('rows')} rows (allowed: {v.get('max_rows')}"
            + (f"; first at line {', '.join(str(n) for n in v['lines'])})" if v.get("lines") else ")")
            for v in o["found"]
        )
        return f"{o['stage']}: the PII gate found {found} in `{o.get('file')}` and let it through ({o['flag']})"
    return (
        f"{o['stage']}: the VRAM pre-flight estimated {cell(o.get('need_gib'))} GiB per GPU on a "
        f"{cell(o.get('budget_gib'))} GiB GPU (it refuses what will not fit) and was overridden ({o['flag']})"
    )


def _refused_lines(metrics: dict[str, Any]) -> list[str]:
    r = metrics.get("refused") or {}
    check = PREFLIGHT_CHECKS.get(str(r.get("check")), "the pre-flight")
    stage = f" on stage '{r['stage']}'" if r.get("stage") else ""
    fresh = metrics.get("status") == REFUSED
    lines = ["## Refused before training" if fresh else "## Resume refused", "",
             f"{check[0].upper() + check[1:]} refused {'the run' if fresh else 'the resume'}{stage} "
             f"(exit code {r.get('exit_code')}) at {r.get('at')}: {r.get('message')}", ""]  # fmt: skip
    for p in r.get("problems") or []:
        where = ":".join(str(x) for x in (p.get("file"), p.get("line")) if x)
        field = f" field `{p['field']}`" if p.get("field") else ""
        lines.append(f"- {'`' + where + '`' if where else ''}{field}: {p.get('message')}")
        if p.get("fix"):
            lines.append(f"  - fix: {p['fix']}")
    more = int(r.get("problems_total") or 0) - len(r.get("problems") or [])
    if more > 0:
        lines.append(f"- … and {more} more (the error message lists them all)")
    lines += ["", "Nothing trained: fix what it names, then start a new run." if fresh else
              f"The run is still resumable (status {metrics.get('status')}): fix what it names, then "
              f"`ftkit recipe run --resume {metrics.get('run_dir')}`.", ""]  # fmt: skip
    return lines


def markdown_summary(metrics: dict[str, Any], rows: list[CheckRow], plot: Path | None) -> str:
    lines = [
        f"# Run report: {metrics['recipe']} ({metrics['profile']} profile)",
        "",
        f"- run dir: `{metrics['run_dir']}`",
        f"- started: {metrics['started']}; git commit: `{metrics['git_commit']}`",
        f"- hardware: {metrics['hardware_label']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in metrics["versions"].items()),
        f"- status: **{metrics['status']}**",
        "",
    ]
    if metrics.get("refused"):
        lines += _refused_lines(metrics)
    if metrics.get("status") == REFUSED:
        return "\n".join([*lines, "- `metrics.json`: the refusal, machine-readable", ""])
    lines += [
        "## Stages",
        "",
        "| stage | base model | steps | loss first → tail | eval loss | reward acc (tail) | margin first → tail "
        "| tokens/s | peak memory | wall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, st in metrics["stages"].items():
        lines.append(
            f"| {name} | `{_short_model(str(st.get('base_model', '')), metrics['run_dir'])}` | {cell(st.get('steps'))} "
            f"| {cell(st.get('train_loss_first'))} → {cell(st.get('train_loss_tail'))} | {cell(st.get('eval_loss'))} "
            f"| {cell(st.get('rewards_accuracy_tail'))} "
            f"| {cell(st.get('rewards_margin_first'))} → {cell(st.get('rewards_margin_tail'))} "
            f"| {cell(st.get('tokens_per_second'))} | {cell(st.get('peak_memory_gib'))} GiB "
            f"({st.get('peak_memory_kind')}) | {cell(st.get('wall_seconds'))} s |"
        )
    if any(len(st.get("attempts") or []) > 1 for st in metrics["stages"].values()):
        lines += ["", "tokens/s and wall time count every attempt of a stage (tokens of all attempts / training "
                  "seconds of all attempts)."]  # fmt: skip
    if plot:
        lines += ["", f"![curves]({plot.name})"]
    events = run_events(metrics)
    if events:
        lines += ["", "## Interruptions", "", "| when | what |", "| --- | --- |"]
        lines += [f"| {e.get('at')} | {describe_event(e, metrics['run_dir'])} |" for e in events]
    overrides = gate_overrides(metrics)
    if overrides:
        lines += ["", "## Gates overridden", ""] + [f"- {describe_override(o)}" for o in overrides]
    lines += ["", "## Metrics gate (expected-metrics.yaml)", ""]
    if rows:
        lines += [
            "| stage | metric | value | min | max | source | result |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            lines.append(
                f"| {r.stage} | {r.metric} | {cell(r.value)} | {cell(r.bound.min)} | {cell(r.bound.max)} "
                f"| {r.bound.source} | {'PASS' if r.passed else 'FAIL: ' + r.reason} |"
            )
    else:
        lines.append(f"No bounds for the {metrics['profile']} profile.")
    lines += [
        "",
        "## Files",
        "",
        "- `resolved/<stage>.yaml`: the engine config as trained; `resolved/<stage>.changes.yaml`: every key that "
        "differs from the recipe's YAML, and why",
        "- `<stage>/train.log`: the engine's full log; `<stage>/output/`: the adapter",
        "- `metrics.json`: everything above, machine-readable",
        "",
    ]
    return "\n".join(lines)
