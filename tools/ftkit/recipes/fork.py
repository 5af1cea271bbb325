"""`ftkit recipe new NAME --from RECIPE`: copy a recipe, rename it, optionally swap its base model or a
stage's dataset, and leave it valid (checked like `ftkit recipe validate` before it is put in place).

The fork is built in a hidden staging folder beside its destination and moved there only once it
validates, so a failed fork leaves nothing behind (and `--force` replaces an old fork only then).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftkit import envinfo
from ftkit.data.validate import validate_file
from ftkit.engines import get_engine
from ftkit.errors import ExitCode, FtkitError, Problem
from ftkit.recipes.fork_bounds import changed_stages, estimate_changes, stage_inputs
from ftkit.recipes.fork_readme import fork_readme
from ftkit.recipes.load import EXPECTED_FILE, RECIPE_FILE, LoadedRecipe, load_recipe, recipes_root, sample_counts
from ftkit.recipes.overrides import get_path, has_path
from ftkit.recipes.schema import NAME_PATTERN
from ftkit.recipes.yamltext import edit_or_rewrite

BIG_DATASET_BYTES = 100 * 2**20  # above this a copied dataset should not go into git as a plain file


@dataclass
class DatasetChange:
    stage: str
    source_file: str  # the file given on the command line
    path: str  # its copy, relative to the fork
    was: list[str]  # what the stage's engine config trained on before
    rows: int


@dataclass
class ForkResult:
    name: str
    dir: Path
    source: str
    source_dir: Path
    source_commit: str
    base_model: str | None = None  # the new base model, when it changed
    base_model_was: str | None = None
    datasets: list[DatasetChange] = field(default_factory=list)
    estimated: list[str] = field(default_factory=list)  # expected-metrics paths now `source: estimate`
    edits: list[str] = field(default_factory=list)  # "file: key: old -> new"
    comments_lost: list[str] = field(default_factory=list)  # files rewritten without their comments
    review: list[str] = field(default_factory=list)  # what a person should check before a full run
    samples: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return out | {"dir": str(self.dir), "source_dir": str(self.source_dir)}


def suggest_name(name: str) -> str:
    """A name that matches NAME_PATTERN, made from `name`."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.strip().lower()).strip("-._")
    return slug or "my-recipe"


def check_name(name: str) -> None:
    if not re.fullmatch(NAME_PATTERN, name):
        raise FtkitError.one(
            f"'{name}' is not a valid recipe name (lowercase letters, digits, '.', '_' and '-', starting with a "
            "letter or digit)",
            field="NAME",
            fix=f"use e.g. '{suggest_name(name)}'",
        )


def _destination(name: str, src: LoadedRecipe, root: Path, force: bool) -> Path:
    dest = root / name
    if dest.resolve() == src.dir.resolve():
        raise FtkitError.one(
            f"'{name}' is the recipe being forked", field="NAME", fix="give the fork a new name (e.g. my-" + name + ")"
        )
    if dest.exists() and not force:
        raise FtkitError.one(
            f"a recipe folder '{name}' already exists",
            file=dest,
            field="NAME",
            fix="choose another name, or pass --force to replace it (deleted once the fork validates)",
        )
    return dest


def parse_dataset_args(items: list[str]) -> dict[str, Path]:
    """`STAGE=PATH` strings -> {stage: path}."""
    out: dict[str, Path] = {}
    for item in items:
        stage, sep, path = item.partition("=")
        if not sep or not stage or not path:
            raise FtkitError.one(
                f"--dataset '{item}' is not STAGE=PATH", field="--dataset", fix="write it as --dataset sft=my.jsonl"
            )
        out[stage.strip()] = Path(path.strip())
    return out


