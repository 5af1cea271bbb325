"""`make setup` on a machine without our local torch wheel: the lock's `+cpu` pins come from PyTorch's CPU index,
which the Makefile passes by default, asks for those pins only, and gives up on fast (docs/testing.md)."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
from urllib.parse import urlparse

import pytest
from conftest import ROOT

_spec = importlib.util.spec_from_file_location("local_pins", ROOT / "scripts" / "local_pins.py")
assert _spec and _spec.loader
local_pins = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local_pins)

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
LOCK = (ROOT / "requirements.lock").read_text()


def setup_commands(*overrides: str) -> list[list[str]]:
    """The commands `make setup` runs to build .venv (make -n -B: printed, not run), each split into words."""
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_INDEX", "MAKEFLAGS", "MFLAGS")}
    out = subprocess.run(["make", "--no-print-directory", "-n", "-B", ".venv/.ftkit-installed", *overrides],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=60).stdout  # fmt: skip
    return [shlex.split(line.split(" 2>&1 |")[0]) for line in out.replace("\\\n", " ").splitlines()]


def pip_installs(commands: list[list[str]]) -> list[list[str]]:
    return [c[c.index("install") :] for c in commands if any(w.endswith("/pip") for w in c) and "install" in c]


def requirement_file(args: list[str]) -> str:
    return args[args.index("-r") + 1]


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_setup_installs_the_local_version_pins_first_from_the_pytorch_cpu_index_by_default():
    commands = setup_commands()
    writes = [c for c in commands if "scripts/local_pins.py" in c]
    assert writes and writes[0][-3:] == ["requirements.lock", ">", ".venv/local-pins.txt"], writes
    installs = pip_installs(commands)
    assert [requirement_file(a) for a in installs[:2]] == [".venv/local-pins.txt", "requirements.lock"]
    pins = installs[0]
    assert option(pins, "--extra-index-url") == CPU_INDEX
    assert "--require-hashes" in pins and "--no-deps" in pins


def test_an_unreachable_index_is_given_up_on_fast_and_asked_for_the_local_pins_only():
    pins, lock = pip_installs(setup_commands())[:2]
    # pip waits --timeout seconds per try and tries 1 + --retries times per page; its defaults (15 s, 5 retries
    # with back-off) cost 8.8 s per package when the host does not resolve, for each of the ~300 packages.
    assert int(option(pins, "--retries") or 5) <= 1
    assert float(option(pins, "--timeout") or 15) <= 10
    assert not {"--extra-index-url", "--index-url", "-i"} & set(lock), "the whole lock must not ask that index"


def test_torch_index_can_name_a_mirror_or_nothing():
    mirror = pip_installs(setup_commands("TORCH_INDEX=https://mirror.example/whl/cpu"))[0]
    assert option(mirror, "--extra-index-url") == "https://mirror.example/whl/cpu"
    none = pip_installs(setup_commands("TORCH_INDEX="))[0]
    assert "--extra-index-url" not in none and requirement_file(none) == ".venv/local-pins.txt"


def test_every_local_version_in_the_lock_is_one_the_index_the_makefile_passes_serves():
    """PyTorch's index .../whl/<label> serves the `+<label>` builds; PyPI serves no local versions. So a pin
    with another label (or a wheel that only our disk has) fails here, not on a user's machine."""
    index = urlparse(option(pip_installs(setup_commands())[0], "--extra-index-url") or "")
    assert index.hostname == "download.pytorch.org"
    served = index.path.rstrip("/").rsplit("/", 1)[-1]
    pinned = local_pins.local_pins(LOCK)
    assert pinned, "no local version left in the lock: drop the CPU index step from the Makefile"
    assert {name: local_pins.local_label(v) for name, v in pinned.items()} == dict.fromkeys(pinned, served)


def test_the_local_pins_step_carries_each_pin_of_the_lock_with_its_hashes():
    blocks = local_pins.local_pin_blocks(LOCK)
    expected = [f"{name}=={version}" for name, version in local_pins.local_pins(LOCK).items()]
    assert [re.match(r"\S+", block).group(0) for block in blocks] == expected
    assert all("--hash=sha256:" in block for block in blocks)


def test_local_pins_keeps_only_local_versions_and_every_hash_line():
    lock = (
        "# header\nabsl-py==2.5.1 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via x\n"
        "torch==2.13.0+cpu \\\n    --hash=sha256:cc \\\n    --hash=sha256:dd\n    # via\n    #   y\n"
        "torchvision==0.29.0+cu130 ; sys_platform == 'linux' \\\n    --hash=sha256:ee\ntqdm==4.70.1\n"
    )
    assert local_pins.local_pin_blocks(lock) == [
        "torch==2.13.0+cpu \\\n    --hash=sha256:cc \\\n    --hash=sha256:dd",
        "torchvision==0.29.0+cu130 ; sys_platform == 'linux' \\\n    --hash=sha256:ee",
    ]
    assert local_pins.local_pins(lock) == {"torch": "2.13.0+cpu", "torchvision": "0.29.0+cu130"}
    assert local_pins.local_pin_blocks("absl-py==2.5.1\n") == []


@pytest.mark.parametrize("argv", [[], ["a", "b"]])
def test_local_pins_without_one_lock_is_a_usage_error(argv: list[str]):
    assert local_pins.main(argv) == 2


def test_no_workflow_sets_its_own_index_for_torch():
    """The Makefile's TORCH_INDEX is the one setting: a second one in a workflow's env could drift from it."""
    for path in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        text = path.read_text()
        assert not re.search(r"^\s*(PIP_EXTRA_INDEX_URL|PIP_INDEX_URL|TORCH_INDEX)\s*:", text, re.M), path.name
