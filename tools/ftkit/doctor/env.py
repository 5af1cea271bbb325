"""The facts of this environment: Python, torch and its CUDA build, the NVIDIA driver, GPUs, and the
versions of the training stack read from package metadata (nothing but torch is imported: Unsloth
raises on import without a GPU, and flash-attn's import is tried in a child process).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from ftkit.doctor.env_rules import check_env

PACKAGES = (
    "torch", "bitsandbytes", "flash-attn", "axolotl", "unsloth", "trl", "peft", "transformers", "accelerate",
    "deepspeed", "datasets", "tokenizers",
)  # fmt: skip
LOCK_ENV = "FTKIT_LOCK"  # a lock file to compare with (default: requirements.lock at the repository root)


def package_version(name: str) -> str | None:
    for candidate in (name, name.replace("-", "_")):
        try:
            return metadata.version(candidate)
        except metadata.PackageNotFoundError:
            continue
    return None


def parse_lock(text: str) -> dict[str, str]:
    """`name==version` pins of a pip/uv lock file, names lowercased with '-' for '_'."""
    pins = {}
    for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", text, re.MULTILINE):
        pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def lock_file() -> Path | None:
    if os.environ.get(LOCK_ENV):
        return Path(os.environ[LOCK_ENV])
    for base in (Path(__file__).resolve().parents[3], Path.cwd()):
        if (base / "requirements.lock").is_file():
            return base / "requirements.lock"
    return None


def parse_smi_query(text: str) -> list[dict[str, Any]]:
    """`nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits` -> GPUs."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            mib = float(parts[1]) if parts[1].replace(".", "", 1).isdigit() else None
            gpus.append({"name": parts[0], "memory_gib": round(mib / 1024, 1) if mib else None, "driver": parts[2]})
    return gpus


def parse_smi_cuda(text: str) -> str | None:
    """The highest CUDA version the driver supports, from `nvidia-smi`'s header ('CUDA Version: 12.8')."""
    m = re.search(r"CUDA Version:\s*([0-9.]+)", text)
    return m.group(1) if m else None


def _run(cmd: list[str], timeout: float = 20) -> tuple[int, str]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        return done.returncode, done.stdout + done.stderr
    except (OSError, subprocess.SubprocessError) as exc:
        return -1, str(exc)


def nvidia() -> dict[str, Any]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {"smi": None, "driver": None, "cuda_driver": None, "gpus": [], "note": "no nvidia-smi on PATH"}
    rc, text = _run([smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"])
    gpus = parse_smi_query(text) if rc == 0 else []
    _, header = _run([smi])
    driver = gpus[0]["driver"] if gpus else None
    note = "" if rc == 0 else f"nvidia-smi failed: {text.strip()[-200:]}"
    return {"smi": smi, "driver": driver, "cuda_driver": parse_smi_cuda(header), "gpus": gpus, "note": note}


def torch_facts() -> dict[str, Any]:
    out: dict[str, Any] = {"version": package_version("torch"), "cuda_build": None, "cudnn": None,
                           "cuda_available": False, "gpus": [], "import_error": None}  # fmt: skip
    if out["version"] is None:
        return out
    try:
        import torch

        out["cuda_build"] = torch.version.cuda
        out["cuda_available"] = bool(torch.cuda.is_available())
        out["cudnn"] = torch.backends.cudnn.version() if out["cuda_available"] or torch.version.cuda else None
        for i in range(torch.cuda.device_count() if out["cuda_available"] else 0):
            props = torch.cuda.get_device_properties(i)
            out["gpus"].append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                                "capability": f"{props.major}.{props.minor}"})  # fmt: skip
    except Exception as exc:  # a broken install is itself a finding
        out["import_error"] = f"{type(exc).__name__}: {exc}"
    return out


def bitsandbytes_libs() -> list[str]:
    """The native libraries bitsandbytes ships (cpu, cuda128, rocm64 ...), found without importing it."""
    spec = importlib.util.find_spec("bitsandbytes")
    if spec is None or not spec.submodule_search_locations:
        return []
    libs = []
    for d in spec.submodule_search_locations:
        libs += [
            m.group(1)
            for p in Path(d).glob("libbitsandbytes_*")
            if (m := re.match(r"libbitsandbytes_(\w+?)\.", p.name))
        ]
    return sorted(set(libs))


def flash_attn_import() -> str | None:
    """'ok', or the error of importing flash-attn's CUDA extension after torch (in a child process)."""
    if package_version("flash-attn") is None:
        return None
    rc, text = _run([sys.executable, "-c", "import torch, flash_attn_2_cuda"], timeout=120)
    return "ok" if rc == 0 else (text.strip().splitlines() or ["failed"])[-1][-400:]


def collect_facts() -> dict[str, Any]:
    lock = lock_file()
    torch = torch_facts()
    nv = nvidia()
    return {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "torch": torch,
        "nvidia": {k: v for k, v in nv.items() if k != "gpus"},
        "gpus": nv["gpus"] or torch["gpus"],
        "gpu_present": bool(nv["gpus"] or torch["gpus"]),
        "packages": {name: package_version(name) for name in PACKAGES},
        "bitsandbytes_libs": bitsandbytes_libs(),
        "flash_attn_import": flash_attn_import(),
        "lock_file": str(lock) if lock else None,
        "locked": parse_lock(lock.read_text(encoding="utf-8")) if lock and lock.is_file() else {},
    }


def env_report() -> dict[str, Any]:
    """The facts, the locked versions of the packages shown, and the known-bad combinations found."""
    facts = collect_facts()
    findings = [f.to_dict() for f in check_env(facts)]
    shown = {name: facts["locked"][name] for name in PACKAGES if name in facts["locked"]}
    return {**facts, "locked": shown, "findings": findings}
