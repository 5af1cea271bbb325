"""Multi-process training through Axolotl's own launcher: torchrun command line, environment, CPU plugin, estimator
parallelism, rank-0-only history; and (recipe_smoke) a 2-process FSDP smoke run end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import ROOT
from ftkit.engines.axolotl import (
    CPU_DISTRIBUTED_PLUGIN,
    AxolotlEngine,
    cpu_offload_of,
    deepspeed_stage,
)
from ftkit.engines.base import StageContext
from ftkit.estimate.from_engine import parallelism_of, setting_from_facts

MULTI_GPU_RECIPES = {
    "llama8b-full-fsdp": "fsdp",
    "llama8b-full-deepspeed-zero3": "zero3",
    "llama70b-qlora-fsdp": "fsdp",
}


def estimated(cfg: dict, engine=None):  # type: ignore[no-untyped-def]
    """The estimator's setting of an engine config, on 8 GPUs (a sharded config needs several)."""
    return setting_from_facts((engine or AxolotlEngine()).engine_facts(cfg), gpus=8)


def sharding(cfg: dict) -> str | None:
    return parallelism_of(AxolotlEngine().engine_facts(cfg))


def ctx(tmp_path: Path, device: str = "cpu", gpus: int = 0, processes: int | None = None) -> StageContext:
    return StageContext("r", "sft", tmp_path, tmp_path, device, gpus, None, processes)


