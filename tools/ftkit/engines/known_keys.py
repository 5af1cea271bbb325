"""The config keys each engine knows, without importing the engine.

Importing Axolotl's config model takes seconds (torch, transformers, accelerate), TRL's and PEFT's config classes
too; a mistyped key should be answered before that. `engine_keys.json` beside this module holds the keys of each
schema at the pinned versions (written by `scripts/engine_keys.py --write`, checked by tests/test_cli_speed.py).
When the installed package has another version than the one the list was made from, the keys are read from the
installed package instead: slower, never wrong. With the package not installed, the stored list stands.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

KEYS_FILE = Path(__file__).with_name("engine_keys.json")


def _axolotl_input_config() -> set[str]:
    from axolotl.utils.schemas.config import AxolotlInputConfig

    fields = AxolotlInputConfig.model_fields.items()
    return {name for name, _ in fields} | {f.alias for _, f in fields if f.alias}


def _dataclass_fields(module: str, name: str) -> Callable[[], set[str]]:
    def read() -> set[str]:
        import importlib

        cls = getattr(importlib.import_module(module), name)
        return {f.name for f in dataclasses.fields(cls)}

    return read


# schema name -> (distribution whose version the list belongs to, how to read the keys from the installed package)
SOURCES: dict[str, tuple[str, Callable[[], set[str]]]] = {
    "axolotl.AxolotlInputConfig": ("axolotl", _axolotl_input_config),
    "trl.SFTConfig": ("trl", _dataclass_fields("trl", "SFTConfig")),
    "trl.DPOConfig": ("trl", _dataclass_fields("trl", "DPOConfig")),
    "peft.LoraConfig": ("peft", _dataclass_fields("peft", "LoraConfig")),
}


def installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def live_keys(schema: str) -> frozenset[str]:
    """The keys of `schema` read from the installed package (imports it)."""
    return frozenset(SOURCES[schema][1]())


def generate() -> dict[str, Any]:
    """The content of engine_keys.json for the installed packages."""
    return {
        "generated_by": "scripts/engine_keys.py --write",
        "schemas": {
            schema: {"package": dist, "version": installed_version(dist), "keys": sorted(live_keys(schema))}
            for schema, (dist, _) in SOURCES.items()
        },
    }


@cache
def _stored() -> dict[str, Any]:
    return json.loads(KEYS_FILE.read_text(encoding="utf-8"))["schemas"]


@cache
def known_keys(schema: str) -> frozenset[str]:
    """The keys of `schema` ('axolotl.AxolotlInputConfig', 'trl.SFTConfig', …): the stored list when it was made
    from the installed version (or the package is not installed), else read from the installed package."""
    stored = _stored().get(schema)
    if stored is not None:
        version = installed_version(stored["package"])
        if version is None or version == stored["version"]:
            return frozenset(stored["keys"])
    return live_keys(schema)
