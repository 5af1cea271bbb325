"""`ftkit`: a thin command line over the library. Subcommands parse, call, print; errors -> exit codes.

Exit codes: 0 ok, 1 a metrics bound failed, 2 bad arguments or recipe files, 3 invalid data
(training did not start), 4 the engine failed, 5 the machine cannot run it (e.g. no GPU), 6 stopped by
SIGTERM after saving a checkpoint (`ftkit recipe run --resume RUN_DIR` continues).
"""

from __future__ import annotations

import argparse
import sys

from ftkit import __version__
from ftkit.cli.console import err_console, print_json, say
from ftkit.errors import FtkitError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftkit",
        description="finetune-recipes toolkit: validate and run fine-tuning recipes, gate their metrics.",
        epilog="Exit codes: 0 ok, 1 metrics bound failed, 2 bad arguments/recipe, 3 invalid data, "
        "4 engine failed, 5 machine cannot run it, 6 stopped by SIGTERM at a checkpoint (resume it).",
    )
    parser.add_argument("--version", action="version", version=f"ftkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    # The order here is the order of `ftkit --help` and of docs/cli-reference.md.
    from ftkit.cli import cloud, data, doctor, estimate, export, model, pii, plan, recipe

    recipe.register(sub)
    data.register(sub)
    pii.register(sub)
    estimate.register(sub)
    export.register(sub)
    cloud.register(sub)
    doctor.register(sub)
    plan.register(sub)
    model.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except FtkitError as exc:
        if getattr(args, "json", False):
            print_json(exc.to_dict())
        else:
            say(err_console, ("error:", "red"), f" {exc}")
        return int(exc.code)
    except KeyboardInterrupt:
        say(err_console, "interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
