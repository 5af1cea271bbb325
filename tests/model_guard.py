"""The test layers' guard: a test marked with none of LAYERS fails when it loads a model or tokenizer from disk
(`from_pretrained` of transformers' models and tokenizers), uses a fixture that builds one, or launches an engine's
training process, so `make test-fast` (`-m "not slow and not model"`) cannot silently grow slow.

Nothing here imports transformers: its two base classes are patched when transformers imports them (an import
hook), or at once when already imported. The patches stay for the session and refuse only while `refusing` is on
(conftest turns it on for each unmarked test's setup, call and teardown). Engine launches are seen by a wrapper
on `subprocess.Popen`. Not seen: a model loaded by a `python -c` child process of a test.
With MODEL_GUARD_LOG=<file>, loads are appended to that file (test id, what) instead of failing: the list to mark.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest

LAYERS = frozenset({"model", "slow", "recipe_smoke", "containers", "multinode"})  # any one of these allows loading
MODEL_FIXTURES = frozenset({"tiny_llama"})  # session fixtures that build a model (torch + transformers)
# Training processes: `python -m <module>` of each engine (ftkit.engines.*.command()); `ftkit recipe run`.
ENGINE_MODULES = frozenset({"axolotl.cli.main", "ftkit.engines.trl_train", "ftkit.engines.unsloth_train"})
MESSAGE = "this test loads a model ({what}): mark it @pytest.mark.model (or @pytest.mark.slow when it trains)"

# `ftkit recipe run` in a child that must stop at a config error before any engine, torch or transformers is imported
# (the test asserts which modules the child imported): the launch is allowed; in-process loads are still refused.
CONFIG_ERROR = "config_error"

_state = {"refusing": False, "run_allowed": False}


def unmarked(markers: Sequence[str]) -> bool:
    """Whether a test with these marker names must not load a model."""
    return not LAYERS.intersection(markers)


@contextmanager
def refusing(on: bool = True, run_allowed: bool = False) -> Iterator[None]:
    """While on, a model load fails the running test; `run_allowed` lets it launch `ftkit recipe run` (CONFIG_ERROR)."""
    before = dict(_state)
    _state["refusing"], _state["run_allowed"] = on, run_allowed
    try:
        yield
    finally:
        _state.update(before)


def refuse(what: str, pytrace: bool = True, test: str | None = None) -> None:
    if not _state["refusing"]:
        return
    if log := os.environ.get("MODEL_GUARD_LOG"):
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{test or os.environ.get('PYTEST_CURRENT_TEST', '?')}\t{what}\n")
        return
    pytest.fail(MESSAGE.format(what=what), pytrace=pytrace)  # a BaseException: `except Exception` keeps it


def engine_launch(argv: Sequence[str]) -> str | None:
    """The engine module (or `ftkit recipe run`) an argv starts, None for any other command."""
    args = [str(a) for a in argv]
    for flag, module in itertools.pairwise(args):
        if flag == "-m" and module in ENGINE_MODULES:
            return module
    if any("ftkit" in a for a in args) and ("recipe", "run") in itertools.pairwise(args):
        return "ftkit recipe run"
    return None


def _watch_popen() -> None:
    """Check every `subprocess.Popen` (run, call and check_output use it) for an engine launch before it starts.

    A wrapper on Popen's constructor, not an audit hook: an audit hook runs on every audited event of the process
    (each import, open and exec), which made the fast layer a third slower (88 s against 61 s)."""
    original = subprocess.Popen.__init__
    if getattr(original, "__model_guard__", False):
        return

    def init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        launched = engine_launch(args) if _state["refusing"] and isinstance(args, (list, tuple)) else None
        if launched and not (launched == "ftkit recipe run" and _state["run_allowed"]):
            refuse(f"it launches {launched}")
        original(self, args, *rest, **kwargs)

    init.__model_guard__ = True  # type: ignore[attr-defined]
    subprocess.Popen.__init__ = init  # type: ignore[method-assign]


def _guard_from_pretrained(owner: type) -> None:
    original = owner.__dict__["from_pretrained"]
    if getattr(original, "__model_guard__", False):
        return
    func = original.__func__

    @functools.wraps(func)
    def from_pretrained(cls: type, *args: Any, **kwargs: Any) -> Any:
        refuse(f"{cls.__name__}.from_pretrained")
        return func(cls, *args, **kwargs)

    guarded = classmethod(from_pretrained)
    guarded.__model_guard__ = True  # type: ignore[attr-defined]
    owner.from_pretrained = guarded  # type: ignore[attr-defined]


PATCHES: dict[str, Callable[[ModuleType], None]] = {
    "transformers.modeling_utils": lambda m: _guard_from_pretrained(m.PreTrainedModel),
    "transformers.tokenization_utils_base": lambda m: _guard_from_pretrained(m.PreTrainedTokenizerBase),
}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Applies PATCHES[name] right after module `name` has been executed."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in PATCHES:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is not self and find is not None and (spec := find(fullname, path, target)) is not None:
                break
        else:
            return None
        loader, patch = spec.loader, PATCHES[fullname]
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            patch(module)

        loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Patch what is imported, hook what is not, and watch subprocesses (once per process)."""
    if any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        return
    for name, patch in PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, _PatchOnImport())
    _watch_popen()
