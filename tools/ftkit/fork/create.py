"""`ftkit recipe new NAME --from RECIPE`: copy a recipe, rename it, optionally swap its base model or a
stage's data (every profile's: `fork_data`), and leave it valid (checked like `ftkit recipe validate` before it
is put in place).

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
from ftkit.data.split import leak_problems
from ftkit.data.tokens import count_rows
from ftkit.data.validate import validate_file
from ftkit.dotted_keys import get_path, has_path
from ftkit.engines import get_engine
from ftkit.errors import ExitCode, FtkitError, Problem
from ftkit.fork.bounds import changed_stages, estimate_changes, stage_inputs
from ftkit.fork.data import (
    SPLIT_SEED,
    StageData,
    copy_into,
    free_name,
    rows_in_split,
    split_heldout,
    write_slice,
)
from ftkit.fork.readme import fork_data_readme, fork_readme
from ftkit.recipes.load import EXPECTED_FILE, RECIPE_FILE, LoadedRecipe, load_recipe, recipes_root, sample_counts
from ftkit.recipes.resolve import resolve_stage
from ftkit.recipes.schema import NAME_PATTERN
from ftkit.yaml_edit import Key, edit_or_rewrite

BIG_DATASET_BYTES = 100 * 2**20  # above this a copied dataset should not go into git as a plain file


@dataclass
class ForkResult:
    name: str
    dir: Path
    source: str
    source_dir: Path
    source_commit: str
    base_model: str | None = None  # the new base model, when it changed
    base_model_was: str | None = None
    datasets: list[StageData] = field(default_factory=list)
    estimated: list[str] = field(default_factory=list)  # expected-metrics paths now `source: estimate`
    edits: list[str] = field(default_factory=list)  # "file: key: old -> new"
    comments_lost: list[str] = field(default_factory=list)  # files rewritten without their comments
    review: list[str] = field(default_factory=list)  # what a person should check before a full run
    samples: dict[str, Any] = field(default_factory=dict)
    was: dict[str, list[str]] = field(default_factory=dict)  # what each replaced stage trained on before

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


def parse_stage_files(items: list[str], flag: str = "--dataset") -> dict[str, Path]:
    """`STAGE=PATH` strings -> {stage: path}."""
    out: dict[str, Path] = {}
    for item in items:
        stage, sep, path = item.partition("=")
        if not sep or not stage or not path:
            raise FtkitError.one(f"{flag} '{item}' is not STAGE=PATH", field=flag,
                                 fix=f"write it as {flag} sft=my.jsonl")  # fmt: skip
        out[stage.strip()] = Path(path.strip())
    return out


parse_dataset_args = parse_stage_files


def _eval_stage(src: LoadedRecipe) -> str | None:
    """The stage whose format the evaluation's held-out rows have (the last), when the recipe evaluates some."""
    plan = src.recipe.export.eval
    return src.recipe.stages[-1].name if plan is not None and plan.heldout else None


def _check_files(src: LoadedRecipe, files: dict[str, Path], flag: str) -> dict[str, int]:
    """Every STAGE=PATH names a stage and a file whose every row obeys that stage's schema; rows per stage."""
    stages = [s.stage.name for s in src.stages]
    rows = {}
    for stage, path in files.items():
        if stage not in stages:
            raise FtkitError.one(f"{flag}: '{src.name}' has no stage '{stage}'", field=flag,
                                 fix=f"stages are: {', '.join(stages)}")  # fmt: skip
        if not path.is_file():
            raise FtkitError.one("dataset file not found", file=path, field=f"{flag} {stage}",
                                 fix="check the path (relative to the current directory)")  # fmt: skip
        schema = src.stage_files(stage).schema_path
        report = validate_file(path, schema)
        if not report.ok:
            what = "has no rows" if report.rows == 0 else f"has {report.invalid} of {report.rows} rows that break it"
            problems = [*report.problems[:20], Problem(
                f"{report.invalid} bad row(s) in all" if report.rows else "no rows", str(path), None, None,
                f"ftkit data validate {path} --schema {schema} --quarantine bad.jsonl (the bad rows with reasons)",
            )]  # fmt: skip
            raise FtkitError(f"{flag} {stage}={path}: {what} ({schema.name}); nothing was written",
                             problems, ExitCode.DATA_INVALID)  # fmt: skip
        rows[stage] = report.rows
    return rows


def _check_heldouts(src: LoadedRecipe, heldouts: dict[str, Path], datasets: dict[str, Path]) -> None:
    """--heldout names the evaluated stage of a recipe that evaluates held-out rows, together with its --dataset."""
    evaluated = _eval_stage(src)
    for stage in heldouts:
        if evaluated is None:
            raise FtkitError.one(f"--heldout: {src.name} scores no held-out rows (export.eval.heldout is not set)",
                                 file=src.source.path, field="--heldout",
                                 fix="leave out --heldout, or set export.eval.heldout in the fork")  # fmt: skip
        if stage != evaluated:
            raise FtkitError.one(f"--heldout: the evaluation scores rows of stage '{evaluated}', not '{stage}'",
                                 field="--heldout", fix=f"write --heldout {evaluated}=PATH")  # fmt: skip
        if stage not in datasets:
            raise FtkitError.one(f"--heldout {stage}=… without --dataset {stage}=…: held-out rows of your data "
                                 "need your training rows", field="--heldout",
                                 fix=f"add --dataset {stage}=YOUR_TRAINING_ROWS")  # fmt: skip


