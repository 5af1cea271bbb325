"""DeepSpeed's ZeRO optimizers keep an fp32 master copy of a bf16 model and AdamW states in fp32: the estimator's
`master_weights` term (set for every DeepSpeed config by the Axolotl adapter) rests on it. Checked on the CPU with
the pinned DeepSpeed, one process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a DeepSpeed process (seconds)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("stage", [3])
def test_zero_keeps_fp32_masters_and_fp32_adamw_states_of_a_bf16_model(stage: int):
    probe = Path(__file__).with_name("deepspeed_probe.py")
    run = subprocess.run([sys.executable, str(probe), str(stage), str(_free_port())], capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    [line] = [x for x in run.stdout.splitlines() if x.startswith("PROBE ")]
    got = json.loads(line.removeprefix("PROBE "))
    assert got["model_dtypes"] == ["torch.bfloat16"]
    assert got["master_dtypes"] == ["torch.float32"] and got["master_numel"] == got["params"]
    assert got["state_dtypes"] == ["torch.float32"] and got["state_numel"] == 2 * got["params"]
