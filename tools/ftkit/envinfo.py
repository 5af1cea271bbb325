"""What machine and software a run used: hardware, package versions, git commit."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes",
    "axolotl", "tokenizers", "flash-attn", "unsloth", "ftkit",
)  # fmt: skip


def versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of `names` (default: the training stack); packages not installed are left out."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit(cwd: Path | None = None) -> str:
    """HEAD of the checkout at `cwd` (with -dirty); without git or a checkout (in an image), FTKIT_GIT_COMMIT: the
    commit the image was built from, or the host checkout's that `make recipe` mounted."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True,
            timeout=10,
        ).stdout.strip()  # fmt: skip
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("FTKIT_GIT_COMMIT") or "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus() -> list[dict[str, Any]]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
    return out


def hardware() -> dict[str, Any]:
    mem = 0
    with contextlib.suppress(ValueError, OSError):
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    found = gpus()
    return {
        "device": "cuda" if found else "cpu",
        "gpus": found,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def hardware_label(hw: dict[str, Any]) -> str:
    if hw["gpus"]:
        names = {g["name"] for g in hw["gpus"]}
        return f"{len(hw['gpus'])}x {', '.join(sorted(names))}"
    return f"CPU only: {hw['cpu']} ({hw['cpu_count']} cores, {hw['memory_gib']} GiB)"
