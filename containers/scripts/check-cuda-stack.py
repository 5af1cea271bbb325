"""Checks inside an image, with no GPU, that the CUDA 13 toolchain from PyPI wheels does what our stack needs from
NVIDIA's devel image: nvcc compiles for sm_90; Triton compiles a kernel to a cubin with its own ptxas; DeepSpeed
builds a CUDA op (FusedAdam) with nvcc and torch's headers, as its JIT does on a GPU; bitsandbytes' CUDA library
finds every library it links except the driver's libcuda, which the NVIDIA container toolkit mounts.

    docker run --rm -v $PWD/containers/scripts/check-cuda-stack.py:/tmp/c.py:ro --entrypoint python IMAGE /tmp/c.py
Exit 0 when every check passes; --json prints the report as JSON.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ARCH = "9.0"  # H100/H200; any sm the wheels support would do


def nvcc() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.cu"
        src.write_text(
            "__global__ void axpy(float a, const float* x, float* y) { y[threadIdx.x] += a * x[threadIdx.x]; }\n"
        )
        subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-o", f"{tmp}/k.cubin", str(src)], check=True,
                       capture_output=True, text=True)  # fmt: skip
        size = (Path(tmp) / "k.cubin").stat().st_size
    version = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return f"{version}; sm_90 cubin of {size} bytes"


def triton_kernel() -> str:
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget

    @triton.jit
    def add(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)

    sig = {"x_ptr": "*fp32", "y_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}
    src = triton.compiler.ASTSource(fn=add, signature=sig, constexprs={"BLOCK": 128})
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32))
    return f"triton {triton.__version__}: cubin of {len(kernel.asm['cubin'])} bytes for sm_90"


def deepspeed_op() -> str:
    os.environ.setdefault("DS_ACCELERATOR", "cuda")
    os.environ["TORCH_CUDA_ARCH_LIST"] = ARCH
    from deepspeed.ops.op_builder import FusedAdamBuilder
    from torch.utils.cpp_extension import load

    builder = FusedAdamBuilder()
    builder.jit_mode = False  # take the arch list from TORCH_CUDA_ARCH_LIST, as an ahead-of-time build does
    started = time.monotonic()

    def paths(items: list[str]) -> list[str]:
        return [os.path.abspath(builder.deepspeed_src_path(p)) for p in builder.strip_empty_entries(items)]

    with tempfile.TemporaryDirectory() as tmp:
        load(
            name=builder.name,
            sources=paths(builder.sources()),
            extra_include_paths=paths(builder.include_paths()),
            extra_cflags=builder.strip_empty_entries(builder.cxx_args()),
            extra_cuda_cflags=builder.strip_empty_entries(builder.nvcc_args()),
            extra_ldflags=builder.strip_empty_entries(builder.extra_ldflags()),
            build_directory=tmp,
            is_python_module=False,  # built and linked; loading the kernels needs a driver
            verbose=False,
        )
        built = glob.glob(f"{tmp}/*.so")
    if not built:
        raise RuntimeError("no shared library was built")
    return f"deepspeed FusedAdam built for sm_{ARCH.replace('.', '')} in {time.monotonic() - started:.0f} s"


def bitsandbytes_libs() -> str:
    import bitsandbytes

    root = Path(bitsandbytes.__file__).parent
    [lib] = root.glob("libbitsandbytes_cuda130.so")
    nvidia = Path(bitsandbytes.__file__).parents[1] / "nvidia"
    paths = sorted({str(p.parent) for p in nvidia.rglob("*.so*")})
    out = subprocess.run(["ldd", str(lib)], capture_output=True, text=True,
                         env={**os.environ, "LD_LIBRARY_PATH": ":".join(paths)}).stdout  # fmt: skip
    missing = [line.split()[0] for line in out.splitlines() if "not found" in line]
    if set(missing) - {"libcuda.so.1"}:
        raise RuntimeError(f"{lib.name}: not found: {missing}")
    return f"{lib.name}: every linked library found{' (libcuda.so.1 comes from the driver)' if missing else ''}"


CHECKS: dict[str, Callable[[], str]] = {
    "nvcc": nvcc,
    "triton": triton_kernel,
    "deepspeed_jit": deepspeed_op,
    "bitsandbytes": bitsandbytes_libs,
}


def main() -> int:
    report: dict[str, dict[str, object]] = {}
    for name, check in CHECKS.items():
        try:
            report[name] = {"ok": True, "detail": check()}
        except Exception as exc:
            report[name] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    ok = all(r["ok"] for r in report.values())
    if "--json" in sys.argv:
        print(json.dumps({"ok": ok, "checks": report}, indent=2))
    else:
        for name, r in report.items():
            print(f"{'ok  ' if r['ok'] else 'FAIL'} {name}: {r['detail']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
