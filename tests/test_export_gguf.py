"""GGUF export: the pure-Python writer round-trips through transformers, K-quants without llama.cpp are
refused clearly, the llama.cpp backend's commands are right (run against stand-in scripts), and
verification fails on a broken export. The SmolLM2 round trips are marked slow."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from ftkit.errors import ExitCode, FtkitError
from ftkit.export import gguf_writer
from ftkit.export.gguf import (
    CONVERT_SHIM,
    PYTHON_QUANTS,
    GgufCheck,
    LlamaCpp,
    convert_argv,
    export_gguf,
    find_llama_cpp,
    llama_cpp_steps,
    llama_cpp_tokenizer_json,
    output_tail,
    quant_of,
    quantize_argv,
    read_gguf_metadata,
    resolve_backend,
    verify_gguf,
)

pytest.importorskip("gguf")
pytest.importorskip("transformers")


@pytest.fixture
def no_llama_cpp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide any llama.cpp on this machine: an empty LLAMA_CPP_DIR and a PATH without llama-quantize."""
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path / "no-llama.cpp"))
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))


@pytest.fixture(scope="module")
def tiny_exports(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLAMA_CPP_DIR", str(out / "no-llama.cpp"))
        results = {q: export_gguf(tiny_llama, out / f"tiny-{q}.gguf", q, backend="auto") for q in ("f16", "q8_0")}
    assert {r.backend for r in results.values()} == {"python"}
    return {q: r.path for q, r in results.items()}


# ------------------------------------------------------------------------------------------- (a) round trip


@pytest.mark.model
@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_tiny_llama_round_trips_through_transformers(tiny_llama: Path, tiny_exports: dict[str, Path], quant: str):
    check = verify_gguf(tiny_llama, tiny_exports[quant])
    assert check.quant == quant
    assert check.tokenizer_match, check.mismatched_prompts
    assert check.tokens_compared > 50
    assert check.max_abs_logit_diff <= check.tolerance, check
    assert check.top1_agreement == 1.0
    assert check.passed
    # f16 keeps the weights to ~3 significant digits; q8_0 to ~2.
    assert check.max_abs_logit_diff < (2e-3 if quant == "f16" else 3e-2)


@pytest.mark.model
def test_f32_export_is_exact(tiny_llama: Path, tmp_path: Path, no_llama_cpp: None):
    result = export_gguf(tiny_llama, tmp_path / "tiny-f32.gguf", "f32")
    check = verify_gguf(tiny_llama, result.path, prompts=["Who are you?"])
    assert check.max_abs_logit_diff == 0.0 and check.passed


@pytest.mark.model
def test_export_result_and_metadata(tiny_llama: Path, tiny_exports: dict[str, Path]):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    meta = read_gguf_metadata(tiny_exports["q8_0"])
    assert meta["general.architecture"] == "llama"
    assert meta["tokenizer.chat_template"] == tok.chat_template
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == "gpt-2"  # a locally trained byte-level BPE
    assert meta["tokenizer.ggml.eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    assert meta["tokenizer.ggml.bos_token_id"] == tok.convert_tokens_to_ids("<|im_start|>")
    assert meta["tokenizer.ggml.padding_token_id"] == tok.pad_token_id
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert len(meta["tokenizer.ggml.tokens"]) == meta["llama.vocab_size"] == len(tok)
    assert meta["tokenizer.ggml.token_type"][:3] == [3, 3, 3]  # the special tokens are CONTROL
    assert (meta["llama.block_count"], meta["llama.embedding_length"], meta["llama.attention.head_count_kv"]) == (
        2,
        64,
        2,
    )
    assert quant_of(tiny_exports["q8_0"]) == "q8_0" and quant_of(tiny_exports["f16"]) == "f16"


def test_q8_0_keeps_norms_f32_and_falls_back_to_f16_for_odd_rows():
    assert gguf_writer.choose_qtype((64,), "q8_0") == ("F32", None)
    assert gguf_writer.choose_qtype((128, 64), "q8_0") == ("Q8_0", None)
    qtype, note = gguf_writer.choose_qtype((128, 48), "q8_0")
    assert qtype == "F16" and note is not None and "32" in note
    assert gguf_writer.choose_qtype((128, 48), "bf16") == ("BF16", None)


@pytest.mark.model
def test_progress_reports_every_tensor(tiny_llama: Path, tmp_path: Path, no_llama_cpp: None):
    seen: list[tuple[str, int, int]] = []
    result = export_gguf(tiny_llama, tmp_path / "t.gguf", "f16", progress=lambda *a: seen.append(a))
    assert len(seen) == result.tensor_count == 20
    assert seen[-1][1:] == (20, 20) and seen[0][0] == "token_embd.weight"
    assert result.size_bytes == (tmp_path / "t.gguf").stat().st_size
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.model
def test_python_backend_refuses_what_transformers_cannot_load_back(tiny_llama: Path, tmp_path: Path):
    import json
    import shutil

    model = tmp_path / "qwen"
    shutil.copytree(tiny_llama, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "model_type": "qwen2"}))
    with pytest.raises(FtkitError) as err:
        export_gguf(model, tmp_path / "q.gguf", "f16", backend="python")
    assert err.value.code == ExitCode.ENVIRONMENT and "qwen2" in str(err.value) and "llama.cpp" in str(err.value)

    pre, why = gguf_writer.bpe_pre_tokenizer(
        {"model": {"type": "BPE"}, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split"}]}}
    )
    assert pre is None and "Split" in why


# ------------------------------------------------------------------------------------------- (b) K-quants


@pytest.mark.model
@pytest.mark.parametrize("backend", ["auto", "python"])
def test_k_quants_without_llama_cpp_are_refused_clearly(
    tiny_llama: Path, tmp_path: Path, no_llama_cpp: None, backend: str
):
    with pytest.raises(FtkitError) as err:
        export_gguf(tiny_llama, tmp_path / "tiny-q4_k_m.gguf", "Q4_K_M", backend=backend)
    text = str(err.value)
    assert err.value.code == ExitCode.ENVIRONMENT
    assert "q4_k_m" in text and "llama.cpp" in text and "container" in text
    assert all(q in text for q in PYTHON_QUANTS)  # says what works here
    assert not list(tmp_path.glob("*.gguf*"))


@pytest.mark.model
def test_unknown_quant_and_backend_are_usage_errors(tiny_llama: Path, tmp_path: Path):
    for quant, backend in (("q3_x", "auto"), ("f16", "ollama")):
        with pytest.raises(FtkitError) as err:
            export_gguf(tiny_llama, tmp_path / "x.gguf", quant, backend=backend)
        assert err.value.code == ExitCode.USAGE


@pytest.mark.model
def test_llama_cpp_backend_asked_for_but_missing(tiny_llama: Path, tmp_path: Path, no_llama_cpp: None):
    with pytest.raises(FtkitError) as err:
        export_gguf(tiny_llama, tmp_path / "x.gguf", "f16", backend="llama.cpp")
    assert err.value.code == ExitCode.ENVIRONMENT and "LLAMA_CPP_DIR" in str(err.value)


# ------------------------------------------------------------------------------------------- (c) llama.cpp argv

TOOLS = LlamaCpp(
    root=Path("/opt/llama.cpp"),
    convert_script=Path("/opt/llama.cpp/convert_hf_to_gguf.py"),
    quantize=Path("/opt/llama.cpp/build/bin/llama-quantize"),
    python="/usr/bin/python3",
)


def test_convert_and_quantize_argv():
    assert convert_argv(TOOLS, Path("/m"), Path("/o/x.gguf"), "q8_0") == [
        "/usr/bin/python3",
        "/opt/llama.cpp/convert_hf_to_gguf.py",
        "/m",
        "--outfile",
        "/o/x.gguf",
        "--outtype",
        "q8_0",
    ]
    shimmed = convert_argv(TOOLS, Path("/m"), Path("/o/x.gguf"), "f16", pre_fallback="gpt-2")
    assert shimmed[:5] == ["/usr/bin/python3", "-c", CONVERT_SHIM, "gpt-2", "/opt/llama.cpp/convert_hf_to_gguf.py"]
    assert shimmed[5:] == ["/m", "--outfile", "/o/x.gguf", "--outtype", "f16"]
    assert quantize_argv(TOOLS.quantize, Path("/o/a.gguf"), Path("/o/b.gguf"), "q4_k_m") == [
        "/opt/llama.cpp/build/bin/llama-quantize",
        "/o/a.gguf",
        "/o/b.gguf",
        "Q4_K_M",
    ]
    assert quantize_argv(TOOLS.quantize, Path("a"), Path("b"), "q6_k", threads=4)[-2:] == ["Q6_K", "4"]


def test_llama_cpp_steps_and_backend_choice():
    assert llama_cpp_steps("q8_0") == ("q8_0", None)
    assert llama_cpp_steps("bf16") == ("bf16", None)
    assert llama_cpp_steps("q4_k_m") == ("f16", "Q4_K_M")
    assert llama_cpp_steps("q5_k_m", "bfloat16") == ("bf16", "Q5_K_M")
    assert resolve_backend("auto", "q4_k_m", TOOLS) == "llama.cpp"
    assert resolve_backend("auto", "f16", None) == "python"
    assert resolve_backend("python", "q8_0", TOOLS) == "python"


def test_find_llama_cpp(tmp_path: Path):
    assert find_llama_cpp({"LLAMA_CPP_DIR": str(tmp_path), "PATH": ""}) is None
    (tmp_path / "convert_hf_to_gguf.py").write_text("")
    found = find_llama_cpp({"LLAMA_CPP_DIR": str(tmp_path), "PATH": ""})
    assert found is not None and found.quantize is None
    binary = tmp_path / "build" / "bin" / "llama-quantize"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    found = find_llama_cpp({"LLAMA_CPP_DIR": str(tmp_path), "PATH": ""})
    assert found is not None and found.quantize == binary


def test_output_tail_keeps_the_last_lines():
    assert output_tail("a\n\nb\nc\n", lines=2) == "b\nc"


FAKE_CONVERTER = """
import argparse, json, sys
from pathlib import Path
import gguf

class TextModel:
    def get_vocab_base_pre(self, tokenizer):
        if Path(sys.argv[1], "known-pre").exists():
            return "known"
        raise NotImplementedError("BPE pre-tokenizer was not recognized - update get_vocab_base_pre()")

def main():
    p = argparse.ArgumentParser()
    p.add_argument("model"); p.add_argument("--outfile"); p.add_argument("--outtype")
    a = p.parse_args()
    if Path(a.model, "fail").exists():
        print("loading...", file=sys.stderr)
        print("ValueError: broken tensor blk.0", file=sys.stderr)
        sys.exit(3)
    w = gguf.GGUFWriter(a.outfile, "llama")
    w.add_tokenizer_pre(TextModel().get_vocab_base_pre(None))
    w.add_string("fake.outtype", a.outtype)
    w.add_string("fake.model", Path(a.model).name)
    tokenizer = json.loads(Path(a.model, "tokenizer.json").read_text())
    w.add_bool("fake.byte_fallback", bool(tokenizer["model"].get("byte_fallback")))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

if __name__ == "__main__":
    main()
"""


@pytest.fixture
def fake_llama_cpp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in llama.cpp: a converter that writes an empty GGUF and a llama-quantize that copies it."""
    root = tmp_path / "llama.cpp"
    (root / "build" / "bin").mkdir(parents=True)
    (root / "convert_hf_to_gguf.py").write_text(FAKE_CONVERTER)
    quantize = root / "build" / "bin" / "llama-quantize"
    quantize.write_text(f'#!/bin/sh\necho "$@" > {root}/quantize.args\ncp "$1" "$2"\n')
    quantize.chmod(quantize.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("LLAMA_CPP_DIR", str(root))
    return root


@pytest.mark.model
def test_llama_cpp_backend_names_a_local_tokenizer_gpt2_and_quantizes(
    tiny_llama: Path, tmp_path: Path, fake_llama_cpp: Path
):
    out = tmp_path / "out" / "tiny-q4_k_m.gguf"
    result = export_gguf(tiny_llama, out, "q4_k_m")
    assert result.backend == "llama.cpp" and result.path == out and out.is_file()
    meta = read_gguf_metadata(out)
    assert meta["tokenizer.ggml.pre"] == "gpt-2"  # the shim named the pre-tokenizer the converter did not know
    assert meta["fake.outtype"] == "f16"
    src, dst, qtype = (fake_llama_cpp / "quantize.args").read_text().split()
    assert (Path(dst), qtype) == (out.with_name(out.name + ".partial"), "Q4_K_M")  # renamed once complete
    assert not Path(src).exists()  # the intermediate f16 file is removed
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


@pytest.mark.model
def test_llama_cpp_shim_keeps_a_known_pre_tokenizer(tiny_llama: Path, tmp_path: Path, fake_llama_cpp: Path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    (model / "known-pre").write_text("")
    result = export_gguf(model, tmp_path / "m.gguf", "q8_0")
    assert read_gguf_metadata(result.path)["tokenizer.ggml.pre"] == "known"
    assert not (fake_llama_cpp / "quantize.args").exists()  # q8_0 comes straight from the converter


def _sentencepiece_shaped(tokenizer_json: dict) -> dict:
    """A byte-level BPE in the shape transformers' GGUF loader saves it (as our SmolLM2 copy has it)."""
    return {
        **tokenizer_json,
        "model": {**tokenizer_json["model"], "byte_fallback": True, "fuse_unk": True},
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            ],
        },
    }


