"""Peak GPU memory, step time and tokens/s of the llama8b (Q)LoRA recipes, side by side with a plain baseline.

What it measures, in one process, one case after the other (each case loads the model fresh; memory is freed and
the peak counters reset between cases):

  sft-recipe    llama8b-qlora-sft's hyperparameters, read from recipes/llama8b-qlora-sft/sft.axolotl.yaml: NF4 4-bit
                base with double quant (bf16 compute), LoRA r/alpha/dropout on all linear layers, sequence_len,
                micro_batch_size, gradient checkpointing with the YAML's kwargs (use_reentrant false), the YAML's
                optimizer (paged_adamw_8bit), bf16 autocast, tf32, max_grad_norm, and Axolotl's dtype fix-up after
                `prepare_model_for_kbit_training` (norms, embed_tokens and lm_head back to bf16). Attention is
                PyTorch SDPA: the YAML asks for flash_attention_2, but flash-attn has no wheel for the GPU machine.
                Every row is sequence_len random tokens, which is what sample packing produces (one causal sequence
                per row: packing's per-document attention boundaries are not modelled).
  sft-baseline  the plain transformers + PEFT loop people write first: the same 4-bit model, LoRA and tokens per step,
                but eager attention, torch AdamW (fp32 states), `prepare_model_for_kbit_training` with its defaults
                (gradient checkpointing without kwargs, so torch's default reentrant variant) and no dtype fix-up
                (embeddings, lm_head and norms stay fp32), tf32 off. The JSON names each difference.
  dpo-recipe    llama8b-qlora-dpo's DPO stage from recipes/llama8b-qlora-dpo/dpo.axolotl.yaml: a fresh LoRA (r 16) on
                the same 4-bit base, sequence_len 2048 per sequence, micro_batch_size pairs (chosen + rejected of every
                pair in one concatenated forward: 2 x micro-batch rows), sigmoid DPO loss with rl_beta, reference
                log-probs from the same model with the adapter disabled (no second model). Runs through TRL's
                DPOTrainer (what Axolotl drives) when trl and datasets import, else through a direct implementation
                of the same step; the JSON says which ran (and why, if TRL failed).
  lora-recipe   llama8b-lora-sft's hyperparameters from recipes/llama8b-lora-sft/sft.axolotl.yaml: the same random
                weights loaded in bf16 (no quantization, no k-bit preparation: Axolotl's path for `adapter: lora`),
                LoRA on all linear layers, sequence_len x micro_batch_size, checkpointing with the YAML's kwargs,
                torch's fused AdamW (adamw_torch_fused). No baseline: it is the plain setup already.
  full-recipe   llama8b-full-fsdp's hyperparameters (sequence_len, micro_batch_size, fused AdamW, FSDP's activation
                checkpointing as non-reentrant checkpointing) on ONE GPU without sharding: bf16 weights, gradients and
                AdamW states, every weight trained. The recipe itself shards over 2+ GPUs; this is the unsharded peak.
  dora-recipe   qwen2.5-7b-dora-sft's hyperparameters on the real Qwen2.5-7B-Instruct architecture (random weights,
                its own config values below): DoRA (LoRA with use_dora) on all linear layers of the bf16 base.
  sft-eager     sft-recipe with eager attention and nothing else changed (isolates the attention-matrix term).
  sft-chunked   (only with --cases) sft-recipe with the causal-LM loss computed as Axolotl's `chunked_cross_entropy`
                computes it: the logits split into 8 chunks along the sequence, each chunk's fp32 cross-entropy
                (sum) compiled by inductor, divided by the label count (the estimator's `--loss chunked` term).
  orpo-recipe, kto-recipe, reward-recipe
                llama8b-qlora-orpo / -kto / llama8b-reward-model from their Axolotl YAMLs, each through TRL's own
                trainer (ORPOTrainer from trl.experimental, KTOTrainer, RewardTrainer on a sequence-classification
                model with the `score` head in modules_to_save), the recipe's LoRA, beta/weights, sequence_len and
                micro-batch; rows fill sequence_len.
  full-recipe-accum  full-recipe with the YAML's gradient accumulation (an optimizer step every 4 micro-batches).
  full-foreach  (only with --cases) full-recipe with torch's foreach AdamW (adamw_torch) instead of the fused kernel:
                the step's sqrt(exp_avg_sq) temporary (the estimator's optimizer-step phase).
  grpo-recipe   (only with --cases) qwen2.5-1.5b-grpo through TRL's GRPOTrainer on the real Qwen2.5-1.5B-Instruct
                architecture: generate() samples micro_batch x gradient_accumulation_steps completions of
                max_completion_length tokens (min_new_tokens forces the length), random rewards, LoRA, KL to the
                adapter-disabled policy (beta). A step is one optimizer step: its sampling and all its micro-batches
                (the estimator's GRPO logits and sampling phase).
  dpo-baseline  (only with --cases) the same DPO step with a separate 4-bit reference model, eager attention, torch
                AdamW and default checkpointing: the plain setup without PEFT's adapter switch.

Per case, after --warmup steps, over --steps timed steps: step time (mean, p50), tokens/s (for DPO chosen + rejected
tokens of the policy forward), torch.cuda.max_memory_allocated / max_memory_reserved during training (and during
loading), trainable parameters, loss of the first and last timed step. Then a table and the recipe/baseline ratios.
A step is one micro-batch: forward, backward, gradient clipping and an optimizer step (the recipes accumulate 8
micro-batches per optimizer step; the LoRA optimizer step is a small part of a micro-batch's time).

Weights are random: the real Llama-3.1-8B-Instruct (and for dora-recipe Qwen2.5-7B-Instruct) architecture, its
published config.json values below, built with `from_config` in bf16, saved once as safetensors under --model-dir
(about 16 GB each; kept out of $OUT) and loaded back
through BitsAndBytesConfig like the recipe. Speed and memory do not depend on weight values; losses from random
weights only show that the step ran. Paged optimizer states live in CUDA managed memory, which torch's counters do not
see: `device_used_gib` (total minus free, from cudaMemGetInfo, right after the last step) includes them.

Missing bitsandbytes, trl or peft are installed first from the wheels in --wheels (default .gpu-carry/, kept out of
git) with `pip install --no-deps --no-index` (or unpacked onto sys.path if pip cannot install).

Run on the GPU machine from the repo root (about 5 to 7 minutes on an H100; --deadline-s cuts timed steps short and
skips cases that would start too late, so the run ends in time):
    GIT_COMMIT=<sha> python benchmarks/gpu_recipe_bench.py --out $OUT/llama8b-qlora-bench.json --steps 6 --warmup 2

Check the script without a GPU (2-layer, hidden-64 Llama on CPU, no 4-bit; CPU numbers are not GPU numbers):
    python benchmarks/gpu_recipe_bench.py --tiny --out /tmp/tiny-bench.json --steps 2 --warmup 1
    python benchmarks/gpu_recipe_bench.py --dry-run --out /tmp/plan.json   # the 8B plan, YAML values, param count
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gpu_bench.bench import (
    ADAPTER_KEYS,
    ALL_CASES,
    DEFAULT_CASES,
    DORA_YAML,
    DPO_YAML,
    FULL_KEYS,
    FULL_YAML,
    GIB,
    GRPO_YAML,
    KTO_YAML,
    LORA_YAML,
    MIN_TIMED_STEPS,
    ORPO_YAML,
    REWARD_YAML,
    ROOT,
    SCRIPT_VERSION,
    SFT_YAML,
    STAGE_KEYS,
    T_START,
    Context,
    Deadline,
    _importable,
    build_cases,
    build_random_model,
    ensure_packages,
    environment,
    free_memory,
    log,
    run_case,
)
from gpu_bench.models import catalog_mismatches, catalog_parameters, count_params_meta, model_values
from gpu_bench.recipes import read_stage
from gpu_bench.records import print_table, ratios, write


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write (rewritten after every case)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per case (default 6)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps per case (default 2)")
    ap.add_argument("--wheels", type=Path, default=ROOT / ".gpu-carry", help="carried wheels (default .gpu-carry)")
    ap.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="folder for the random bf16 models, one sub-folder per architecture (not $OUT)",
    )
    ap.add_argument("--cases", nargs="+", choices=ALL_CASES, default=list(DEFAULT_CASES))
    ap.add_argument("--dpo-impl", choices=("auto", "trl", "direct"), default="auto",
                    help="auto: TRL's DPOTrainer if trl and datasets import, else the direct step")  # fmt: skip
    ap.add_argument("--deadline-s", type=float, default=420.0,
                    help="seconds from start: timed steps stop early and later cases are skipped past it")  # fmt: skip
    ap.add_argument("--tiny", action="store_true", help="2-layer hidden-64 Llama, CPU unless --device cuda")
    ap.add_argument("--tiny-4bit", action="store_true", help="with --tiny: keep bitsandbytes NF4 (works on CPU)")
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    ap.add_argument("--sweep", default="1024x1,2048x1,4096x1,8192x1,4096x2",
                    help="(sequence_len)x(micro_batch) points whose peak memory is measured after each SFT recipe "
                    "case, on the same model and optimizer ('' for none)")  # fmt: skip
    ap.add_argument("--dry-run", action="store_true", help="print the plan (config, YAML values, cases) and stop")
    args = ap.parse_args(argv)
    try:
        args.sweep = tuple(tuple(int(v) for v in p.split("x")) for p in args.sweep.split(",") if p.strip())
    except ValueError:
        ap.error(f"--sweep {args.sweep!r}: write points as SEQxMB separated by commas, e.g. 2048x1,4096x2")
    if any(len(p) != 2 or min(p) < 1 for p in args.sweep):
        ap.error(f"--sweep {args.sweep!r}: each point is SEQxMB with both at least 1")
    if args.steps < MIN_TIMED_STEPS or args.warmup < 0:
        ap.error(f"--steps must be at least {MIN_TIMED_STEPS} and --warmup at least 0")
    if args.tiny_4bit and not args.tiny:
        ap.error("--tiny-4bit goes with --tiny")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    record: dict[str, Any] = {
        "benchmark": "benchmarks/gpu_recipe_bench.py",
        "script_version": SCRIPT_VERSION,
        "argv": sys.argv,
        "mode": "tiny CPU/GPU check of the script" if args.tiny else "Llama-3.1-8B architecture, random weights",
    }
    record["carried_wheels"] = ensure_packages(args.wheels)
    import torch

    cuda = torch.cuda.is_available()
    device = args.device
    if device == "auto":
        device = "cuda" if cuda and not args.tiny else "cpu"
    if device == "cuda" and not cuda:
        raise SystemExit("--device cuda but torch sees no CUDA device")
    env = environment(device)
    if device == "cuda":
        torch.zeros(1, device="cuda")
        free, total = torch.cuda.mem_get_info()
        # What the process holds on the device beyond torch's allocator at start: the CUDA context.
        env["cuda_context_gib_at_start"] = round((total - free - torch.cuda.memory_reserved()) / GIB, 3)
    record["env"] = env
    log("environment:\n" + json.dumps(env, indent=1))

    keys = {"sft": (*STAGE_KEYS, "bnb_config_kwargs"), "dpo": (*STAGE_KEYS, "bnb_config_kwargs", "rl", "rl_beta"),
            "lora": STAGE_KEYS, "full": FULL_KEYS, "dora": (*STAGE_KEYS, "peft_use_dora"),
            "orpo": (*STAGE_KEYS, "bnb_config_kwargs", "rl", "orpo_alpha"),
            "kto": (*STAGE_KEYS, "bnb_config_kwargs", "rl", "rl_beta"),
            "reward": (*ADAPTER_KEYS, "bnb_config_kwargs", "reward_model", "lora_target_modules"),
            "grpo": (*STAGE_KEYS, "rl", "trl")}  # fmt: skip
    paths = {"sft": SFT_YAML, "dpo": DPO_YAML, "lora": LORA_YAML, "full": FULL_YAML, "dora": DORA_YAML,
             "orpo": ORPO_YAML, "kto": KTO_YAML, "reward": REWARD_YAML, "grpo": GRPO_YAML}  # fmt: skip
    modes = {"sft": "qlora", "dpo": "qlora", "lora": "lora", "full": "full", "dora": "lora", "orpo": "qlora",
             "kto": "qlora", "reward": "qlora", "grpo": "lora"}  # fmt: skip
    try:
        read = {k: read_stage(paths[k], keys[k], modes[k]) for k in paths}
    except ImportError as exc:  # ftkit's own dependencies (pydantic, jsonschema, pyyaml) do not import here
        record["error"] = f"ftkit does not import ({type(exc).__name__}: {exc}): carry its dependencies' wheels"
        write(args.out, record)
        print(f"error: {record['error']}", file=sys.stderr)
        return 2
    yamls = {k: data for k, (data, _) in read.items()}
    record["recipes_read_with"] = sorted({how for _, how in read.values()})
    for key, want in (("dpo", "dpo"), ("orpo", "orpo"), ("kto", "kto"), ("grpo", "grpo")):
        if yamls[key]["rl"] != want:
            raise SystemExit(f"{paths[key]}: rl is {yamls[key]['rl']!r}, expected {want!r}")
    record["recipe_yaml_values"] = {k: {key: yamls[k][key] for key in keys[k]} for k in paths}
    by_name = {c.name: c for c in build_cases(yamls, args.tiny, args.dpo_impl)}
    cases = [by_name[name] for name in args.cases]
    record["cases_planned"] = [asdict(c) for c in cases]
    four_bit = not args.tiny or args.tiny_4bit
    record["models"] = {}
    for arch in dict.fromkeys(c.arch for c in cases):
        values = model_values(args.tiny, arch)
        n_params = count_params_meta(values)
        if not args.tiny:  # the shapes ftkit's estimator models, and its parameter count
            if wrong := catalog_mismatches(arch, values):
                raise SystemExit(f"{arch}: config values differ from ftkit's catalog (ours, catalog): {wrong}")
            if n_params != (expected := catalog_parameters(arch)):
                raise SystemExit(f"config builds {n_params:,} parameters, {arch} has {expected:,} (ftkit's estimator)")
        record["models"][arch] = {
            "architecture": values["architectures"][0],
            "config_values": values,
            "parameters": n_params,
            "weights": "random (normal, std = initializer_range), built with from_config in bf16, saved as safetensors",
            "loaded_as": "QLoRA cases: NF4 4-bit via BitsAndBytesConfig from the recipe YAML; others: bf16"
            if four_bit
            else "bf16, no quantization",
        }
        log(f"model {arch}: {n_params:,} parameters{' (tiny)' if args.tiny else ''}, 4-bit cases: {four_bit}")
    record["notes"] = [
        "flash-attn is absent on the GPU machine: the recipe YAMLs ask for attn_implementation=flash_attention_2, "
        "the recipe cases here use sdpa (PyTorch's fused flash / memory-efficient kernels) instead",
        "one step = one micro-batch (forward, backward, grad clip, optimizer step); the recipes accumulate "
        "gradient_accumulation_steps micro-batches per optimizer step",
        "rows are full-length random tokens (what sample packing produces), one causal sequence per row",
        "max_memory_* count torch's allocator only; paged optimizer states (CUDA managed memory) show in "
        "device_used_gib",
        "losses come from random weights and only show that the step ran",
    ]
    for c in cases:
        log(f"case {c.name}: seq {c.seq_len} x micro-batch {c.micro_batch}, LoRA r{c.lora_r}/a{c.lora_alpha}/"
            f"d{c.lora_dropout}, {c.optimizer}, attn {c.attn_implementation}, gc {c.gradient_checkpointing_kwargs}"
            + (f", differs: {c.differs_from_recipe}" if c.differs_from_recipe else ""))  # fmt: skip
    if args.dry_run:
        record["dry_run"] = True
        write(args.out, record)
        log(f"dry run: plan written to {args.out}")
        return 0
    if not args.tiny and device != "cuda":
        record["error"] = "no CUDA device: the 8B benchmark measures GPU memory and speed (use --tiny on CPU)"
        write(args.out, record)
        print(f"error: {record['error']}", file=sys.stderr)
        return 2
    if four_bit and not _importable("bitsandbytes")[0]:
        record["error"] = f"bitsandbytes does not import and no usable wheel in {args.wheels}"
        write(args.out, record)
        print(f"error: {record['error']}", file=sys.stderr)
        return 2

    root = args.model_dir or Path(tempfile.gettempdir()) / ("bench-tiny-random" if args.tiny else "bench-random")
    models: dict[str, tuple[Path, int]] = {}
    for arch, info in record["models"].items():
        info.update(build_random_model(info["config_values"], root / arch, device, info["parameters"]))
        models[arch] = (root / arch, info["config_values"]["vocab_size"])
    ctx = Context(models=models, device=device, four_bit=four_bit, steps=args.steps,
                  warmup=args.warmup, deadline=Deadline(args.deadline_s), sweep=args.sweep,
                  tiny=args.tiny)  # fmt: skip
    results: list[dict[str, Any]] = []
    record["results"] = results
    for case in cases:
        if ctx.deadline.left() < 90:
            results.append({"name": case.name, "skipped": f"deadline ({args.deadline_s:.0f} s from start) too near"})
            log(f"case {case.name}: skipped, deadline too near")
            write(args.out, record)
            continue
        log(f"case {case.name}: start")
        try:
            res = run_case(case, ctx)
        except torch.OutOfMemoryError as exc:
            res = {"name": case.name, "settings": asdict(case), "error": f"CUDA out of memory: {exc}"[:600]}
        except Exception as exc:
            res = {"name": case.name, "settings": asdict(case), "error": f"{type(exc).__name__}: {exc}"[:600],
                   "traceback_tail": traceback.format_exc()[-3000:]}  # fmt: skip
            log(res["traceback_tail"])
        free_memory(device)
        results.append(res)
        record["ratios"] = ratios(results)
        record["elapsed_seconds"] = round(time.monotonic() - T_START, 1)
        write(args.out, record)
        summary = {k: res.get(k) for k in ("tokens_per_second", "step_seconds_mean", "peak_allocated_gib",
                                           "peak_reserved_gib", "implementation", "error")}  # fmt: skip
        log(f"case {case.name}: {json.dumps(summary)}")
    print_table(results, device)
    print("ratios recipe/baseline:", json.dumps(record.get("ratios", {}), indent=1))
    record["elapsed_seconds"] = round(time.monotonic() - T_START, 1)
    record["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write(args.out, record)
    log(f"wrote {args.out}")
    return 1 if any("error" in r for r in results) else 0
