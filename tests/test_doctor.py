"""`ftkit doctor`: each known failure is found in a synthetic log at its line, with a fix; known-bad
environments are flagged by their rule; the report on this machine has every field."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from ftkit.cli import main
from ftkit.doctor.env import PACKAGES, parse_lock, parse_smi_cuda, parse_smi_query, torch_facts
from ftkit.doctor.env_rules import RULES, check_env
from ftkit.doctor.patterns import PATTERNS
from ftkit.doctor.triage import classify_exit, classify_log, classify_refusal, classify_tokenizer
from ftkit.doctor.triage_run import read_tail, triage_run

NOISE = (
    "[2026-11-25 09:42:51,102] [INFO] [axolotl.utils.data.sft] Loading prepared dataset from disk\n"
    "  0%|          | 0/10 [00:00<?, ?it/s]\r 10%|█         | 1/10 [00:03<00:33,  3.7s/it]\r"
    " 20%|██        | 2/10 [00:07<00:29,  3.6s/it]\n"
    "{'loss': '4.416', 'grad_norm': '3.1', 'learning_rate': '0.0002', 'epoch': '0.09'}\n"
    "{'eval_loss': '2.203', 'eval_runtime': '1.2', 'epoch': '0.45'}\n"
    "[INFO] [axolotl.core.trainers.base] Saving model checkpoint to runs/x/sft/output/checkpoint-5\n"
    "[WARNING] [transformers.tokenization_utils_base] pad_token is <|endoftext|>; eos_token is <|im_end|>\n"
    "[DEBUG] [deepspeed.launch] [launch.py:314:sigkill_handler] returned 0; info: 10 steps\n"
    "generation config: {pad_token_id=0, eos_token_id=2, bos_token_id=1}; 'eval_loss': 'info'\n"
)  # fmt: skip
NOISE_LINES = NOISE.count("\n")

FAILURES = {
    "cuda-oom": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.96 GiB. GPU 0 has a total "
    "capacity of 23.57 GiB of which 1.02 GiB is free.",
    "nan-loss": "{'loss': 'nan', 'grad_norm': 'nan', 'learning_rate': '0.0002', 'epoch': '0.18'}",
    "chat-template": "ValueError: The chat template is not training-compatible (missing prefix-preservation or "
    "`{% generation %}` markers)",
    "pad-is-eos": "Setting `pad_token_id` to `eos_token_id`:2 for open-end generation.",
    "flash-attn-missing": "ImportError: FlashAttention2 has been toggled on, but it cannot be used due to the "
    "following error: the package for FlashAttention2 doesn't seem to be installed.",
    "gated-model": "huggingface_hub.errors.GatedRepoError: 401 Client Error. Cannot access gated repo for url "
    "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/resolve/main/config.json.",
    "disk-full": "OSError: [Errno 28] No space left on device: '/root/.cache/huggingface/hub/tmp'",
    "killed": "Killed",
    "bitsandbytes-no-gpu": "UserWarning: The installed version of bitsandbytes was compiled without GPU support. "
    "8-bit optimizers and GPU quantization are unavailable.",
}


def test_every_pattern_has_a_synthetic_log_here():
    assert set(FAILURES) == {p.id for p in PATTERNS}


@pytest.mark.parametrize("pattern_id", sorted(FAILURES))
def test_a_known_failure_is_found_at_its_line_with_a_fix(pattern_id: str):
    text = NOISE + "Traceback (most recent call last):\n" + FAILURES[pattern_id] + "\n" + NOISE
    [finding] = classify_log(text, "runs/r/sft/train.log")
    assert finding.id == pattern_id
    assert finding.where == f"runs/r/sft/train.log:{NOISE_LINES + 2}"
    assert finding.excerpt and finding.excerpt in FAILURES[pattern_id]
    assert finding.fix and finding.source


def test_a_healthy_log_has_no_findings():
    assert classify_log(NOISE * 3, "train.log") == []


@pytest.mark.parametrize("line", ["{'loss': nan, 'epoch': 0.1}", '{"loss": "NaN"}', "'grad_norm': 'inf'",
                                  "train_loss = -inf"])  # fmt: skip
def test_nan_and_inf_are_found_in_either_engines_log_format(line: str):
    assert [f.id for f in classify_log(line, "x.log")] == ["nan-loss"]


def test_oom_fixes_come_in_the_order_to_try_them_and_end_with_the_estimator():
    [oom] = classify_log(FAILURES["cuda-oom"], "x.log")
    keys = ["gradient checkpointing", "micro-batch", "sequence length", "8-bit optimizer", "QLoRA", "ftkit estimate"]
    assert [next(i for i, fix in enumerate(oom.fix) if key in fix) for key in keys] == list(range(len(keys)))


def test_the_first_of_several_matching_lines_is_reported_with_the_count():
    text = "ok\n{'loss': 'nan'}\nok\n{'loss': 'nan'}\n"
    [finding] = classify_log(text, "x.log", first_line=101)
    assert finding.line == 102 and finding.count == 2


def test_a_long_logs_tail_keeps_the_files_line_numbers(tmp_path: Path):
    log = tmp_path / "train.log"
    lines = [f"step {i}: {{'loss': '1.0'}}" for i in range(1, 3001)]
    lines[2990 - 1] = FAILURES["disk-full"]
    log.write_text("\n".join(lines) + "\n")
    text, first = read_tail(log, max_bytes=2000)
    assert first > 1 and len(text) < 2000
    [finding] = classify_log(text, str(log), first)
    assert finding.line == 2990 and log.read_text().splitlines()[finding.line - 1] == FAILURES["disk-full"]


def test_sigkill_exit_codes_and_pad_eos_tokenizers_are_classified():
    assert classify_exit(0) is None and classify_exit(1) is None
    for rc in (-9, 137):
        found = classify_exit(rc, "train.log")
        assert found is not None and found.id == "killed" and found.detail == f"exit code {rc}"
    same = {"eos_token": "<|im_end|>", "pad_token": {"content": "<|im_end|>"}}
    assert classify_tokenizer(same, "tokenizer_config.json").id == "pad-is-eos"  # type: ignore[union-attr]
    assert classify_tokenizer({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, "t.json") is None
    assert classify_tokenizer({"eos_token_id": 2, "pad_token_id": 2}, "t.json") is not None


def _run_dir(tmp_path: Path, log: str | None, returncode: int, tokenizer: dict[str, Any] | None = None) -> Path:
    run = tmp_path / "runs" / "r" / "20261125-000000-full"
    (run / "sft").mkdir(parents=True)
    metrics = {"recipe": "r", "status": "failed", "stages": {"sft": {"returncode": returncode}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    if log is not None:
        (run / "sft" / "train.log").write_text(log)
    if tokenizer is not None:
        (run / "sft" / "output").mkdir()
        (run / "sft" / "output" / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    return run


def test_a_failed_run_is_triaged_from_its_metrics_and_stage_log(tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    run = _run_dir(tmp_path, NOISE + FAILURES["cuda-oom"] + "\n", 1)
    assert main(["doctor", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    [finding] = report["run"]["findings"]
    assert finding["id"] == "cuda-oom" and finding["where"] == f"{run}/sft/train.log:{NOISE_LINES + 1}"
    assert report["run"]["status"] == "failed" and report["run"]["stages"][0]["returncode"] == 1
    assert main(["doctor", str(run)]) == 0
    out = capsys.readouterr().out
    assert "CUDA out of memory" in out and "train.log:" in out


def test_a_killed_stage_with_a_silent_log_and_a_pad_eos_tokenizer(tmp_path: Path):
    run = _run_dir(tmp_path, NOISE, -9, {"eos_token": "</s>", "pad_token": "</s>"})
    triage = triage_run(run)
    assert sorted(f.id for f in triage.findings) == ["killed", "pad-is-eos"]
    killed = next(f for f in triage.findings if f.id == "killed")
    assert killed.detail == "exit code -9" and killed.file == str(run / "sft" / "train.log")


def test_an_unknown_failure_shows_the_end_of_the_failed_stages_log(tmp_path: Path):
    run = _run_dir(tmp_path, NOISE + "RuntimeError: something nobody has seen\n", 1)
    triage = triage_run(run)
    assert triage.findings == [] and triage.tail.endswith("RuntimeError: something nobody has seen")


def test_a_dir_that_is_not_a_run_dir_is_a_usage_error(tmp_path: Path):
    assert main(["doctor", str(tmp_path)]) == 2


def test_a_refusal_with_many_problems_is_one_finding_at_the_first_with_each_fix_once():
    problems = [{"message": f"row {n} breaks the schema", "file": "d.jsonl", "line": n, "fix": "make 'messages' match"}
                for n in (2, 5, 9)]  # fmt: skip
    refused = {"check": "data", "stage": "sft", "exit_code": 3, "message": "stage 'sft': 30 of 40 rows break it",
               "problems": problems, "problems_total": 30}  # fmt: skip
    found = classify_refusal(refused, {"status": "interrupted"}, "runs/r/1")
    assert found.id == "refused-data" and found.severity == "error"
    assert found.title == ("the data check (rows that break the stage's schema) refused a resume on stage 'sft' "
                           "before training (exit code 3)")  # fmt: skip
    assert found.where == "d.jsonl:2" and found.excerpt == "row 2 breaks the schema"
    assert found.detail == ("stage 'sft': 30 of 40 rows break it; also: row 5 breaks the schema; row 9 breaks the "
                            "schema (+27 more)")  # fmt: skip
    resume = "then resume again: ftkit recipe run --resume runs/r/1 (the run stays interrupted)"
    assert found.fix == ["make 'messages' match", resume]


# ------------------------------------------------------------------ environment


def facts(**changes: Any) -> dict[str, Any]:
    """A healthy GPU machine; `changes` replace top-level keys, 'torch.x' / 'packages.x' nested ones."""
    base: dict[str, Any] = {
        "torch": {"version": "2.8.0+cu128", "cuda_build": "12.8", "cudnn": 91002, "cuda_available": True,
                  "gpus": [], "import_error": None},
        "nvidia": {"driver": "570.86", "cuda_driver": "12.8"},
        "gpus": [{"name": "NVIDIA L4", "memory_gib": 22.5}],
        "gpu_present": True,
        "packages": {"transformers": "5.16.1", "peft": "0.20.0", "bitsandbytes": "0.50.2", "flash-attn": "2.8.3",
                     "unsloth": None},
        "bitsandbytes_libs": ["cpu", "cuda126", "cuda128"],
        "flash_attn_import": "ok",
        "locked": {"transformers": "5.16.1", "peft": "0.20.0"},
        "lock_file": "requirements.lock",
    }  # fmt: skip
    for key, value in changes.items():
        head, _, tail = key.partition("__")
        if tail:
            base[head][tail.replace("_", "-") if head == "packages" else tail] = value
        else:
            base[head] = value
    return base


BAD = {
    "cpu-torch-with-gpu": facts(torch__cuda_build=None, torch__version="2.8.0+cpu", torch__cuda_available=False),
    "torch-cuda-newer-than-driver": facts(nvidia={"driver": "470.2", "cuda_driver": "11.4"}),
    "gpu-not-usable": facts(torch__cuda_available=False),
    "flash-attn-other-torch": facts(flash_attn_import="ImportError: flash_attn_2_cuda.so: undefined symbol: _ZN3c10"),
    "bitsandbytes-without-cuda": facts(bitsandbytes_libs=["cpu"]),
    "versions-differ-from-lock": facts(packages__transformers="4.57.0"),
    "unsloth-without-gpu": facts(packages__unsloth="2026.11.1", gpu_present=False, gpus=[],
                                 torch__cuda_build=None, torch__cuda_available=False),
}  # fmt: skip


def test_every_rule_has_a_bad_environment_here():
    assert set(BAD) == {r.id for r in RULES}


def test_a_healthy_gpu_environment_has_no_findings():
    assert check_env(facts()) == []


@pytest.mark.parametrize("rule_id", sorted(BAD))
def test_a_known_bad_combination_is_flagged_with_a_fix_and_source(rule_id: str):
    found = check_env(BAD[rule_id])
    assert [f.id for f in found] == [rule_id]
    assert found[0].detail and found[0].fix and found[0].source


def test_nvidia_smi_and_lock_files_are_parsed():
    gpus = parse_smi_query("NVIDIA H100 80GB HBM3, 81559, 570.86.15\nNVIDIA H100 80GB HBM3, 81559, 570.86.15\n")
    assert gpus[0] == {"name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.6, "driver": "570.86.15"} and len(gpus) == 2
    assert parse_smi_cuda("| NVIDIA-SMI 570.86.15   Driver Version: 570.86.15   CUDA Version: 12.8 |") == "12.8"
    lock = "torch==2.13.0+cpu \\\n    --hash=sha256:ab\nflash_attn==2.8.3 ; sys_platform == 'linux'\n# via x\n"
    assert parse_lock(lock) == {"torch": "2.13.0+cpu", "flash-attn": "2.8.3"}


def test_the_environment_report_on_this_machine_has_every_field(capsys: pytest.CaptureFixture[str]):
    code = main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    env = report["environment"]
    assert report["run"] is None
    for key in ("python", "platform", "torch", "nvidia", "gpus", "packages", "locked", "findings"):
        assert key in env, key
    assert set(env["torch"]) >= {"version", "cuda_build", "cudnn", "cuda_available"}
    assert set(env["nvidia"]) >= {"driver", "cuda_driver"} and set(env["packages"]) == set(PACKAGES)
    assert env["packages"]["transformers"] and env["packages"]["torch"]
    errors = [f for f in env["findings"] if f["severity"] == "error"]
    assert code == (5 if errors else 0)
    if not env["gpu_present"]:  # this CPU machine: a CPU torch is right, nothing is an error
        assert errors == []


def test_a_gpu_seen_by_nvidia_smi_with_this_cpu_torch_is_an_error_exit_5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """nvidia-smi (a stand-in script on PATH) reports an L4; the CPU build of torch here cannot use it."""
    if torch_facts()["cuda_build"]:
        pytest.skip("this torch has a CUDA build")
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--query-gpu=name,memory.total,driver_version" ]; then echo "NVIDIA L4, 23034, 570.86.15";\n'
        'else echo "| NVIDIA-SMI 570.86.15   Driver Version: 570.86.15   CUDA Version: 12.8 |"; fi\n'
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}:{os.environ['PATH']}")
    assert main(["doctor", "--json"]) == 5
    env = json.loads(capsys.readouterr().out)["environment"]
    assert env["gpus"] == [{"name": "NVIDIA L4", "memory_gib": 22.5, "driver": "570.86.15"}]
    assert env["nvidia"]["driver"] == "570.86.15" and env["nvidia"]["cuda_driver"] == "12.8"
    assert "cpu-torch-with-gpu" in [f["id"] for f in env["findings"]]


def test_exit_6_is_classified_as_a_resumable_interruption_not_a_failure():
    found = classify_exit(6, "train.log")
    assert found is not None and found.id == "interrupted" and found.severity == "info"
    assert any("--resume RUN_DIR" in fix for fix in found.fix)


def test_an_interrupted_stage_is_located_at_its_stop_line_in_the_log(tmp_path: Path):
    log = NOISE + "ftkit: checkpoint-3 saved in /tmp/out; stopping\nftkit: stopped at step 3 on SIGTERM; resume\n"
    run = _run_dir(tmp_path, log, 6)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["status"] = metrics["stages"]["sft"]["status"] = "interrupted"
    (run / "metrics.json").write_text(json.dumps(metrics))
    [finding] = triage_run(run).findings
    assert finding.id == "interrupted" and finding.line == NOISE_LINES + 1 and finding.detail == "exit code 6"


def test_a_resumed_stage_that_finished_does_not_report_its_old_stop_lines(tmp_path: Path):
    log = NOISE + "ftkit: stopped at step 3 on SIGTERM; resume from the checkpoint\n===== ftkit: resumed =====\n"
    run = _run_dir(tmp_path, log, 0)
    assert triage_run(run).findings == []