@pytest.mark.model
def test_llama_cpp_tokenizer_json_turns_off_an_unused_byte_fallback(tiny_llama: Path):
    import json

    plain = json.loads((tiny_llama / "tokenizer.json").read_text())
    assert llama_cpp_tokenizer_json(plain) is None  # already read as byte-level BPE
    fixed = llama_cpp_tokenizer_json(_sentencepiece_shaped(plain))
    assert fixed is not None
    assert fixed["model"]["byte_fallback"] is False and fixed["decoder"]["type"] == "ByteLevel"
    assert fixed["model"]["vocab"] == plain["model"]["vocab"] and fixed["model"]["merges"] == plain["model"]["merges"]
    with_bytes = _sentencepiece_shaped(plain)
    with_bytes["model"]["vocab"] = {**plain["model"]["vocab"], "<0x0A>": 400}
    assert llama_cpp_tokenizer_json(with_bytes) is None  # byte fallback in use: left alone


@pytest.mark.model
def test_llama_cpp_backend_stages_a_sentencepiece_shaped_byte_level_tokenizer(
    tiny_llama: Path, tmp_path: Path, fake_llama_cpp: Path
):
    import json
    import shutil

    from transformers import AutoTokenizer

    model = tmp_path / "smol-like"
    shutil.copytree(tiny_llama, model)
    shaped = _sentencepiece_shaped(json.loads((model / "tokenizer.json").read_text()))
    (model / "tokenizer.json").write_text(json.dumps(shaped))
    text = "<|im_start|>user\nWhat is the capital of France?<|im_end|>"
    fixed_dir = tmp_path / "fixed"
    fixed_dir.mkdir()
    fixed = llama_cpp_tokenizer_json(shaped)
    assert fixed is not None
    (fixed_dir / "tokenizer.json").write_text(json.dumps(fixed))
    shutil.copy(model / "tokenizer_config.json", fixed_dir)
    before, after = AutoTokenizer.from_pretrained(model), AutoTokenizer.from_pretrained(fixed_dir)
    assert before(text)["input_ids"] == after(text)["input_ids"]  # the rewrite changes no token id

    result = export_gguf(model, tmp_path / "m.gguf", "f16")
    meta = read_gguf_metadata(result.path)
    assert meta["fake.byte_fallback"] is False and meta["fake.model"] == "smol-like"
    assert result.notes and "byte_fallback" in result.notes[0]
    assert json.loads((model / "tokenizer.json").read_text()) == shaped  # the source folder is untouched


