"""DeepSpeed's ZeRO optimizers keep an fp32 master copy of a bf16 model and AdamW states in fp32 (the estimator's
`master_weights` term, set for every DeepSpeed config by the Axolotl adapter), and their step allocates an fp32 copy
of the gradient partition on top (`optimizer_step_temporaries`). Checked on the CPU with the pinned DeepSpeed, one
process per case."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from ftkit.estimate.architectures import lookup
from ftkit.estimate.inputs import Setting
from ftkit.estimate.memory import optimizer_step_temporaries, trainable_params

pytestmark = pytest.mark.slow  # a DeepSpeed process per case (seconds)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _probe(stage: int, kernel: str) -> dict:
    probe = Path(__file__).with_name("deepspeed_probe.py")
    run = subprocess.run([sys.executable, str(probe), str(stage), str(_free_port()), kernel], capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    [line] = [x for x in run.stdout.splitlines() if x.startswith("PROBE ")]
    return json.loads(line.removeprefix("PROBE "))


@pytest.mark.parametrize(("stage", "kernel"), [(3, "fused"), (2, "foreach")])
def test_zero_keeps_fp32_masters_and_steps_with_an_fp32_gradient_copy_as_estimated(stage: int, kernel: str):
    got = _probe(stage, kernel)
    assert got["model_dtypes"] == ["torch.bfloat16"]
    assert got["master_dtypes"] == ["torch.float32"] and got["master_numel"] == got["params"]
    assert got["state_dtypes"] == ["torch.float32"] and got["state_numel"] == 2 * got["params"]
    # The estimator's step bytes per element of a GPU's partition, for the same stage and kernel (llama-3.1-8b on 8
    # GPUs; ZeRO-3's sub-group cap is far above an eighth of its parameters' count there).
    s = Setting(method="full", gpus=8, parallelism=f"zero{stage}", master_weights=True, adamw_kernel=kernel)
    arch = lookup("llama-3.1-8b")
    estimated = optimizer_step_temporaries(arch, s) / (trainable_params(arch, s) / 8)
    assert got["step_bytes_per_param"] == pytest.approx(estimated, rel=0.01)
    assert estimated == (6.0 if kernel == "fused" else 8.0)