def _check_datasets(src: LoadedRecipe, datasets: dict[str, Path]) -> dict[str, int]:
    """Every --dataset names a stage and a file whose every row obeys that stage's schema; rows per stage."""
    stages = [s.stage.name for s in src.stages]
    rows = {}
    for stage, path in datasets.items():
        if stage not in stages:
            raise FtkitError.one(f"--dataset: '{src.name}' has no stage '{stage}'", field="--dataset",
                                 fix=f"stages are: {', '.join(stages)}")  # fmt: skip
        if not path.is_file():
            raise FtkitError.one("dataset file not found", file=path, field=f"--dataset {stage}",
                                 fix="check the path (relative to the current directory)")  # fmt: skip
        schema = src.stage_files(stage).schema_path
        report = validate_file(path, schema)
        if not report.ok:
            what = "has no rows" if report.rows == 0 else f"has {report.invalid} of {report.rows} rows that break it"
            problems = [*report.problems[:20], Problem(
                f"{report.invalid} bad row(s) in all" if report.rows else "no rows", str(path), None, None,
                f"ftkit data validate {path} --schema {schema} --quarantine bad.jsonl (the bad rows with reasons)",
            )]  # fmt: skip
            raise FtkitError(f"--dataset {stage}={path}: {what} ({schema.name}); nothing was written",
                             problems, ExitCode.DATA_INVALID)  # fmt: skip
        rows[stage] = report.rows
    return rows


def _copy_dataset(path: Path, stage: str, work: Path) -> str:
    """Copy `path` into the fork's data/ (never over a file the recipe already has); its path in the fork."""
    data = work / "data"
    data.mkdir(exist_ok=True)
    target, n = data / path.name, 1
    while target.exists():
        target = data / (f"{stage}-{path.name}" if n == 1 else f"{stage}-{n}-{path.name}")
        n += 1
    shutil.copyfile(path, target)
    return target.relative_to(work).as_posix()


class _Editor:
    """Collects value changes per file of the staging copy and writes them, keeping comments where it can."""

    def __init__(self, work: Path, result: ForkResult) -> None:
        self.work, self.result = work, result
        self.changes: dict[str, dict[str, Any]] = {}

    def set(self, rel: str, dotted: str, value: Any, old: Any = None) -> None:
        self.changes.setdefault(rel, {})[dotted] = value
        if not isinstance(value, dict):
            self.result.edits.append(f"{rel}: {dotted}: {old} -> {value}")

    def write(self) -> None:
        for rel, changes in self.changes.items():
            path = self.work / rel
            text, kept = edit_or_rewrite(path.read_text(encoding="utf-8"), changes)
            path.write_text(text, encoding="utf-8")
            if not kept:
                self.result.comments_lost.append(rel)
        self.changes = {}


def _engine_edits(
    src: LoadedRecipe, editor: _Editor, base_model: str | None, copies: dict[str, str]
) -> dict[str, list[str]]:
    """Point every stage's engine config at the new base model and its stage's new dataset; what each
    replaced stage trained on before."""
    engine = get_engine(src.recipe.engine)
    was: dict[str, list[str]] = {}
    for files in src.stages:
        cfg, rel = files.config.data, files.stage.config
        if base_model and has_path(cfg, engine.base_model_key):
            editor.set(rel, engine.base_model_key, base_model, engine.base_model(cfg))
        if files.stage.name not in copies:
            continue
        was[files.stage.name] = engine.dataset_paths(cfg)
        try:
            keys = engine.local_dataset_keys(cfg, copies[files.stage.name])
        except IndexError:
            raise FtkitError.one(
                f"stage '{files.stage.name}': its engine config names no dataset to replace",
                file=files.config.path, fix="add a dataset entry to the engine config, then fork again",
            ) from None  # fmt: skip
        for key, value in keys.items():
            editor.set(rel, key, value, get_path(cfg, key) if has_path(cfg, key) else None)
    return was


def _review_notes(src: LoadedRecipe, work: Path, result: ForkResult) -> None:
    r = src.recipe
    if result.base_model:
        result.review += [
            f"recipe.yaml license ({r.license}) and license_note name the source's base model: set those of "
            f"{result.base_model}",
            "recipe.yaml description and the engine configs' model-specific keys (chat template, special/pad "
            f"tokens) were written for {result.base_model_was}: check them against {result.base_model}'s tokenizer",
        ]
        result.review += _vram_notes(work, r.hardware.min_vram_gb)
    if result.datasets and r.export.eval and r.export.eval.heldout:
        result.review.append(f"export.eval.heldout still points at the source's held-out rows "
                             f"({r.export.eval.heldout}): use held-out rows of your data")  # fmt: skip
    for d in result.datasets:
        if len(d.was) > 1:
            result.review.append(f"stage {d.stage} trained on {len(d.was)} datasets; only the first ({d.was[0]}) "
                                 "was replaced: edit its engine config for the others")  # fmt: skip
        size = (work / d.path).stat().st_size
        if size > BIG_DATASET_BYTES:
            result.review.append(f"{d.path} is {size / 2**20:.0f} MiB: keep it out of git (Git LFS, or a path "
                                 "outside the repository in the engine config)")  # fmt: skip


