"""A run report a person can read: loss and reward curves (PNG) and a Markdown summary, with what happened on the
way (stops, resumes, a refused pre-flight, gates passed with --allow-pii or --force)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftkit.pipeline.metrics_gate import CheckRow
from ftkit.pipeline.resume import PREFLIGHT_CHECKS, REFUSED
from ftkit.run_record import cell, describe_event, describe_override, gate_overrides, run_events, short_model


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
            f"| {name} | `{short_model(str(st.get('base_model', '')), metrics['run_dir'])}` | {cell(st.get('steps'))} "
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
