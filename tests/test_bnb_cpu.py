"""4-bit layers keep training after an evaluation pass on CPUs with AVX512-BF16 (ftkit.engines.bnb_cpu)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ftkit.engines.axolotl import CPU_4BIT_PLUGIN, RUN_CONTROL_PLUGIN, AxolotlEngine
from ftkit.engines.base import StageContext
from ftkit.engines.bnb_cpu import keep_4bit_layers_trainable

bnb = pytest.importorskip("bitsandbytes")


def input_grad_after_eval(fix: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Quantize a layer, run it once in eval mode without gradients, then train-forward and backward."""
    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(64, 32, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(torch.randn(32, 64), requires_grad=False, quant_type="nf4")
    layer = layer.to("cpu")
    expected = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).sum(0)
    if fix:
        assert keep_4bit_layers_trainable(torch.nn.Sequential(layer)) == 1
    x = torch.randn(4, 64)
    layer.eval()
    with torch.no_grad():
        layer(x)
    layer.train()
    x.requires_grad_(True)
    layer(x).sum().backward()
    return x.grad, expected


def test_a_4bit_layer_passes_the_right_gradient_to_its_input_after_an_eval_pass():
    grad, expected = input_grad_after_eval(fix=True)
    assert grad is not None
    torch.testing.assert_close(grad, expected.expand_as(grad), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not bnb.functional.has_avx512bf16(), reason="bitsandbytes repacks only on AVX512-BF16 CPUs")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_without_the_fix_bitsandbytes_drops_the_gradient_after_an_eval_pass():
    """The upstream behaviour the fix works around; when this fails, bitsandbytes has fixed it."""
    grad, _ = input_grad_after_eval(fix=False)
    assert grad is None


def ctx(device: str, tmp_path: Path) -> StageContext:
    return StageContext("r", "sft", tmp_path, tmp_path, device, 0 if device == "cpu" else 1)


def test_axolotl_cpu_runs_of_4bit_configs_get_the_plugin_and_others_do_not(tmp_path: Path):
    engine = AxolotlEngine()
    cpu_4bit = engine.runtime_overrides({"load_in_4bit": True, "plugins": ["x.Y"]}, ctx("cpu", tmp_path))
    assert cpu_4bit["plugins"] == ["x.Y", RUN_CONTROL_PLUGIN, CPU_4BIT_PLUGIN]  # every run gets the run control
    assert engine.runtime_overrides({"load_in_4bit": True}, ctx("cuda", tmp_path))["plugins"] == [RUN_CONTROL_PLUGIN]
    assert engine.runtime_overrides({"load_in_4bit": False}, ctx("cpu", tmp_path))["plugins"] == [RUN_CONTROL_PLUGIN]
    from ftkit.engines.axolotl_plugin import Cpu4bitTrainingPlugin  # the name in the config imports

    assert CPU_4BIT_PLUGIN.endswith(Cpu4bitTrainingPlugin.__name__)
