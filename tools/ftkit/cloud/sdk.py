"""What both cloud launchers need around an optional provider SDK: its credentials from the environment, the SDK
imported only when asked for, and the provider's refusals turned into located errors (exit 5)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import ModuleType

from ftkit.errors import ExitCode, FtkitError


def require_env(names: Iterable[str], fix: str) -> dict[str, str]:
    """The named environment variables (tokens, API keys); the first missing one is an error naming it."""
    names = list(names)
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        raise FtkitError.one(f"{', '.join(missing)} is not set in this environment", field=missing[0],
                             code=ExitCode.ENVIRONMENT, fix=fix.format(name=missing[0]))  # fmt: skip
    return {name: os.environ[name] for name in names}


def import_sdk(module: str, flag: str, package: str, otherwise: str) -> ModuleType:
    """Import an optional SDK module (`sagemaker.estimator`, `runpod`) or say how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise FtkitError.one(f"the {package} SDK is not installed", field=flag, code=ExitCode.ENVIRONMENT,
                             fix=f"pip install {package} ({otherwise})") from exc  # fmt: skip


@contextmanager
def provider_call(provider: str, flag: str, fix: str) -> Iterator[None]:
    """Any error the provider's SDK raises (auth, capacity, a bad id) becomes an FtkitError with `fix`."""
    try:
        yield
    except FtkitError:
        raise
    except Exception as exc:  # SDK/botocore/HTTP errors have no common base class
        raise FtkitError.one(f"{provider} refused: {exc}", field=flag, code=ExitCode.ENVIRONMENT, fix=fix) from exc
