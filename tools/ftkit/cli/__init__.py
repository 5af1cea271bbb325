"""The `ftkit` command line: one module per command group, `app` builds the parser, `console` prints."""

from ftkit.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
