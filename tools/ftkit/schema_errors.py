"""Turn schema validation errors (pydantic, JSON Schema) into located Problems with a fix."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from ftkit.errors import Problem
from ftkit.yaml_load import LocatedYaml


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return close[0] if close else None


def unknown_keys(
    keys: Iterable[str],
    known: Iterable[str],
    *,
    what: str,
    file: str,
    line_of: Callable[[str], int | None],
    prefix: str = "",
    otherwise: str = "remove it",
    note: str = "",
) -> list[Problem]:
    """A Problem for each key not in `known`, with a 'did you mean' fix when a close name exists."""
    known = list(known)
    problems = []
    for key in keys:
        if key in known:
            continue
        dotted = f"{prefix}{key}"
        guess = did_you_mean(key, known)
        fix = f"did you mean '{guess}'?" if guess else otherwise
        problems.append(Problem(f"unknown {what} '{key}'{note}", file, line_of(dotted), dotted, fix))
    return problems


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names (and aliases) of the sub-model found at `loc`, for 'did you mean'."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None
        )
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        current = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def pydantic_problems(exc: ValidationError, source: LocatedYaml, model: type[BaseModel]) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc)
        kind = err["type"]
        line = source.line_of(dotted)
        if kind == "extra_forbidden":
            key = str(loc[-1])
            guess = did_you_mean(key, _fields_at(model, loc[:-1]))
            fix = f"did you mean '{guess}'?" if guess else "remove the key; it is not part of the schema"
            problems.append(Problem(f"unknown key '{key}'", str(source.path), line, dotted, fix))
        elif kind == "missing":
            problems.append(Problem("required key is missing", str(source.path), line, dotted, f"add '{loc[-1]}'"))
        else:
            got = err.get("input")
            shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
            problems.append(
                Problem(
                    f"{err['msg']} (got {shown})",
                    str(source.path),
                    line,
                    dotted or None,
                    "change the value to the expected type/range shown",
                )
            )
    return problems
