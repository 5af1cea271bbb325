"""A run report a person can read: loss and reward curves (PNG) and a Markdown summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftkit.recipes.metrics import CheckRow


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
    if plot:
        lines += ["", f"![curves]({plot.name})"]
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
