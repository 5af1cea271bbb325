"""Load a recipe folder and validate every file in it; collect all problems, then raise once."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ftkit.data.validate import ValidationReport, load_schema, validate_file
from ftkit.errors import ExitCode, FtkitError, Problem
from ftkit.recipes.schema import ExpectedMetrics, Recipe, Stage
from ftkit.schema_errors import pydantic_problems, unknown_keys
from ftkit.yaml_load import LocatedYaml, load_yaml

RECIPE_FILE = "recipe.yaml"
EXPECTED_FILE = "expected-metrics.yaml"


def recipes_root() -> Path:
    return Path(os.environ.get("FTKIT_RECIPES", "recipes")).resolve()


def list_recipe_dirs(root: Path | None = None) -> list[Path]:
    base = root or recipes_root()
    return sorted(p.parent for p in base.glob(f"*/{RECIPE_FILE}"))


def find_recipe(name_or_path: str, root: Path | None = None) -> Path:
    as_path = Path(name_or_path)
    if (as_path / RECIPE_FILE).is_file():
        return as_path.resolve()
    base = root or recipes_root()
    candidate = base / name_or_path
    if (candidate / RECIPE_FILE).is_file():
        return candidate
    known = [p.name for p in list_recipe_dirs(base)]
    from ftkit.schema_errors import did_you_mean

    guess = did_you_mean(name_or_path, known)
    raise FtkitError.one(
        f"no recipe named '{name_or_path}' (no {candidate / RECIPE_FILE})",
        field="NAME",
        fix=f"did you mean '{guess}'?" if guess else f"known recipes: {', '.join(known) or 'none'}",
    )


@dataclass
class StageFiles:
    stage: Stage
    config: LocatedYaml
    schema_path: Path
    sample_path: Path
    sample_report: ValidationReport | None = None


@dataclass
class LoadedRecipe:
    dir: Path
    recipe: Recipe
    source: LocatedYaml
    stages: list[StageFiles]
    expected: ExpectedMetrics | None
    expected_source: LocatedYaml | None
    warnings: list[Problem] = field(default_factory=list)
    data_reports: dict[str, ValidationReport] = field(default_factory=dict)  # local training files, by path

    @property
    def name(self) -> str:
        return self.recipe.name

    def stage_files(self, name: str) -> StageFiles:
        return next(s for s in self.stages if s.stage.name == name)


def _stage_files(recipe: Recipe, rdir: Path, source: LocatedYaml, problems: list[Problem]) -> list[StageFiles]:
    from ftkit.engines import get_engine

    engine = get_engine(recipe.engine)
    out = []
    for i, stage in enumerate(recipe.stages):
        missing = False
        for key, rel in (("config", stage.config), ("schema", stage.schema_file), ("sample", stage.sample)):
            if not (rdir / rel).is_file():
                missing = True
                problems.append(
                    Problem(
                        f"stage '{stage.name}': {key} file '{rel}' does not exist",
                        str(source.path),
                        source.line_of(f"stages.{i}.{key}"),
                        f"stages.{i}.{key}",
                        f"create {rdir / rel} or fix the path (relative to the recipe folder)",
                    )
                )
        if missing:
            continue
        try:
            config = load_yaml(rdir / stage.config)
            load_schema(rdir / stage.schema_file)
        except FtkitError as exc:
            problems.extend(exc.problems)
            continue
        if not isinstance(config.data, dict):
            problems.append(Problem("an engine config must be a YAML mapping", str(config.path), 1, None, None))
            continue
        problems.extend(engine.quick_check(config.data, config, stage.config))  # the full schema: check_engine_configs
        files = StageFiles(stage, config, rdir / stage.schema_file, rdir / stage.sample)
        files.sample_report = validate_file(files.sample_path, files.schema_path)
        problems.extend(files.sample_report.problems)
        out.append(files)
    return out


def _expected(rdir: Path, recipe: Recipe, problems: list[Problem]) -> tuple[ExpectedMetrics | None, LocatedYaml | None]:
    path = rdir / EXPECTED_FILE
    if not path.is_file():
        problems.append(Problem(f"{EXPECTED_FILE} is missing", str(path), None, None, "add the metric bounds"))
        return None, None
    try:
        source = load_yaml(path)
        expected = ExpectedMetrics.model_validate(source.data)
    except FtkitError as exc:
        problems.extend(exc.problems)
        return None, None
    except ValidationError as exc:
        problems.extend(pydantic_problems(exc, source, ExpectedMetrics))
        return None, None
    from ftkit.recipes.schema import KNOWN_METRICS

    stage_names = [s.name for s in recipe.stages]
    if expected.recipe != recipe.name:
        problems.append(
            Problem(
                f"names recipe '{expected.recipe}' but the recipe is '{recipe.name}'",
                str(path),
                source.line_of("recipe"),
                "recipe",
                f"set recipe: {recipe.name}",
            )
        )
    for pname, stages in expected.profiles.items():
        if pname not in recipe.profiles:
            problems.append(
                Problem(f"unknown profile '{pname}'", str(path), source.line_of(f"profiles.{pname}"), pname, None)
            )
        for sname, metrics in stages.items():
            if sname not in stage_names:
                problems.append(
                    Problem(
                        f"unknown stage '{sname}'",
                        str(path),
                        source.line_of(f"profiles.{pname}.{sname}"),
                        f"profiles.{pname}.{sname}",
                        f"stages are {stage_names}",
                    )
                )
            problems += unknown_keys(
                metrics,
                KNOWN_METRICS,
                what="metric",
                file=str(path),
                line_of=source.line_of,
                prefix=f"profiles.{pname}.{sname}.",
                otherwise=f"known: {', '.join(sorted(KNOWN_METRICS))}",
            )
    return expected, source


def load_recipe(
    name_or_path: str, root: Path | None = None, *, check_profiles: bool = True, quick: bool = False
) -> LoadedRecipe:
    """Load and validate a recipe: recipe.yaml, engine configs, schemas, samples, expected metrics.

    With check_profiles, every profile's resolved engine config is validated too, so an override
    with a typo fails here and not an hour into a GPU run. The checks that import no engine come first (YAML
    syntax, the recipe schema, files, samples, bounds, unknown engine keys): a typo is answered in a second, and the
    engine's own schema (seconds to import) is asked only when they pass. With `quick`, only those run: the caller
    runs `check_engine_configs` and `validate_profiles` later, as `recipe run` does once its `--set` is checked.
    """
    rdir = find_recipe(name_or_path, root)
    source = load_yaml(rdir / RECIPE_FILE)
    problems: list[Problem] = []
    try:
        recipe = Recipe.model_validate(source.data)
    except ValidationError as exc:
        raise FtkitError(f"{rdir.name}: recipe.yaml is invalid", pydantic_problems(exc, source, Recipe)) from exc
    if recipe.name != rdir.name:
        problems.append(
            Problem(
                f"name '{recipe.name}' differs from the folder name '{rdir.name}'",
                str(source.path),
                source.line_of("name"),
                "name",
                f"set name: {rdir.name}",
            )
        )
    stages = _stage_files(recipe, rdir, source, problems)
    expected, expected_source = _expected(rdir, recipe, problems)
    if not (rdir / "README.md").is_file():
        problems.append(Problem("README.md is missing", str(rdir / "README.md"), None, None, "describe the recipe"))
    loaded = LoadedRecipe(rdir, recipe, source, stages, expected, expected_source)
    from ftkit.recipes.resolve import validate_profiles

    if check_profiles and not problems:
        problems.extend(validate_profiles(loaded, quick=True))
    _raise_problems(loaded, problems)
    if quick:
        return loaded
    check_engine_configs(loaded)
    if check_profiles:
        _raise_problems(loaded, validate_profiles(loaded))
        bad_rows = _check_training_data(loaded)
        if bad_rows:
            raise FtkitError(f"{rdir.name}: {len(bad_rows)} problem(s) in the rows a profile trains on", bad_rows,
                             ExitCode.DATA_INVALID)  # fmt: skip
    return loaded


def _raise_problems(loaded: LoadedRecipe, problems: list[Problem]) -> None:
    if problems:
        raise FtkitError(f"{loaded.dir.name}: {len(problems)} problem(s)", problems)


def check_engine_configs(loaded: LoadedRecipe) -> None:
    """Each stage's engine YAML against the engine's full schema (this imports the engine: seconds for Axolotl);
    raises with every problem found."""
    from ftkit.engines import get_engine

    engine = get_engine(loaded.recipe.engine)
    problems = [p for f in loaded.stages for p in engine.validate(f.config.data, f.config, f.stage.config)]
    _raise_problems(loaded, problems)


def _check_training_data(loaded: LoadedRecipe) -> list[Problem]:
    """Validate every local file a profile trains a stage on against the stage's schema (each file once), so
    `recipe validate` sees the rows a run will train on and not only the sample; the reports go to
    `loaded.data_reports`."""
    from ftkit.engines import get_engine
    from ftkit.recipes.resolve import resolve_stage

    engine = get_engine(loaded.recipe.engine)
    problems: list[Problem] = []
    for profile in loaded.recipe.profiles:
        for files in loaded.stages:
            cfg = resolve_stage(loaded, files.stage.name, profile).config
            for rel in engine.dataset_paths(cfg):
                path = loaded.dir / rel
                if not path.is_file() or str(path) in loaded.data_reports:
                    continue  # a hub dataset (the engine loads it), or checked already
                if path.resolve() == files.sample_path.resolve() and files.sample_report is not None:
                    loaded.data_reports[str(path)] = files.sample_report
                    continue
                report = validate_file(path, files.schema_path)
                loaded.data_reports[str(path)] = report
                if not report.ok:
                    problems += report.problems[:20]
                    problems.append(Problem(
                        f"{report.invalid} of {report.rows} rows break {files.schema_path.name} (profile "
                        f"'{profile}', stage '{files.stage.name}')", str(path), None, None,
                        f"ftkit data validate {path} --schema {files.schema_path} --quarantine bad.jsonl keeps the "
                        "good rows and sets the bad ones aside with their reasons",
                    ))  # fmt: skip
    return problems


def sample_counts(loaded: LoadedRecipe) -> dict[str, Any]:
    return {s.stage.name: s.sample_report.to_dict() if s.sample_report else None for s in loaded.stages}


def data_counts(loaded: LoadedRecipe) -> dict[str, dict[str, int]]:
    """Rows and valid rows of each local training file `load_recipe` checked, by path relative to the recipe."""
    out = {}
    for path, report in loaded.data_reports.items():
        rel = os.path.relpath(path, loaded.dir)
        out[rel] = {"rows": report.rows, "valid": report.rows - report.invalid}
    return out