@pytest.mark.model
def test_llama_cpp_failure_shows_the_end_of_its_output(tiny_llama: Path, tmp_path: Path, fake_llama_cpp: Path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    (model / "fail").write_text("")
    with pytest.raises(FtkitError) as err:
        export_gguf(model, tmp_path / "m.gguf", "q4_k_m")
    assert err.value.code == ExitCode.ENGINE_FAILED
    assert "exit 3" in str(err.value) and "broken tensor blk.0" in str(err.value)
    assert not list(tmp_path.glob("m*.gguf"))


# ------------------------------------------------------------------------------------------- (d) can fail


def _swap_ffn_up(original):  # type: ignore[no-untyped-def]
    def read(index, plans):  # type: ignore[no-untyped-def]
        items = list(original(index, plans))
        at = {plan.gguf_name: i for i, (plan, _) in enumerate(items)}
        i, j = at["blk.0.ffn_up.weight"], at["blk.1.ffn_up.weight"]
        (pi, di), (pj, dj) = items[i], items[j]
        items[i], items[j] = (pi, dj), (pj, di)
        yield from items

    return read


@pytest.fixture(scope="module")
def sharp_tiny(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with q/k scaled up 8x: a random init attends almost uniformly, so a wrong rotary
    layout barely shows in its logits (measured: 0.5% of max|logit|); with sharper attention it does."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("models") / "sharp-tiny"
    shutil.copytree(tiny_llama, out)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8)
            layer.self_attn.k_proj.weight.mul_(8)
    model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.mark.model
@pytest.mark.parametrize("corruption", ["swapped-layers", "no-rotary-permutation"])
def test_a_corrupted_export_fails_verification(
    tiny_llama: Path,
    sharp_tiny: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_llama_cpp: None,
    corruption: str,
):
    model = tiny_llama
    if corruption == "swapped-layers":
        monkeypatch.setattr(gguf_writer, "_read_tensors", _swap_ffn_up(gguf_writer._read_tensors))
    else:
        model = sharp_tiny
        good = verify_gguf(model, export_gguf(model, tmp_path / "good.gguf", "f16").path)
        assert good.passed, good
        monkeypatch.setattr(gguf_writer, "permute_rotary", lambda w, n_head: w)
    result = export_gguf(model, tmp_path / "bad.gguf", "f16")
    check: GgufCheck = verify_gguf(model, result.path)
    assert check.tokenizer_match
    assert not check.passed
    assert check.max_abs_logit_diff > 10 * check.tolerance, check


@pytest.mark.model
def test_a_wrong_tokenizer_fails_verification(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_llama_cpp: None
):
    build = gguf_writer.build_vocab

    def swapped(model_dir, vocab_size):  # type: ignore[no-untyped-def]
        vocab = build(model_dir, vocab_size)
        i, j = vocab.tokens.index("Ġthe"), vocab.tokens.index("Ġis")
        vocab.tokens[i], vocab.tokens[j] = vocab.tokens[j], vocab.tokens[i]
        return vocab

    monkeypatch.setattr(gguf_writer, "build_vocab", swapped)
    result = export_gguf(tiny_llama, tmp_path / "bad-tok.gguf", "f16")
    check = verify_gguf(tiny_llama, result.path, prompts=["What is the capital of France?"])
    assert not check.tokenizer_match and not check.passed and check.mismatched_prompts == [0]


# ------------------------------------------------------------------------------------------- (e) SmolLM2


@pytest.fixture(scope="module")
def smollm2() -> Path:
    from ftkit.models import materialize

    try:
        return materialize("smollm2-135m-instruct", ROOT / ".cache")
    except FtkitError as exc:
        if exc.code == ExitCode.ENVIRONMENT:
            pytest.skip(f"SmolLM2 wheel not installed: {exc.title}")
        raise


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["q8_0"])  # f16: the shipped recipes' smoke runs (test_smoke_smollm2.py)
def test_smollm2_round_trip(smollm2: Path, tmp_path: Path, no_llama_cpp: None, quant: str):
    result = export_gguf(smollm2, tmp_path / f"smollm2-{quant}.gguf", quant)
    assert result.backend == "python" and result.tensor_count == 272 and not result.fallbacks
    check = verify_gguf(smollm2, result.path)
    assert check.tokenizer_match and check.passed, check
    assert check.top1_agreement >= (1.0 if quant == "f16" else 0.9)
    meta = read_gguf_metadata(result.path, {"tokenizer.chat_template", "tokenizer.ggml.pre"})
    assert meta["tokenizer.ggml.pre"] == "gpt-2"
    assert meta["tokenizer.chat_template"] == (smollm2 / "chat_template.jinja").read_text()


@pytest.mark.slow
@pytest.mark.skipif(find_llama_cpp() is None, reason="llama.cpp not found (LLAMA_CPP_DIR or /opt/llama.cpp)")
def test_tiny_llama_k_quant_with_real_llama_cpp(tiny_llama: Path, tmp_path: Path):
    result = export_gguf(tiny_llama, tmp_path / "tiny-q4_k_m.gguf", "q4_k_m", backend="llama.cpp")
    assert quant_of(result.path) == "q4_k_m"
    check = verify_gguf(tiny_llama, result.path)
    assert check.tokenizer_match and check.passed, check