def after(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_one_process_trains_in_process_with_the_python_launcher(tmp_path: Path):
    cmd = AxolotlEngine().command(tmp_path / "c.yaml", ctx(tmp_path))
    assert cmd[1:5] == ["-m", "axolotl.cli.main", "train", str(tmp_path / "c.yaml")]
    assert cmd[-2:] == ["--launcher", "python"] and "--" not in cmd
    assert "PATH" not in AxolotlEngine().env(ctx(tmp_path, "cuda", 1))


def test_two_cpu_processes_use_axolotls_torchrun_launcher_with_nproc_2_on_a_free_port(tmp_path: Path):
    cmd = AxolotlEngine().command(tmp_path / "c.yaml", ctx(tmp_path, processes=2))
    assert after(cmd, "--launcher") == "torchrun"
    launcher_args = cmd[cmd.index("--") + 1 :]  # Axolotl hands what follows `--` to torchrun
    assert after(launcher_args, "--nproc_per_node") == "2" and after(launcher_args, "--nnodes") == "1"
    assert "--standalone" in launcher_args  # its own rendezvous port: not 29500 shared with another run


def test_eight_gpus_without_a_profile_setting_start_one_process_per_gpu(tmp_path: Path):
    cmd = AxolotlEngine().command(tmp_path / "c.yaml", ctx(tmp_path, "cuda", 8))
    assert after(cmd, "--launcher") == "torchrun" and after(cmd, "--nproc_per_node") == "8"


@pytest.mark.slow  # imports Axolotl (seconds)
def test_the_axolotl_cli_accepts_the_launcher_and_passes_the_args_after_the_separator_to_torchrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import axolotl.cli.utils.train as launch
    from axolotl.cli.main import train
    from click.testing import CliRunner

    seen: dict[str, object] = {}
    monkeypatch.setattr(launch, "_launch_torchrun_training", lambda cfg, kw, args, use_exec: seen.update(args=args))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("base_model: x\n")
    cmd = AxolotlEngine().command(cfg, ctx(tmp_path, processes=2))
    result = CliRunner().invoke(train, cmd[4:], catch_exceptions=False)  # what follows `axolotl.cli.main train`
    assert result.exit_code == 0, result.output
    assert seen["args"] == cmd[cmd.index("--") + 1 :]


def test_the_launch_environment_finds_torchrun_and_shares_the_cpu_cores_between_ranks(tmp_path: Path):
    env = AxolotlEngine().env(ctx(tmp_path, processes=2))
    first = env["PATH"].split(os.pathsep)[0]
    assert (Path(first) / "torchrun").is_file()  # Axolotl execs `torchrun` by name
    assert int(env["OMP_NUM_THREADS"]) == max(1, (os.cpu_count() or 1) // 2)
    assert "OMP_NUM_THREADS" not in AxolotlEngine().env(ctx(tmp_path, "cuda", 8))


def test_the_cpu_distributed_plugin_is_added_only_to_multi_process_cpu_runs(tmp_path: Path):
    engine, cfg = AxolotlEngine(), {"datasets": []}
    assert CPU_DISTRIBUTED_PLUGIN in engine.runtime_overrides(cfg, ctx(tmp_path, processes=2))["plugins"]
    assert CPU_DISTRIBUTED_PLUGIN not in engine.runtime_overrides(cfg, ctx(tmp_path))["plugins"]
    assert CPU_DISTRIBUTED_PLUGIN not in engine.runtime_overrides(cfg, ctx(tmp_path, "cuda", 8))["plugins"]


def test_several_processes_load_rows_in_the_rank_so_a_sigterm_to_its_process_group_kills_no_loader_worker(
    tmp_path: Path,
):
    engine = AxolotlEngine()
    assert engine.runtime_overrides({}, ctx(tmp_path, "cuda", 8))["dataloader_num_workers"] == 0
    assert "dataloader_num_workers" not in engine.runtime_overrides({}, ctx(tmp_path, "cuda", 1))
    assert "dataloader_num_workers" not in engine.runtime_overrides(
        {"dataloader_num_workers": 2}, ctx(tmp_path, "cuda", 8)
    )


def test_a_deepspeed_json_beside_the_recipe_is_passed_to_axolotl_as_an_absolute_path(tmp_path: Path):
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    out = AxolotlEngine().runtime_overrides({"deepspeed": "ds.json"}, ctx(tmp_path))
    assert out["deepspeed"] == str((tmp_path / "ds.json").resolve())
    assert "deepspeed" not in AxolotlEngine().runtime_overrides({"deepspeed": "missing.json"}, ctx(tmp_path))


@pytest.mark.parametrize(
    ("zero", "expected"),
    [({"stage": 3}, "zero3"), ({"stage": 2}, "zero2"), ({"stage": 1}, "zero1"), ({"stage": 0}, "ddp"), ({}, "ddp")],
)
def test_the_estimator_reads_the_zero_stage_from_the_deepspeed_json(tmp_path: Path, zero: dict, expected: str):
    (tmp_path / "any-name.json").write_text(json.dumps({"zero_optimization": zero}))
    cfg = {"deepspeed": str(tmp_path / "any-name.json")}
    assert sharding(cfg) == expected
    assert estimated(cfg).parallel.strategy == expected
    assert sharding({"deepspeed": {"zero_optimization": zero}}) == expected  # inline


def test_a_deepspeed_file_not_readable_here_gives_its_stage_by_name_and_an_unknown_one_none():
    assert deepspeed_stage({"deepspeed": "deepspeed_configs/zero2.json"}) == 2  # Axolotl's own file names
    assert deepspeed_stage({"deepspeed": "elsewhere/my-config.json"}) is None
    assert estimated({"deepspeed": "elsewhere/my-config.json"}).parallel.strategy == "none"
    assert sharding({}) is None


def test_axolotls_embeddings_skip_upcast_turns_off_the_kbit_preparation_peak():
    assert estimated({"adapter": "qlora", "embeddings_skip_upcast": True}).precision.embedding_upcast is False
    assert estimated({"adapter": "qlora"}).precision.embedding_upcast is True


def test_a_single_process_full_fine_tune_without_flash_attention_keeps_fp32_embeddings():
    engine = AxolotlEngine()
    assert estimated({"attn_implementation": "sdpa"}, engine).precision.fp32_embeddings
    fsdp = {"fsdp_version": 2, "fsdp_config": {"reshard_after_forward": True}}
    zero2 = {"deepspeed": {"zero_optimization": {"stage": 2}}}
    for cfg in ({"flash_attention": True}, fsdp, {"adapter": "lora"}, zero2):
        assert not estimated(cfg, engine).precision.fp32_embeddings, cfg


def test_deepspeed_and_fsdp1_configs_estimate_fp32_master_weights_and_fsdp2_does_not():
    engine = AxolotlEngine()
    assert estimated({"deepspeed": {"zero_optimization": {"stage": 3}}}, engine).precision.master_weights
    assert estimated({"fsdp_config": {"reshard_after_forward": True}}, engine).precision.master_weights  # FSDP1
    fsdp2 = {"fsdp_version": 2, "fsdp_config": {"reshard_after_forward": True}}
    assert not estimated(fsdp2, engine).precision.master_weights
    assert not estimated({}, engine).precision.master_weights


def test_the_optimizer_name_sets_the_adamw_kernel_and_unset_means_the_fused_default():
    engine = AxolotlEngine()
    assert estimated({}, engine).optim.adamw_kernel == "fused"  # Axolotl's default: adamw_torch_fused
    assert estimated({"optimizer": "adamw_torch"}, engine).optim.adamw_kernel == "foreach"
    assert estimated({"optimizer": "adamw_torch_fused"}, engine).optim.adamw_kernel == "fused"
    from ftkit.engines.trl import TrlEngine

    assert estimated({"trainer": {"optim": "adamw_torch"}}, TrlEngine()).optim.adamw_kernel == "foreach"
    assert estimated({"trainer": {}}, TrlEngine()).optim.adamw_kernel == "fused"


def test_a_zero3_config_passes_its_sub_group_size_to_the_estimator():
    zero3 = {"deepspeed": {"zero_optimization": {"stage": 3, "sub_group_size": 50_000_000}}}
    assert estimated(zero3).optim.sub_group_size == 50_000_000
    assert estimated({"deepspeed": {"zero_optimization": {"stage": 3}}}).optim.sub_group_size == 1_000_000_000


def test_fsdp_configs_estimate_as_fsdp_with_fsdps_own_activation_checkpointing_and_offload():
    cfg = {"fsdp_version": 2, "fsdp_config": {"activation_checkpointing": True, "offload_params": True}}
    setting = estimated(cfg)
    assert setting.parallel.strategy == "fsdp" and setting.compute.gradient_checkpointing
    assert setting.parallel.cpu_offload
    plain = estimated({"fsdp_config": {"activation_checkpointing": False}})
    assert not plain.compute.gradient_checkpointing and not plain.parallel.cpu_offload
    assert cpu_offload_of({"deepspeed": {"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}})


@pytest.mark.slow  # imports Axolotl (seconds)
@pytest.mark.parametrize(("name", "parallelism"), MULTI_GPU_RECIPES.items())
def test_the_multi_gpu_recipes_shard_as_named_and_smoke_in_two_processes(name: str, parallelism: str):
    from ftkit.recipes.load import load_recipe
    from ftkit.recipes.resolve import resolve_stage

    loaded = load_recipe(name)
    cfg = resolve_stage(loaded, "sft", "full").config
    base = loaded.dir
    assert sharding(cfg) == parallelism
    assert parallelism != "zero3" or deepspeed_stage(cfg, base) == 3  # its JSON read, relative to the recipe
    assert loaded.recipe.profiles["smoke"].processes == 2
    assert loaded.recipe.hardware.gpus >= 2
    smoke = resolve_stage(loaded, "sft", "smoke").config
    assert sharding(smoke) == parallelism  # the smoke run exercises the same sharding
    assert estimated(cfg).compute.gradient_checkpointing  # FSDP's own or transformers'
    if parallelism == "fsdp":
        assert cfg["fsdp_config"]["transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer" and cfg["fsdp_version"] == 2


@pytest.mark.slow  # imports Axolotl (seconds)
def test_the_qlora_fsdp_recipe_keeps_its_4bit_base_in_bf16_storage_also_in_the_smoke_profile():
    from ftkit.recipes.load import load_recipe
    from ftkit.recipes.resolve import resolve_stage

    loaded = load_recipe("llama70b-qlora-fsdp")
    for profile in ("full", "smoke"):
        cfg = resolve_stage(loaded, "sft", profile).config
        assert cfg["load_in_4bit"] and cfg["adapter"] == "qlora"
        assert cfg["bnb_config_kwargs"]["bnb_4bit_quant_storage"] == "bfloat16"


def test_only_rank_zero_appends_to_the_history(tmp_path: Path):
    from ftkit.engines.trainer_callbacks import HistoryLog

    path = tmp_path / "history.jsonl"
    log = HistoryLog(path)
    for rank0 in (True, False):
        log.on_log(None, SimpleNamespace(is_world_process_zero=rank0, global_step=3), None, logs={"loss": 1.5})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"step": 3.0, "loss": 1.5}]


def run_smoke(name: str, runs: Path) -> tuple[int, Path]:
    code = subprocess.call([sys.executable, "-m", "ftkit.cli", "recipe", "run", name, "--profile", "smoke",
                            "--runs-dir", str(runs)], cwd=ROOT)  # fmt: skip
    [run_dir] = list((runs / name).iterdir())
    return code, run_dir


@pytest.mark.slow
@pytest.mark.recipe_smoke  # minutes on 2 cores: `nox -s smoke` runs it
def test_the_fsdp_smoke_trains_in_two_gloo_ranks_and_rank_zero_alone_writes_one_record_per_step(tmp_path: Path):
    code, run_dir = run_smoke("llama8b-full-fsdp", tmp_path / "runs")
    assert code == 0
    log = (run_dir / "sft" / "train.log").read_text(errors="replace")
    for rank in (0, 1):
        assert f"ftkit: rank {rank} of 2 on the CPU, torch.distributed backend gloo" in log
    history = [json.loads(line) for line in (run_dir / "sft" / "history.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in history if "loss" in r]
    assert steps == sorted(set(steps)) and len(steps) == 8  # one record per step: rank 0 only
    # 43 training rows, 1 x 2 accumulation x 2 ranks = 4 rows a step: the ranks read different rows
    assert [r for r in history if "loss" in r][-1]["epoch"] == pytest.approx(8 * 4 / 43, abs=0.05)
    sft = json.loads((run_dir / "metrics.json").read_text())["stages"]["sft"]
    assert sft["train_loss_drop"] > 0.3 and sft["eval_loss"] < 3.3
    assert (run_dir / "sft" / "output" / "model.safetensors").is_file()  # FSDP gathered the full state dict
    # no adapter: the trained weights are re-saved as the final model, checked against them, then exported
    assert sft["merge"]["kind"] == "full" and sft["merge"]["check"]["passed"]
    assert (run_dir / "sft" / "merged" / "model.safetensors").is_file()
    assert not (run_dir / "sft" / "merged" / "checkpoint-8").exists()
    export = json.loads((run_dir / "metrics.json").read_text())["export"]
    assert [a["passed"] for a in export["artifacts"]] == [True] and export["eval"]["passed"]


@pytest.mark.slow
@pytest.mark.recipe_smoke
def test_sigterm_to_the_runner_stops_both_ranks_at_a_checkpoint_and_exits_6(tmp_path: Path):
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "ftkit.cli", "recipe", "run", "llama8b-full-fsdp", "--profile",
                             "smoke", "--runs-dir", str(runs)], cwd=ROOT)  # fmt: skip
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        history = list(runs.glob("*/*/sft/history.jsonl"))
        if history and any('"loss"' in line for line in history[0].read_text().splitlines()):
            break
        time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=600) == 6
    [run_dir] = list((runs / "llama8b-full-fsdp").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    [stop] = metrics["interruptions"]
    assert stop["checkpoint"] and Path(stop["checkpoint"]).is_dir() and stop["step"] < 8
    out = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True)
    assert out.stdout.strip() == ""  # no rank left behind


def test_the_recipe_yaml_files_name_two_processes_for_smoke():
    for name in MULTI_GPU_RECIPES:
        recipe = yaml.safe_load((ROOT / "recipes" / name / "recipe.yaml").read_text())
        assert recipe["profiles"]["smoke"]["processes"] == 2


def test_the_recipe_folder_is_first_on_the_training_process_path_for_its_reward_functions(tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    path = AxolotlEngine().env(ctx(tmp_path))["PYTHONPATH"].split(os.pathsep)
    assert path == [str(tmp_path), "/elsewhere"]  # `rewards.format_reward` imports from the recipe folder


@pytest.mark.parametrize(
    ("keys", "loss"),
    [({}, "standard"), ({"chunked_cross_entropy": True}, "chunked"), ({"cut_cross_entropy": True}, "fused"),
     ({"liger_fused_linear_cross_entropy": True}, "fused")],
)  # fmt: skip
def test_the_axolotl_loss_keys_choose_the_estimators_loss_kernel(keys, loss):
    assert estimated(keys).compute.loss == loss


def test_a_trl_config_with_liger_kernels_is_estimated_with_the_fused_loss():
    from ftkit.engines import get_engine

    trl = get_engine("trl")
    assert estimated({"trainer": {"use_liger_kernel": True}}, trl).compute.loss == "fused"
    assert estimated({"trainer": {}}, trl).compute.loss == "standard"


def test_trl_prepares_no_fp32_embedding_upcast_and_unsloth_keeps_the_estimators_upper_bound():
    from ftkit.engines import get_engine

    qlora = {"model": {"load_in_4bit": True}, "lora": {"r": 8}, "trainer": {}}
    assert estimated(qlora, get_engine("trl")).precision.embedding_upcast is False
    assert estimated({**qlora, "unsloth": {}}, get_engine("unsloth")).precision.embedding_upcast is True
