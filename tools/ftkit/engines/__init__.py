"""Training engines behind one interface: `get_engine(name)`."""

from __future__ import annotations

from ftkit.engines.base import Engine


def get_engine(name: str) -> Engine:
    if name == "axolotl":
        from ftkit.engines.axolotl import AxolotlEngine

        return AxolotlEngine()
    if name == "trl":
        from ftkit.engines.trl import TrlEngine

        return TrlEngine()
    if name == "unsloth":
        from ftkit.engines.unsloth import UnslothEngine

        return UnslothEngine()
    raise KeyError(f"unknown engine '{name}' (known: axolotl, trl, unsloth)")
