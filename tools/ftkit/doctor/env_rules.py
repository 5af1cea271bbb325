"""Known-bad combinations of an environment, as data: each rule looks at the facts `env.collect_facts`
gathers and, when it applies, says why (the detail), how to fix it, and where the knowledge comes from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ftkit.doctor.findings import Finding, Severity

# Packages whose version must equal the lock's: Axolotl 0.19.0 pins these exactly (torch is left out:
# the CPU lock has the CPU build, a GPU container its own).
LOCKED_STACK = ("transformers", "peft", "trl", "accelerate", "datasets", "axolotl", "bitsandbytes", "tokenizers")


def _version_tuple(v: str | None) -> tuple[int, ...]:
    parts = []
    for p in (v or "").split("."):
        digits = "".join(c for c in p if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _cpu_torch_with_gpu(f: dict[str, Any]) -> str | None:
    t = f["torch"]
    if f["gpu_present"] and t["version"] and not t["cuda_build"]:
        return f"torch {t['version']} has no CUDA build, but this machine has {len(f['gpus'])} NVIDIA GPU(s)"
    return None


def _torch_cuda_newer_than_driver(f: dict[str, Any]) -> str | None:
    build, driver = f["torch"]["cuda_build"], f["nvidia"].get("cuda_driver")
    if build and driver and _version_tuple(build)[:1] > _version_tuple(driver)[:1]:
        return f"torch is built for CUDA {build}; the driver supports CUDA up to {driver}"
    return None


def _gpu_not_usable(f: dict[str, Any]) -> str | None:
    t = f["torch"]
    if f["gpu_present"] and t["cuda_build"] and not t["cuda_available"]:
        return (f"nvidia-smi sees {len(f['gpus'])} GPU(s) but torch (CUDA {t['cuda_build']}) cannot use them"
                + (f": {t['import_error']}" if t["import_error"] else ""))  # fmt: skip
    return None


def _flash_attn_abi(f: dict[str, Any]) -> str | None:
    err = f.get("flash_attn_import")
    if err and err != "ok" and "undefined symbol" in err:
        return f"flash-attn {f['packages'].get('flash-attn')} fails to load with torch {f['torch']['version']}: {err}"
    return None


def _bnb_without_cuda(f: dict[str, Any]) -> str | None:
    libs, build = f.get("bitsandbytes_libs") or [], f["torch"]["cuda_build"]
    if not f["gpu_present"] or not f["packages"].get("bitsandbytes") or not build:
        return None
    cuda = [lib for lib in libs if lib.startswith("cuda")]
    if not cuda:
        return f"bitsandbytes {f['packages']['bitsandbytes']} ships no CUDA library ({', '.join(libs) or 'none'})"
    wanted = "cuda" + build.replace(".", "")
    if wanted not in cuda:
        return f"bitsandbytes has {', '.join(cuda)} but torch uses CUDA {build} ({wanted} missing)"
    return None


def _lock_drift(f: dict[str, Any]) -> str | None:
    locked, have = f.get("locked") or {}, f["packages"]
    drift = [f"{n} {have[n]} (lock {locked[n]})" for n in LOCKED_STACK
             if n in locked and have.get(n) and have[n] != locked[n]]  # fmt: skip
    return f"installed versions differ from {f.get('lock_file')}: {', '.join(drift)}" if drift else None


def _unsloth_without_gpu(f: dict[str, Any]) -> str | None:
    if f["packages"].get("unsloth") and not f["gpu_present"]:
        return f"unsloth {f['packages']['unsloth']} is installed on a machine without an NVIDIA GPU"
    return None


@dataclass(frozen=True)
class EnvRule:
    id: str
    severity: Severity
    title: str
    applies: Callable[[dict[str, Any]], str | None]  # the detail when the rule applies, else None
    fix: tuple[str, ...]
    source: str


RULES: tuple[EnvRule, ...] = (
    EnvRule("cpu-torch-with-gpu", "error", "a CPU-only torch on a machine with an NVIDIA GPU", _cpu_torch_with_gpu,
            ("install the CUDA build of torch that matches the driver (pip install torch --index-url "
             "https://download.pytorch.org/whl/cu128), or run the recipe's container",),
            "https://pytorch.org/get-started/locally/"),
    EnvRule("torch-cuda-newer-than-driver", "error", "torch's CUDA is newer than the NVIDIA driver supports",
            _torch_cuda_newer_than_driver,
            ("upgrade the NVIDIA driver, or install the torch build for the driver's CUDA version",),
            "https://docs.nvidia.com/deploy/cuda-compatibility/"),
    EnvRule("gpu-not-usable", "error", "torch cannot use the GPU that nvidia-smi sees", _gpu_not_usable,
            ("check CUDA_VISIBLE_DEVICES and the container's GPU flags (docker run --gpus all)",
             "python -c 'import torch; torch.cuda.init()' shows the driver's error"),
            "https://pytorch.org/docs/stable/notes/cuda.html"),
    EnvRule("flash-attn-other-torch", "error", "flash-attn was built for another torch (undefined symbol)",
            _flash_attn_abi,
            ("install the flash-attn wheel built for this torch, CUDA and C++ ABI (or build it: pip install "
             "flash-attn --no-build-isolation), or run the recipe's container",
             "or set attn_implementation: sdpa to train without it"),
            "https://github.com/Dao-AILab/flash-attention/issues/723"),
    EnvRule("bitsandbytes-without-cuda", "error", "bitsandbytes without a CUDA library on a GPU machine",
            _bnb_without_cuda,
            ("pip install --force-reinstall bitsandbytes (wheels ≥ 0.45 ship the CUDA libraries), "
             "or BNB_CUDA_VERSION=<a shipped version> to pick one",),
            "https://github.com/bitsandbytes-foundation/bitsandbytes/issues/1056"),
    EnvRule("versions-differ-from-lock", "warning", "the training stack differs from the lock file", _lock_drift,
            ("make setup (pip install --require-hashes -r requirements.lock), or use the recipe's container; "
             "Axolotl 0.19.0 pins these exact versions",),
            "requirements.lock (axolotl 0.19.0's own pins)"),
    EnvRule("unsloth-without-gpu", "warning", "unsloth installed on a CPU machine", _unsloth_without_gpu,
            ("uninstall it here (its install replaces the CPU torch with a CUDA build, and its import raises "
             "without a GPU); it belongs in the GPU container's lock",),
            "seen in this project: installing unsloth replaced the CPU torch with a CUDA build (kept out of the CPU "
            "lock)"),
)  # fmt: skip


def check_env(facts: dict[str, Any], rules: tuple[EnvRule, ...] = RULES) -> list[Finding]:
    """The rules that apply to `facts`, as findings."""
    out = []
    for rule in rules:
        detail = rule.applies(facts)
        if detail:
            out.append(Finding(rule.id, rule.severity, rule.title, list(rule.fix), rule.source, detail))
    return out
