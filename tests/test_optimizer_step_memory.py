"""What torch's AdamW step allocates beyond its states, measured on the CPU (torch.profiler's memory timeline) against
the estimator's optimizer-step term: the foreach implementation (adamw_torch) a sqrt(exp_avg_sq) for every parameter
in the states' dtype, the fused one (adamw_torch_fused) nothing of the model's size."""

from __future__ import annotations

import pytest
import torch
from deepspeed_probe import step_allocation
from ftkit.estimate.architectures import lookup
from ftkit.estimate.inputs import Setting
from ftkit.estimate.memory import optimizer_step_temporaries, trainable_params


def _measured_bytes_per_param(kernel: str) -> float:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.Linear(1024, 512)).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, **{kernel: True})

    def backward() -> None:
        model(torch.randn(4, 512, dtype=torch.bfloat16)).float().pow(2).mean().backward()

    backward()
    opt.step()  # the first step creates the states
    backward()
    return step_allocation(opt.step) / params


@pytest.mark.parametrize("kernel", ["foreach", "fused"])
def test_a_bf16_adamw_step_allocates_what_the_estimator_counts(kernel: str):
    arch = lookup("llama-3.1-8b")
    s = Setting(method="full", adamw_kernel=kernel)
    estimated = optimizer_step_temporaries(arch, s) / trainable_params(arch, s)
    assert estimated == (2.0 if kernel == "foreach" else 0.0)
    assert _measured_bytes_per_param(kernel) == pytest.approx(estimated, abs=0.01)