class _Editor:
    """Collects value changes per file of the staging copy and writes them, keeping comments where it can."""

    def __init__(self, work: Path, result: ForkResult) -> None:
        self.work, self.result = work, result
        self.changes: dict[str, dict[Key, Any]] = {}

    def set(self, rel: str, key: Key, value: Any, old: Any = None) -> None:
        self.changes.setdefault(rel, {})[key] = value
        if not isinstance(value, dict) and value != old:
            self.result.edits.append(f"{rel}: {'.'.join(key) if isinstance(key, tuple) else key}: {old} -> {value}")

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


def _smoke_rows(src: LoadedRecipe, stage: str) -> int:
    """Rows the source's smoke profile trains stage `stage` on (its local dataset through its split's slice), so
    the fork's smoke slice keeps the run as short as the source's; the stage's sample when that is not local."""
    engine = get_engine(src.recipe.engine)
    cfg = resolve_stage(src, stage, "smoke").config
    for path in engine.dataset_paths(cfg):
        local = src.dir / path
        if local.is_file():
            key = next(iter(engine.local_dataset_keys(cfg, path)))
            entry = get_path(cfg, key.rsplit(".", 1)[0])
            return rows_in_split(entry.get("split"), count_rows(local))
    return count_rows(src.stage_files(stage).sample_path)


def _replaced_files(src: LoadedRecipe, stages: set[str], evaluated: bool) -> set[str]:
    """The source's data files (relative paths) only the replaced stages read: their samples and smoke datasets,
    and the held-out rows when the evaluated stage is replaced. Removed from the fork before its own are written."""
    engine = get_engine(src.recipe.engine)

    def reads(stage: str) -> set[str]:
        files = {src.recipe.stage(stage).sample}
        for profile in src.recipe.profiles:
            cfg = resolve_stage(src, stage, profile).config
            files |= {p for p in engine.dataset_paths(cfg) if (src.dir / p).is_file()}
        return files

    gone = set().union(*(reads(s) for s in stages)) if stages else set()
    keep = set().union(*(reads(s.name) for s in src.recipe.stages if s.name not in stages))
    plan = src.recipe.export
    if evaluated and plan.eval and plan.eval.heldout:
        gone.add(plan.eval.heldout)
    keep |= {plan.calibration} if plan.calibration else set()
    return {f for f in gone - keep if (src.dir / f).resolve().is_relative_to(src.dir.resolve())}


def _fork_data(
    src: LoadedRecipe, work: Path, editor: _Editor, datasets: dict[str, Path], heldouts: dict[str, Path],
    rows: dict[str, int],
) -> tuple[list[StageData], dict[str, str]]:  # fmt: skip
    """Write each replaced stage's files into the fork's data/ (training rows, held-out rows, the smoke slice) and
    point recipe.yaml's smoke profile, sample and held-out file at them; the engine config paths to set."""
    engine = get_engine(src.recipe.engine)
    evaluated = _eval_stage(src)
    for rel in _replaced_files(src, set(datasets), evaluated in datasets):
        (work / rel).unlink(missing_ok=True)
    data_dir = work / "data"
    data_dir.mkdir(exist_ok=True)
    out, train_paths = [], {}
    for stage, path in datasets.items():
        stem = path.name.split(".")[0] or stage
        d = StageData(stage, str(path), rows[stage], "", 0, "", 0)
        if stage == evaluated and stage in heldouts:
            train = copy_into(path, data_dir, path.name)
            held = copy_into(heldouts[stage], data_dir, heldouts[stage].name)
            leaks = leak_problems(train, held, field="--heldout", fix=(
                f"remove those rows from {heldouts[stage]} (`ftkit data leakage {path} {heldouts[stage]}` lists them "
                "all), leave out --heldout to let recipe new hold rows out of your data, or make both files with "
                "`ftkit data split`"))  # fmt: skip
            if leaks:
                for p in leaks:
                    p.file = str(heldouts[stage]) if p.file == str(held) else p.file
                    p.message = p.message.replace(train.name, path.name)
                raise FtkitError(f"--heldout {stage}={heldouts[stage]}: held-out rows repeat rows of {path}; nothing "
                                 "was written", leaks, ExitCode.DATA_INVALID)  # fmt: skip
            d.train_rows, d.heldout_rows = rows[stage], count_rows(held)
            d.heldout_from = f"--heldout {heldouts[stage]}"
        elif stage == evaluated:
            train, held = free_name(data_dir, stem, "train"), free_name(data_dir, stem, "heldout")
            d.train_rows, d.heldout_rows, d.moved_to_train = split_heldout(path, train, held, rows[stage])
            d.heldout_from = f"split off {path.name} (seed {SPLIT_SEED})"
        else:
            train, held = copy_into(path, data_dir, path.name), None
            d.train_rows = rows[stage]
        smoke = free_name(data_dir, stem, "smoke")
        d.smoke_rows = write_slice(train, smoke, _smoke_rows(src, stage), d.train_rows)
        d.train, d.smoke = train.relative_to(work).as_posix(), smoke.relative_to(work).as_posix()
        train_paths[stage] = d.train
        index = [s.name for s in src.recipe.stages].index(stage)
        editor.set(RECIPE_FILE, f"stages.{index}.sample", d.smoke, src.recipe.stages[index].sample)
        smoke_cfg = resolve_stage(src, stage, "smoke").config
        for key, value in engine.local_dataset_keys(smoke_cfg, d.smoke).items():
            old = get_path(smoke_cfg, key) if has_path(smoke_cfg, key) else None
            editor.set(RECIPE_FILE, ("profiles", "smoke", "stages", stage, key), value, old)
        if held is not None:
            d.heldout = held.relative_to(work).as_posix()
            editor.set(RECIPE_FILE, "export.eval.heldout", d.heldout, src.recipe.export.eval.heldout)  # type: ignore[union-attr]
        out.append(d)
    return out, train_paths


