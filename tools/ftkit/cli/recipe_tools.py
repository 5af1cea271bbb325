"""`ftkit recipe new` and `ftkit recipe catalog`: parse, call the library, print (or --json)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from ftkit.cli.console import OK, consoles, print_json, say
from ftkit.errors import FtkitError

STALE = 1  # `recipe catalog --check`: the README's table differs from the recipes (CI fails on it)


# ------------------------------------------------------------------ recipe new


def cmd_recipe_new(args: argparse.Namespace) -> int:
    from ftkit.fork.create import fork_recipe, parse_stage_files

    console, out = consoles()
    datasets = parse_stage_files(args.dataset or [], "--dataset")
    heldouts = parse_stage_files(args.heldout or [], "--heldout")
    with console.status(f"forking {args.source} as {args.name} and validating it"):
        result = fork_recipe(args.name, args.source, base_model=args.base_model, datasets=datasets,
                             heldouts=heldouts, force=args.force)  # fmt: skip
    if args.json:
        print_json(result.to_dict())
        return 0
    counts = ", ".join(f"{s}: {c['valid']}/{c['rows']} rows valid" for s, c in result.samples.items())
    say(out, OK, f" {result.name}: forked from {result.source} ({result.source_commit}) into {result.dir}; "
        f"validated (all profiles, samples {counts})")  # fmt: skip
    for edit in result.edits:
        say(out, f"  changed  {edit}")
    for d in result.datasets:
        lines = [f"  data     {d.stage}: {d.source_file} ({d.rows} rows, schema-valid) -> {d.train} ({d.train_rows} "
                 f"rows, full profile), {d.smoke} ({d.smoke_rows} rows, smoke profile)"]  # fmt: skip
        if d.heldout:
            moved = f", {d.moved_to_train} repeating a training row moved back" if d.moved_to_train else ""
            lines.append(f"  held-out {d.heldout} ({d.heldout_rows} rows, {d.heldout_from}{moved}; no overlap with "
                         "training rows)")  # fmt: skip
        for line in lines:
            say(out, line)
    for bound in result.estimated:
        say(out, f"  estimate {bound}: the source's figure does not apply (source: estimate, with a note)")
    for rel in result.comments_lost:
        say(out, "  ", ("note", "yellow"), f": {rel} was rewritten; its comments could not be kept")
    for item in result.review:
        say(out, "  ", ("check", "yellow"), f": {item}")
    say(out, f"next: make recipe NAME={result.name} PROFILE=smoke")
    return 0


# ------------------------------------------------------------------ recipe catalog


def cmd_recipe_catalog(args: argparse.Namespace) -> int:
    from ftkit.recipe_table import README, DatasetSize, catalog_entries, render_block, splice
    from ftkit.recipes.load import recipes_root

    console, _ = consoles()
    root = recipes_root()
    size = DatasetSize()
    with console.status("estimating every recipe's full profile"):
        entries = catalog_entries(root, size)
    block = render_block(entries, size)
    readme = root / README
    if args.json:
        print_json({"readme": str(readme), "size": asdict(size), "recipes": [e.to_dict() for e in entries]})
    if not (args.write or args.check):
        if not args.json:
            print(block)
        return 0
    if not readme.is_file():
        raise FtkitError.one("recipes/README.md is missing", file=readme, fix="create it with the catalog markers")
    text = readme.read_text(encoding="utf-8")
    new = splice(text, block, str(readme))
    if args.check:
        if new != text:
            say(console, ("stale", "red"), f": {readme}'s catalog differs from the recipes; run `ftkit recipe "
                "catalog --write` and commit it")  # fmt: skip
            return STALE
        say(console, OK, f" {readme}: the catalog is up to date")
        return 0
    readme.write_text(new, encoding="utf-8")
    say(console, f"wrote the catalog of {len(entries)} recipe(s) into {readme}")
    return 0


def register_recipe_tools(rsub: Any) -> None:
    p = rsub.add_parser(
        "new",
        help="fork a recipe: copy, rename, optionally a new base model or stage dataset; validated",
        description="Copies recipes/RECIPE to recipes/NAME and renames it (recipe.yaml name, expected-metrics.yaml "
        "recipe). --base-model replaces the base model in recipe.yaml and every engine config; --dataset copies a "
        "file into the fork's data/ and points that stage's engine config at it (every row must obey the stage's "
        "schema). Bounds in expected-metrics.yaml that these changes invalidate become `source: estimate` with a "
        "note. The fork is validated like `ftkit recipe validate` before it is put in place.",
    )
    p.add_argument("name", help="the new recipe's name (lowercase letters, digits, . _ -)")
    p.add_argument("--from", dest="source", required=True, metavar="RECIPE", help="the recipe to fork")
    p.add_argument("--base-model", help="a Hub id or local model dir for the full profile")
    p.add_argument("--dataset", action="append", metavar="STAGE=PATH",
                   help="a stage's training rows (repeatable), checked against its schema and copied into the fork's "
                   "data/: the full profile trains on them, the smoke profile on an evenly spread slice of as many "
                   "rows as the source's smoke run, and the evaluated (last) stage holds 10%% of them out (at most "
                   "200) unless --heldout gives held-out rows")  # fmt: skip
    p.add_argument("--heldout", action="append", metavar="STAGE=PATH",
                   help="held-out rows of the evaluated (last) stage, never trained on: refused (exit 3) when they "
                   "repeat a training row")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace an existing recipe folder NAME")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_recipe_new)

    p = rsub.add_parser(
        "catalog",
        help="the recipe table of recipes/README.md (VRAM, time and cost from ftkit estimate; bound sources)",
        description="Prints the generated catalog (Markdown); --write puts it between the marker comments of "
        "recipes/README.md; --check exits 1 when the file's table is stale.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="update recipes/README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 when recipes/README.md is stale")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_recipe_catalog)
