"""Read and check a mergekit YAML before anything is loaded: every problem names the file, the line,
the field and a fix — unknown keys (mergekit ignores them silently), the merge method, each method's
parameters (names, types, the required ones) and the input contract (a base model, the number of inputs).
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from ftkit.errors import FtkitError, Problem
from ftkit.schema_errors import did_you_mean, unknown_keys
from ftkit.yaml_load import LocatedYaml, load_yaml

if TYPE_CHECKING:
    from mergekit.config import MergeConfiguration
    from mergekit.merge_methods import MergeMethod

INPUT_KEYS = ("models", "slices", "modules")


# --- reading and validating the YAML (no model is touched) ---------------------------------------


def read_merge_config(config_path: Path) -> MergeConfiguration:
    """Parse and validate a mergekit YAML; all problems are raised at once as an FtkitError."""
    return parse_merge_config(load_yaml(config_path))


def parse_merge_config(source: LocatedYaml) -> MergeConfiguration:
    data = source.data
    file = str(source.path)
    if not isinstance(data, dict):
        raise FtkitError.one(
            "a mergekit config is a mapping (merge_method, models, ...)",
            file=file,
            fix="see tools/ftkit/export/examples/ties.mergekit.yaml",
        )
    problems = _key_problems(data, source)
    conflicts = _conflict_problems(data, source)  # mergekit's validators stop at the first of these
    config = None
    if conflicts:
        problems += conflicts
    else:
        config, invalid = _validate(data, source)
        problems += invalid
    if config is not None:
        method = _method(config.merge_method)
        if method is None:
            problems.append(_unknown_method_problem(config.merge_method, source))
        else:
            problems += _parameter_problems(data, method, source)
            problems += _contract_problems(config, method, source)
    if problems or config is None:
        raise FtkitError(f"{file}: the mergekit config is invalid ({len(problems)} problem(s))", problems)
    return config


def _key_problems(data: dict[str, Any], source: LocatedYaml) -> list[Problem]:
    from mergekit.config import MergeConfiguration

    file = str(source.path)
    problems = []
    if "trust_remote_code" in data:
        problems.append(
            Problem(
                "ftkit never runs code shipped with a model (trust_remote_code)",
                file,
                source.line_of("trust_remote_code"),
                "trust_remote_code",
                "remove the key; merge only architectures that transformers implements",
            )
        )
    rest = {k: v for k, v in data.items() if k != "trust_remote_code"}
    return problems + _unknown_key_problems(rest, MergeConfiguration, "", source)


def _conflict_problems(data: dict[str, Any], source: LocatedYaml) -> list[Problem]:
    file = str(source.path)
    problems = []
    present = [k for k in INPUT_KEYS if data.get(k)]
    if len(present) != 1:
        problems.append(
            Problem(
                f"exactly one of models, slices or modules lists the inputs (found: {', '.join(present) or 'none'})",
                file,
                source.line_of(present[1]) if len(present) > 1 else None,
                "models",
                "list the input models under 'models:' (slices/modules only to stack or mix layer ranges)",
            )
        )
    if data.get("tokenizer") is not None and data.get("tokenizer_source") is not None:
        problems.append(
            Problem(
                "tokenizer and tokenizer_source are two ways to say the same thing",
                file,
                source.line_of("tokenizer_source"),
                "tokenizer_source",
                "keep one: 'tokenizer: {source: base}' (newer form) or 'tokenizer_source: base'",
            )
        )
    return problems


def _unknown_key_problems(data: Any, model: type[BaseModel], dotted: str, source: LocatedYaml) -> list[Problem]:
    """mergekit ignores unknown keys; a typo ('dtyp', 'base_modle') would silently change the merge."""
    if not isinstance(data, dict):
        return []
    fields = model.model_fields
    prefix = f"{dotted}." if dotted else ""
    problems = unknown_keys(
        [str(k) for k in data], fields, what="key", file=str(source.path), line_of=source.line_of, prefix=prefix
    )
    for name, info in fields.items():
        if name in data and name != "parameters":  # parameters are checked against the merge method
            problems += _nested_key_problems(data[name], info.annotation, prefix + name, source)
    return problems


def _nested_key_problems(value: Any, annotation: Any, dotted: str, source: LocatedYaml) -> list[Problem]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        containers = [a for a in args if typing.get_origin(a) in (list, dict)]
        if len(models) + len(containers) == 1:  # several model shapes: pydantic/mergekit tell them apart
            return _nested_key_problems(value, (models + containers)[0], dotted, source)
        return []
    if origin is list and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _nested_key_problems(item, args[0], f"{dotted}.{i}", source)]
    if origin is dict and isinstance(value, dict):
        return [p for k, item in value.items() for p in _nested_key_problems(item, args[1], f"{dotted}.{k}", source)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _unknown_key_problems(value, annotation, dotted, source)
    return []


def _validate(data: dict[str, Any], source: LocatedYaml) -> tuple[MergeConfiguration | None, list[Problem]]:
    from mergekit.config import MergeConfiguration

    file = str(source.path)
    try:
        return MergeConfiguration.model_validate(data), []
    except ValidationError as exc:
        return None, _pydantic_problems(exc, source)
    except (RuntimeError, ValueError) as exc:  # mergekit's own validators raise RuntimeError
        return None, [Problem(str(exc), file, None, None, "see mergekit's docs for this field's syntax")]


def _pydantic_problems(exc: ValidationError, source: LocatedYaml) -> list[Problem]:
    """One problem per YAML location: a union type reports each alternative, grouped here into one."""
    grouped: dict[str, list[Any]] = {}
    for err in exc.errors():
        parts = [str(p) for p in err["loc"]]
        if err["type"] == "missing":
            key = ".".join(parts)
        else:  # cut the union alternatives' tags off: keep the longest path that is in the YAML
            while parts and ".".join(parts) not in source.lines:
                parts.pop()
            key = ".".join(parts)
        grouped.setdefault(key, []).append(err)
    problems = []
    for dotted, errs in grouped.items():
        line = source.line_of(dotted)
        if all(e["type"] == "missing" for e in errs):
            problems.append(Problem("required key is missing", str(source.path), line, dotted, f"add '{dotted}'"))
            continue
        got = errs[0].get("input")
        shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
        message = errs[0]["msg"] if len(errs) == 1 else "the value matches none of the accepted forms"
        problems.append(
            Problem(
                f"{message} (got {shown})",
                str(source.path),
                line,
                dotted or None,
                "; ".join(sorted({e["msg"] for e in errs}))[:300],
            )
        )
    return problems


def _method(name: str) -> MergeMethod | None:
    from mergekit import merge_methods

    return next((m for m in merge_methods.registered_methods() if m.spec.name == name), None)


def method_names() -> list[str]:
    """The merge methods this mergekit provides."""
    from mergekit import merge_methods

    return sorted(m.spec.name for m in merge_methods.registered_methods())


def _unknown_method_problem(name: str, source: LocatedYaml) -> Problem:
    known = method_names()
    guess = did_you_mean(name, known)
    fix = f"did you mean '{guess}'?" if guess else f"use one of: {', '.join(known)}"
    return Problem(
        f"unknown merge method '{name}'", str(source.path), source.line_of("merge_method"), "merge_method", fix
    )


def _parameter_blocks(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every `parameters:` mapping in the YAML, with its dotted location."""

    def walk(node: Any, dotted: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{dotted}.{key}" if dotted else str(key)
                if key == "parameters" and isinstance(value, dict):
                    yield here, value
                elif key != "tokenizer":
                    yield from walk(value, here)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                yield from walk(item, f"{dotted}.{i}")

    return walk(data, "")


def _scalar_leaves(setting: Any) -> list[Any]:
    """The plain values inside a parameter setting (a scalar, a gradient list, filtered conditions)."""
    if isinstance(setting, dict):
        return _scalar_leaves(setting.get("value"))
    if isinstance(setting, list):
        return [leaf for item in setting for leaf in _scalar_leaves(item)]
    return [] if setting is None else [setting]


def _parameter_problems(data: dict[str, Any], method: MergeMethod, source: LocatedYaml) -> list[Problem]:
    from mergekit.merge_methods.base import ParameterScope

    file, name = str(source.path), method.spec.name
    specs = {p.name: p for p in method.spec.parameters}
    listing = ", ".join(specs) or "none"
    problems = []
    for dotted, block in _parameter_blocks(data):
        for key, setting in block.items():
            where = f"{dotted}.{key}"
            spec = specs.get(key)
            if spec is None:
                guess = did_you_mean(str(key), specs)
                fix = f"did you mean '{guess}'?" if guess else f"{name} takes: {listing}"
                problems.append(Problem(f"{name} has no parameter '{key}'", file, source.line_of(where), where, fix))
                continue
            if spec.scope == ParameterScope.SHARED and dotted.startswith("models."):
                problems.append(
                    Problem(
                        f"'{key}' is one value for the whole merge: under a model it is ignored",
                        file,
                        source.line_of(where),
                        where,
                        f"move '{key}' to the top-level 'parameters:'",
                    )
                )
            for leaf in _scalar_leaves(setting):
                try:
                    spec.validate(leaf)
                except ValidationError:
                    kind = getattr(spec.value_type, "__name__", str(spec.value_type))
                    problems.append(
                        Problem(
                            f"'{key}' must be a {kind} (got {leaf!r})",
                            file,
                            source.line_of(where),
                            where,
                            f"write a {kind}",
                        )
                    )
    return problems + _required_parameter_problems(data, method, source)


def _required_parameter_problems(data: dict[str, Any], method: MergeMethod, source: LocatedYaml) -> list[Problem]:
    """For the `models:` form: every required parameter is set where mergekit will look for it."""
    from mergekit.merge_methods.base import ParameterScope

    models = data.get("models")
    if not isinstance(models, list):
        return []
    top = data.get("parameters") or {}
    base = _norm_ref(data.get("base_model"))
    problems = []
    for spec in method.spec.parameters:
        if not spec.required:
            continue
        if spec.scope == ParameterScope.SHARED:
            if spec.name not in top:
                problems.append(
                    Problem(
                        f"{method.spec.name} needs '{spec.name}' (one value for the merge)",
                        str(source.path),
                        source.line_of("parameters"),
                        f"parameters.{spec.name}",
                        f"add 'parameters: {{{spec.name}: ...}}' at the top level",
                    )
                )
            continue
        for i, entry in enumerate(models):
            if not isinstance(entry, dict) or spec.name in top:
                continue
            if spec.scope == ParameterScope.NON_BASE and base and _norm_ref(entry.get("model")) == base:
                continue
            if spec.name not in (entry.get("parameters") or {}):
                problems.append(
                    Problem(
                        f"{method.spec.name} needs '{spec.name}' for each input model",
                        str(source.path),
                        source.line_of(f"models.{i}"),
                        f"models.{i}.parameters.{spec.name}",
                        f"add 'parameters: {{{spec.name}: ...}}' to this model (or once at the top level)",
                    )
                )
    return problems


def _norm_ref(value: Any) -> str | None:
    return os.path.normpath(value) if isinstance(value, str) else None


def _contract_problems(config: MergeConfiguration, method: MergeMethod, source: LocatedYaml) -> list[Problem]:
    """A base model where the method needs one, the number of inputs (for the `models:` form)."""
    if not config.models:
        return []
    inputs = [os.path.normpath(str(m.model)) for m in config.models]
    base = os.path.normpath(str(config.base_model)) if config.base_model else None
    if base and base not in inputs:
        inputs.append(base)  # mergekit adds the base to the inputs
    try:
        method.spec.contract.validate_ids(inputs, base)
    except ValueError as exc:
        name = method.spec.name
        if "base" in str(exc):
            field, fix = "base_model", "set base_model: the model the fine-tuned models started from"
            if "does not accept" in str(exc):
                fix = f"remove base_model: {name} takes no base"
        else:
            field, fix = "models", f"{name} takes {_count_text(method)}"
        return [Problem(f"{name}: {exc}", str(source.path), source.line_of(field), field, fix)]
    return []


def _count_text(method: MergeMethod) -> str:
    c = method.spec.contract
    low, high = c.min_inputs, c.max_inputs
    count = f"exactly {low}" if low == high else f"at least {low}" + (f" and at most {high}" if high else "")
    return f"{count} input model(s) (the base model counts as one)"