def _pii_notes(src: LoadedRecipe, work: Path, data: list[StageData]) -> list[str]:
    """What the recipe's PII gate will say of the fork's training rows: refused rows are found now, not at the
    start of the first run."""
    from ftkit.pii.gate import policy_settings, violations
    from ftkit.pii.scan import scan_file

    policy = src.recipe.pii
    settings, limits = policy_settings(policy.fields, "off", dict(policy.max_rows))  # the rule-based entities
    notes = []
    for d in data:
        report = scan_file(work / d.train, settings, max_examples=1)
        over = violations(report, limits)
        if over:
            found = ", ".join(f"{v.rows} rows carry {v.entity} (allowed {v.max_rows})" for v in over)
            notes.append(f"{d.train}: {found}: the PII gate refuses every profile that trains on these rows; clean "
                         f"them (`ftkit pii clean {d.source_file}`) and fork again, or set pii.max_rows")  # fmt: skip
    return notes


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
    result.review += _pii_notes(src, work, result.datasets)
    for d in result.datasets:
        if len(result.was.get(d.stage, [])) > 1:
            first = result.was[d.stage][0]
            result.review.append(f"stage {d.stage} trained on {len(result.was[d.stage])} datasets; only the first "
                                 f"({first}) was replaced: edit its engine config for the others")  # fmt: skip
        size = (work / d.train).stat().st_size
        if size > BIG_DATASET_BYTES:
            result.review.append(f"{d.train} is {size / 2**20:.0f} MiB: keep it out of git (Git LFS, or a path "
                                 "outside the repository in the engine config)")  # fmt: skip


def _vram_notes(work: Path, min_vram_gb: float) -> list[str]:
    """What the estimator says the full profile needs with the new base model (or that it cannot say)."""
    from ftkit.estimate.summary import estimate_report

    try:
        report = estimate_report(recipe=str(work), profile="full", count_tokens=False)
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
    heldouts: dict[str, Path] | None = None,
    force: bool = False,
    root: Path | None = None,
) -> ForkResult:
    """Copy recipe `source` to `<root>/<name>`, renamed, with an optional new base model and stage datasets;
    bounds those changes invalidate become estimates; the fork is validated before it is put in place."""
    check_name(name)
    src = load_recipe(source, root, check_profiles=False)
    base = (root or recipes_root()).resolve()
    dest = _destination(name, src, base, force)
    datasets, heldouts = datasets or {}, heldouts or {}
    rows = _check_files(src, datasets, "--dataset")
    _check_heldouts(src, heldouts, datasets)
    _check_files(src, heldouts, "--heldout")
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
        result.datasets, copies = _fork_data(src, work, editor, datasets, heldouts, rows)
        result.was = _engine_edits(src, editor, base_model, copies)
        editor.write()
        forked = _load_staged(work, dest, src.name, check_profiles=False)
        init_from = {s.name: s.init_from for s in src.recipe.stages}
        changed = changed_stages(stage_inputs(src), stage_inputs(forked), init_from)
        for dotted, bound in estimate_changes(src, changed, src.name).items():
            editor.set(EXPECTED_FILE, dotted, bound)
            result.estimated.append(dotted.removeprefix("profiles."))
        editor.write()
        _review_notes(src, work, result)
        if result.datasets:
            (work / "data" / "README.md").write_text(fork_data_readme(result), encoding="utf-8")
        (work / "README.md").write_text(fork_readme(result, src), encoding="utf-8")
        checked = _load_staged(work, dest, src.name, check_profiles=True)
        result.samples = {s: {"rows": c["rows"], "valid": c["valid"]} for s, c in sample_counts(checked).items() if c}
        if dest.exists():
            shutil.rmtree(dest)
        work.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result
