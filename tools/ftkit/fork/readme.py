"""The README stub of a forked recipe: where it came from, what changed, what to check before a full run."""

from __future__ import annotations

import os
import shlex
from typing import TYPE_CHECKING

from ftkit.recipes.load import LoadedRecipe

if TYPE_CHECKING:
    from ftkit.fork.create import ForkResult
    from ftkit.fork.data import StageData

ENGINE_NAMES = {"axolotl": "Axolotl", "trl": "TRL"}


def fork_command(result: ForkResult) -> str:
    parts = ["ftkit", "recipe", "new", result.name, "--from", result.source]
    if result.base_model:
        parts += ["--base-model", result.base_model]
    for d in result.datasets:
        parts += ["--dataset", f"{d.stage}={d.source_file}"]
        if d.heldout_from and d.heldout_from.startswith("--heldout "):
            parts += ["--heldout", f"{d.stage}={d.heldout_from.removeprefix('--heldout ')}"]
    return shlex.join(parts)


def data_lines(d: StageData, was: list[str]) -> list[tuple[str, str]]:
    """Table rows: which file each profile of a replaced stage trains on, and the held-out rows."""
    rows = [
        (f"data, stage {d.stage}", f"`{d.train}`: {d.train_rows:,} rows of `{d.source_file}` (full profile; was "
         f"`{', '.join(was) or 'nothing'}`)"),
        (f"smoke data, stage {d.stage}", f"`{d.smoke}`: {d.smoke_rows:,} rows spread evenly over `{d.train}`"),
    ]  # fmt: skip
    if d.heldout:
        moved = f"; {d.moved_to_train} held-out row(s) that repeated a training row went back to training" if (
            d.moved_to_train) else ""  # fmt: skip
        rows.append(("held-out rows (evaluation)", f"`{d.heldout}`: {d.heldout_rows:,} rows, {d.heldout_from}{moved}; "
                     "never trained on (the pre-flight checks it)"))  # fmt: skip
    return rows


def fork_readme(result: ForkResult, src: LoadedRecipe) -> str:
    link = os.path.relpath(src.dir / "README.md", result.dir)
    base = (f"`{result.base_model}` (was `{result.base_model_was}`)" if result.base_model
            else f"`{src.recipe.base_model}` (as in the source)")  # fmt: skip
    rows = [
        ("source recipe", f"[`{result.source}`]({link}) at commit `{result.source_commit}`"),
        ("engine", ENGINE_NAMES.get(src.recipe.engine, src.recipe.engine)),
        ("base model", base),
    ]
    changed = {d.stage: d for d in result.datasets}
    for stage in src.recipe.stages:
        if d := changed.get(stage.name):
            rows += data_lines(d, result.was.get(stage.name, []))
        else:
            rows.append((f"data, stage {stage.name}", "as in the source"))
    bounds = (f"{len(result.estimated)} bound(s) are now `source: estimate`: the source's figures do not apply "
              f"to what changed ({', '.join(f'`{b}`' for b in result.estimated)})" if result.estimated
              else "as in the source (nothing they depend on changed)")  # fmt: skip
    rows.append(("metric bounds", bounds))
    lines = [
        f"# {result.name}",
        "",
        f"Forked from [`{result.source}`]({link}) (commit `{result.source_commit}`, from `git rev-parse HEAD`) with",
        "",
        "```bash",
        fork_command(result),
        "```",
        "",
        f"What the source is: {src.recipe.description}",
        "",
        "| | |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
    ]
    if result.review:
        lines += ["## Check before a full run", "", *[f"- {item}" for item in result.review], ""]
    lines += [
        "## Run it",
        "",
        "```bash",
        f"ftkit recipe validate {result.name}",
        f"make recipe NAME={result.name} PROFILE=smoke   # CPU, the smoke profile",
        f"ftkit estimate --recipe {result.name}           # GPU memory, time and cost of the full profile",
        f"make recipe NAME={result.name}                 # the full profile on a GPU",
        "```",
        "",
        f"Hardware, settings and how the recipe was built: see the [source recipe's README]({link}). "
        "Replace this stub with what this recipe is for once it has run.",
        "",
    ]
    return "\n".join(lines)


def fork_data_readme(result: ForkResult) -> str:
    """data/README.md of a fork with its own data: each file, where it came from and which profile reads it."""
    lines = [f"# Data of {result.name}", "", "Written by `" + fork_command(result) + "`:", "", "| | |", "| --- | --- |"]
    for d in result.datasets:
        lines += [f"| {k} | {v} |" for k, v in data_lines(d, result.was.get(d.stage, []))]
    return "\n".join([*lines, "", "Files of stages not listed here are the source recipe's.", ""])
