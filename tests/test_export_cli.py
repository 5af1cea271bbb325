"""The thin CLI over ftkit.export and ftkit.evaluate: arguments in, library called, JSON or tables out, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, write_jsonl
from ftkit.cli import main

pytestmark = pytest.mark.model  # every test loads the tiny Llama


def _json_out(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


def test_export_gguf_writes_and_verifies_with_json_output(tiny_llama: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    monkeypatch.setattr("ftkit.export.gguf.find_llama_cpp", lambda env=None: None)
    out = tmp_path / "tiny.q8_0.gguf"
    assert main(["export", "gguf", str(tiny_llama), "--quant", "q8_0", "--out", str(out), "--json"]) == 0
    result = _json_out(capsys)
    assert result["path"] == str(out) and out.is_file() and result["backend"] == "python"
    assert result["check"]["passed"] and result["check"]["tokenizer_match"]


def test_export_gguf_k_quant_without_llama_cpp_exits_5(tiny_llama: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    monkeypatch.setattr("ftkit.export.gguf.find_llama_cpp", lambda env=None: None)
    assert main(["export", "gguf", str(tiny_llama), "--quant", "q4_k_m", "--out", str(tmp_path / "x.gguf")]) == 5
    assert "needs llama.cpp" in " ".join(capsys.readouterr().err.split())


def test_export_quantize_on_cpu_exits_5_after_checking_inputs(tiny_llama: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]):  # fmt: skip
    calib = write_jsonl(tmp_path / "calib.jsonl", [{"text": "hello world"}])
    assert main(["export", "quantize", str(tiny_llama), "--method", "gptq", "--calibration", str(calib)]) == 5
    assert "1 calibration rows" in " ".join(capsys.readouterr().err.split())


def test_export_mergekit_linear_of_a_model_with_itself_is_that_model(tiny_llama: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]):  # fmt: skip
    from safetensors.torch import load_file

    shutil.copytree(tiny_llama, tmp_path / "copy")  # mergekit refuses the same input twice
    config = tmp_path / "linear.yaml"
    config.write_text(f"merge_method: linear\ndtype: float32\nmodels:\n"
                      f"  - model: {tiny_llama}\n    parameters: {{weight: 0.5}}\n"
                      f"  - model: copy\n    parameters: {{weight: 0.5}}\n")  # fmt: skip
    assert main(["export", "mergekit", str(config), "--out", str(tmp_path / "merged"), "--json"]) == 0
    assert _json_out(capsys)["method"] == "linear"
    merged, base = load_file(tmp_path / "merged" / "model.safetensors"), load_file(tiny_llama / "model.safetensors")
    assert merged.keys() == base.keys() and all((merged[k] - base[k]).abs().max() < 1e-6 for k in base)


def test_eval_of_a_model_dir_writes_eval_json_and_its_exit_code_follows_passed(
    tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    heldout = write_jsonl(tmp_path / "heldout.jsonl", [{"messages": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."}]}])  # fmt: skip
    code = main(["eval", str(tiny_llama), "--base", str(tiny_llama), "--heldout", str(heldout),
                 "--general-prompts", str(FIXTURES / "general-prompts.jsonl"), "--max-new-tokens", "8",
                 "--out", str(tmp_path / "eval.json"), "--json"])  # fmt: skip
    report = _json_out(capsys)
    assert json.loads((tmp_path / "eval.json").read_text())["perplexity"] == report["perplexity"]
    assert report["perplexity"]["rows_scored"] == 1
    assert report["forgetting"]["overall"]["relative_change"] == 0.0  # the base against itself
    assert code == (0 if report["passed"] else 1)
