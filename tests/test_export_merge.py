"""Merge an adapter into its base, verify it against base + adapter, write the model card, print serve commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from ftkit.errors import ExitCode, FtkitError
from ftkit.export.merge import merge_adapter, require_merged, resolve_merge_source
from ftkit.export.model_card import card_facts_from_run, front_matter, render_model_card
from ftkit.export.serve import ServeTarget, serve_commands, serve_target
from ftkit.export.verify_merge import verify_merge


def _make_adapter(base: Path, out: Path, *, seed: int = 1, use_dora: bool = False) -> Path:
    """A LoRA (or DoRA) adapter with random non-zero B, so it changes the model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, use_dora=use_dora)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def _logits(model_dir: Path | str, adapter: Path | None = None):  # type: ignore[no-untyped-def]
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir if adapter is None else adapter)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)  # fmt: skip
    with torch.no_grad():
        return model(**ids).logits


@pytest.fixture(scope="module")
def adapter(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_adapter(tiny_llama, tmp_path_factory.mktemp("adapters") / "lora")


@pytest.mark.model
@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
def test_merged_model_reloads_with_the_logits_of_base_plus_adapter(tiny_llama: Path, tmp_path: Path, use_dora: bool):
    adapter_dir = _make_adapter(tiny_llama, tmp_path / "adapter", use_dora=use_dora)
    result = merge_adapter(str(tiny_llama), adapter_dir, tmp_path / "merged", "float32")
    assert result.use_dora is use_dora
    reference, merged = _logits(tiny_llama, adapter_dir), _logits(tmp_path / "merged")
    assert (reference - _logits(tiny_llama)).abs().max().item() > 0.05, "the adapter must change the model"
    assert (reference - merged).abs().max().item() < 1e-4
    # The merged dir is a complete model: tokenizer, chat template, generation config stopping at EOS.
    from transformers import AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert tok.chat_template and GenerationConfig.from_pretrained(tmp_path / "merged").eos_token_id == tok.eos_token_id
    assert json.loads((tmp_path / "merged" / "ftkit-merge.json").read_text())["dtype"] == "float32"


@pytest.mark.model
def test_verification_passes_a_true_merge_and_reports_the_difference(tiny_llama: Path, adapter: Path, tmp_path: Path):
    merge_adapter(str(tiny_llama), adapter, tmp_path / "merged", "float32")
    check = verify_merge(str(tiny_llama), adapter, tmp_path / "merged", "float32")
    assert check["passed"] and check["holds_adapter"]
    assert check["max_abs_diff"] < 1e-4 and check["top1_agreement"] == 1.0
    assert check["adapter_effect_mean"] > 0.01


@pytest.mark.model
def test_verification_fails_a_merge_that_lost_the_adapter(tiny_llama: Path, adapter: Path, tmp_path: Path):
    shutil.copytree(tiny_llama, tmp_path / "not-merged")  # the base saved as if it were the merge
    check = verify_merge(str(tiny_llama), adapter, tmp_path / "not-merged", "float32")
    assert not check["passed"] and not check["holds_adapter"]
    from ftkit.export.merge import MergeResult

    result = MergeResult(tmp_path / "not-merged", str(tiny_llama), adapter, "float32", None, False, [], 0, 0.0, check)
    with pytest.raises(FtkitError) as err:
        require_merged(result)
    assert err.value.code == ExitCode.METRICS_FAILED and "--dtype float32" in str(err.value)


@pytest.mark.model
def test_verification_fails_a_merge_into_4bit_weights(tiny_llama: Path, adapter: Path, tmp_path: Path):
    """The trap (peft #2321): merging into bitsandbytes NF4 weights and dequantizing is lossy."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    q_base = AutoModelForCausalLM.from_pretrained(tiny_llama, quantization_config=quant, dtype=torch.float32)
    lossy = PeftModel.from_pretrained(q_base, str(adapter)).merge_and_unload().dequantize()
    lossy.save_pretrained(tmp_path / "merged-4bit")
    AutoTokenizer.from_pretrained(adapter).save_pretrained(tmp_path / "merged-4bit")
    lossy_check = verify_merge(str(tiny_llama), adapter, tmp_path / "merged-4bit", "float32")
    merge_adapter(str(tiny_llama), adapter, tmp_path / "merged", "float32")
    good_check = verify_merge(str(tiny_llama), adapter, tmp_path / "merged", "float32")
    assert good_check["passed"] and not lossy_check["passed"]
    assert lossy_check["max_abs_diff"] > 100 * good_check["max_abs_diff"]


@pytest.mark.model
def test_merged_model_is_written_in_shards_that_reload(tiny_llama: Path, adapter: Path, tmp_path: Path):
    result = merge_adapter(str(tiny_llama), adapter, tmp_path / "merged", "bfloat16", max_shard_size="100KB")
    assert len(result.shards) > 1 and (tmp_path / "merged" / "model.safetensors.index.json").is_file()
    assert (_logits(tmp_path / "merged") - _logits(tiny_llama, adapter)).abs().max().item() < 0.05


@pytest.mark.model
def test_merge_source_from_an_adapter_dir_uses_its_base(tiny_llama: Path, adapter: Path):
    source = resolve_merge_source(adapter)
    assert source.base == str(tiny_llama) and source.run_dir is None and source.trained_on_4bit is None


@pytest.mark.model
def test_merge_source_refuses_a_quantized_base_and_names_the_fix(tiny_llama: Path, adapter: Path, tmp_path: Path):
    quantized = tmp_path / "base-bnb-4bit"
    shutil.copytree(tiny_llama, quantized)
    cfg = json.loads((quantized / "config.json").read_text())
    (quantized / "config.json").write_text(json.dumps({**cfg, "quantization_config": {"load_in_4bit": True}}))
    with pytest.raises(FtkitError) as err:
        resolve_merge_source(adapter, base=str(quantized))
    assert err.value.problems[0].field == "quantization_config" and "--base" in (err.value.problems[0].fix or "")


def test_merge_source_rejects_a_dir_that_is_neither_run_nor_adapter(tmp_path: Path):
    with pytest.raises(FtkitError, match="neither a run dir"):
        resolve_merge_source(tmp_path)


def _fake_run(tmp_path: Path, tiny_llama: Path, adapter: Path) -> Path:
    run = tmp_path / "runs" / "demo" / "20261125-000000-smoke"
    run.mkdir(parents=True)
    metrics = {
        "recipe": "demo", "profile": "smoke", "sets": ["sft.max_steps=3"], "run_dir": str(run), "engine": "trl",
        "git_commit": "abc1234-dirty", "hardware_label": "CPU only", "versions": {"torch": "2.13.0"},
        "started": "2026-11-25T00:00:00+00:00", "finished": "2026-11-25T00:01:00+00:00",
        "stages": {"sft": {"base_model": str(tiny_llama), "adapter_dir": str(adapter), "steps": 3,
                           "train_loss_first": 3.0, "train_loss_tail": 2.0, "wall_seconds": 5.0,
                           "peak_memory_gib": 0.5, "sequence_len": 256,
                           "merged_dir": str(tmp_path / "merged")}},
        "checks": [{"stage": "sft", "metric": "train_loss_drop", "value": 1.0, "min": 0.5, "max": None,
                    "source": "measured", "passed": True, "reason": "within bounds"}],
        "export": {"artifacts": [{"format": "gguf", "quant": "f16", "path": str(tmp_path / "m.f16.gguf")}]},
    }  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.mark.model
def test_merge_source_from_a_run_dir_reads_its_last_stage(tmp_path: Path, tiny_llama: Path, adapter: Path):
    run = _fake_run(tmp_path, tiny_llama, adapter)
    source = resolve_merge_source(run)
    assert (source.stage, source.adapter_dir, source.base) == ("sft", adapter, str(tiny_llama))
    with pytest.raises(FtkitError, match="no stage 'dpo'"):
        resolve_merge_source(run, stage="dpo")


@pytest.mark.model
def test_model_card_front_matter_names_base_licence_hub_datasets_and_metrics(tmp_path: Path, tiny_llama: Path,
                                                                             adapter: Path):  # fmt: skip
    metrics = json.loads((_fake_run(tmp_path, tiny_llama, adapter) / "metrics.json").read_text())
    metrics["stages"]["sft"]["base_model"] = "/cache/models/smollm2-135m-instruct"
    facts = card_facts_from_run(
        metrics, license_id="apache-2.0", container={"image": "ghcr.io/x/axolotl", "tag": "0.19.0", "digest": None},
        datasets=["HuggingFaceH4/ultrachat_200k", str(tmp_path / "data.jsonl")], methods={"sft": "qlora"},
        merge={"dtype": "bfloat16", "trained_on_4bit": True,
               "check": {"prompts": 4, "max_abs_diff": 0.7, "tolerance": 5.0, "top1_agreement": 0.97, "passed": True}},
    )  # fmt: skip
    card = render_model_card(facts)
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the built-in's hub id, not a cache path
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["HuggingFaceH4/ultrachat_200k"]
    assert meta["metrics"][0]["metric"] == "train_loss_drop" and meta["metrics"][0]["source"] == "measured"
    assert {"qlora", "sft", "demo"} <= set(meta["tags"])
    assert "git checkout abc1234" in card and "make recipe NAME=demo PROFILE=smoke SET=sft.max_steps=3" in card
    assert "uncommitted changes" in card and "smoke" in card and "loaded unquantized" in card
    assert front_matter(facts)["recipe"] == {"name": "demo", "profile": "smoke", "engine": "trl"}
    assert meta["pipeline_tag"] == "text-generation"


def test_a_reward_models_card_is_tagged_text_classification():
    from ftkit.export.model_card import CardFacts

    facts = CardFacts("rm", "meta-llama/Llama-3.1-8B-Instruct", merge={"task_type": "SEQ_CLS", "dtype": "bfloat16"})
    assert front_matter(facts)["pipeline_tag"] == "text-classification"


@pytest.mark.model
def test_serve_commands_for_a_run_cover_merged_lora_and_gguf(tmp_path: Path, tiny_llama: Path, adapter: Path):
    target = serve_target(_fake_run(tmp_path, tiny_llama, adapter))
    assert target.lora_rank == 8 and target.max_len == 256
    cmds = {(c["server"], c["what"].split(" ")[0]): c["command"] for c in serve_commands(target)}
    assert cmds[("vllm", "merged")].startswith(f"vllm serve {tmp_path / 'merged'}")
    assert "--max-model-len 256" in cmds[("vllm", "merged")]
    lora = cmds[("vllm", "base")]
    assert "--enable-lora" in lora and f"demo={adapter}" in lora and "--max-lora-rank 8" in lora
    assert "--model-id /model" in cmds[("tgi", "merged")] and "--lora-adapters demo=/adapter" in cmds[("tgi", "base")]
    assert f"-v {tiny_llama}:/base" in cmds[("tgi", "base")] and "--model-id /base" in cmds[("tgi", "base")]
    assert cmds[("llama.cpp", "GGUF")] == f"llama-server -m {tmp_path / 'm.f16.gguf'} -c 256 --port 8000"


@pytest.mark.model
def test_serve_commands_for_a_plain_model_dir_have_no_lora_entry(tiny_llama: Path):
    cmds = serve_commands(serve_target(tiny_llama))
    assert {c["server"] for c in cmds} == {"vllm", "tgi"} and all("--enable-lora" not in c["command"] for c in cmds)
    assert serve_commands(ServeTarget(name="x")) == []


@pytest.mark.model
def test_awq_export_checks_inputs_then_refuses_without_a_gpu(tiny_llama: Path, tmp_path: Path):
    from ftkit.export.quantize import check_quantize_inputs

    calib = tmp_path / "calib.jsonl"
    calib.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                        {"role": "assistant", "content": f"a{i}"}]})
                               for i in range(3)) + "\n")  # fmt: skip
    args = dict(out_dir=tmp_path / "awq", scheme="W4A16", samples=128, max_len=512)
    with pytest.raises(FtkitError) as missing:
        check_quantize_inputs(tiny_llama, method="awq", calibration=tmp_path / "nope.jsonl", **args)
    assert missing.value.code == ExitCode.USAGE and missing.value.problems[0].file.endswith("nope.jsonl")
    with pytest.raises(FtkitError) as no_model:
        check_quantize_inputs(tmp_path, method="gptq", calibration=calib, **args)
    assert "ftkit export merge" in (no_model.value.problems[0].fix or "")
    with pytest.raises(FtkitError) as no_gpu:
        check_quantize_inputs(tiny_llama, method="awq", calibration=calib, **args)
    assert no_gpu.value.code == ExitCode.ENVIRONMENT and "3 calibration rows" in no_gpu.value.title