def _vram_notes(work: Path, min_vram_gb: float) -> list[str]:
    """What the estimator says the full profile needs with the new base model (or that it cannot say)."""
    from ftkit.estimate.report import estimate_report

    try:
        report = estimate_report(recipe=str(work), profile="full")
    except FtkitError as exc:
        return [f"VRAM not estimated ({exc.title}): hardware.min_vram_gb ({min_vram_gb:g}) is the source's"]
    need = {st["stage"]: st["memory"]["device_total_gib"] for st in report["stages"]}
    text = ", ".join(f"{s} ~{v:.1f} GiB" for s, v in need.items())
    over = max(need.values()) * 2**30 / 1e9 > min_vram_gb
    return [
        f"`ftkit estimate` puts the full profile at {text} per GPU (an estimate)"
        + (f": over hardware.min_vram_gb ({min_vram_gb:g} GB), raise it or shrink the setting" if over else "")
    ]


def _load_staged(work: Path, dest: Path, source: str, *, check_profiles: bool) -> LoadedRecipe:
    """Load (and validate) the staged fork; problems name the files as they would be at `dest`."""
    try:
        return load_recipe(str(work), check_profiles=check_profiles)
    except FtkitError as exc:
        for p in exc.problems:
            p.file = p.file.replace(str(work), str(dest)) if p.file else p.file
        raise FtkitError(f"the fork of {source} as {dest.name} does not validate; nothing was written",
                         exc.problems, exc.code) from exc  # fmt: skip


def fork_recipe(
    name: str,
    source: str,
    *,
    base_model: str | None = None,
    datasets: dict[str, Path] | None = None,
    force: bool = False,
    root: Path | None = None,
) -> ForkResult:
    """Copy recipe `source` to `<root>/<name>`, renamed, with an optional new base model and stage datasets;
    bounds those changes invalidate become estimates; the fork is validated before it is put in place."""
    check_name(name)
    src = load_recipe(source, root, check_profiles=False)
    base = (root or recipes_root()).resolve()
    dest = _destination(name, src, base, force)
    datasets = datasets or {}
    rows = _check_datasets(src, datasets)
    if base_model is not None and base_model == src.recipe.base_model:
        base_model = None
    result = ForkResult(name, dest, src.name, src.dir, envinfo.git_commit(src.dir), base_model,
                        src.recipe.base_model if base_model else None)  # fmt: skip
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.fork-", dir=base))
    try:
        work = staging / name
        shutil.copytree(src.dir, work, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints"))
        editor = _Editor(work, result)
        editor.set(RECIPE_FILE, "name", name, src.name)
        editor.set(EXPECTED_FILE, "recipe", name, src.name)
        if base_model:
            editor.set(RECIPE_FILE, "base_model", base_model, src.recipe.base_model)
        copies = {stage: _copy_dataset(path, stage, work) for stage, path in datasets.items()}
        was = _engine_edits(src, editor, base_model, copies)
        result.datasets = [DatasetChange(s, str(datasets[s]), p, was[s], rows[s]) for s, p in copies.items()]
        editor.write()
        forked = _load_staged(work, dest, src.name, check_profiles=False)
        init_from = {s.name: s.init_from for s in src.recipe.stages}
        changed = changed_stages(stage_inputs(src), stage_inputs(forked), init_from)
        for dotted, bound in estimate_changes(src, changed, src.name).items():
            editor.set(EXPECTED_FILE, dotted, bound)
            result.estimated.append(dotted.removeprefix("profiles."))
        editor.write()
        _review_notes(src, work, result)
        (work / "README.md").write_text(fork_readme(result, src), encoding="utf-8")
        checked = _load_staged(work, dest, src.name, check_profiles=True)
        result.samples = {s: {"rows": c["rows"], "valid": c["valid"]} for s, c in sample_counts(checked).items() if c}
        if dest.exists():
            shutil.rmtree(dest)
        work.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result
