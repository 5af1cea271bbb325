"""Peak GPU memory, step time and tokens/s of the llama8b QLoRA recipes on a real GPU, side by side
with a plain transformers + PEFT baseline, in one process.

What it runs (each case loads the model fresh and trains a few steps on random tokens):

  sft-recipe    llama8b-qlora-sft's hyperparameters, read from recipes/*/sft.axolotl.yaml: NF4 4-bit base with
                double quant, LoRA r/alpha/dropout on all linear layers, sequence_len, micro_batch_size,
                non-reentrant gradient checkpointing, paged AdamW 8-bit, bf16, PyTorch SDPA attention
                (flash-attn has no wheel here; SDPA runs PyTorch's fused flash kernels). Full-length rows stand
                for packed batches (sample packing fills every row to sequence_len).
  sft-baseline  the plain transformers+PEFT loop people write first: same model, LoRA and tokens per step, but
                eager attention, torch AdamW (fp32 states) and default (reentrant) gradient checkpointing.
  dpo-recipe    llama8b-qlora-dpo's DPO stage: LoRA r16, sequence_len, micro-batch of pairs (chosen+rejected
                in one forward), the reference pass with the adapter disabled (no second model), sigmoid DPO
                loss with rl_beta, paged AdamW 8-bit, SDPA.
  dpo-baseline  the same DPO step with a separate 4-bit reference model in memory, eager attention, torch AdamW.

Weights are random: the real Llama-3.1-8B architecture (its published config.json values) built with
`from_config` in bf16, saved once as safetensors, loaded back through BitsAndBytesConfig like the recipe.
Speed and memory do not depend on the weight values; loss values here mean nothing and are not reported as such.

Run on a GPU machine from the repo root (wheels for missing packages in --wheels are installed first):
    python benchmarks/gpu_recipe_bench.py --out results.json --steps 6 --warmup 2
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# meta-llama/Llama-3.1-8B-Instruct config.json (published values).
LLAMA31_8B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "vocab_size": 128256,
}
TINY = {**LLAMA31_8B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512}  # fmt: skip
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def ensure_packages(wheels: Path) -> None:
    missing = [m for m in ("bitsandbytes", "peft") if importlib.util.find_spec(m) is None]
    if missing and wheels.is_dir():
        files = [str(w) for w in wheels.glob("*.whl") if any(w.name.startswith(m) for m in missing)]
        print(f"installing carried wheels for {missing}: {files}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", *files], check=True)
        importlib.invalidate_caches()


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text())


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "trl", "flash-attn"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def build_random_model(cfg_values: dict[str, Any], path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    if (path / "config.json").is_file():
        return
    t0 = time.time()
    config = LlamaConfig(**{k: v for k, v in cfg_values.items() if k not in ("architectures", "model_type")})
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    print(f"random model saved to {path} in {time.time() - t0:.0f} s", flush=True)


def load_4bit(path: Path, attn: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    return AutoModelForCausalLM.from_pretrained(
        path, quantization_config=quant, dtype=torch.bfloat16, attn_implementation=attn, device_map={"": 0}
    )


def add_lora(model: Any, r: int, alpha: int, dropout: float, reentrant: bool) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": reentrant}
    )
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def make_optimizer(name: str, params: list[Any], lr: float) -> Any:
    import torch

    if name == "paged_adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=lr)
    return torch.optim.AdamW(params, lr=lr)


def seq_logps(model: Any, ids: Any) -> Any:
    """Sum of log-probs of each row's tokens after the first (the 'answer' is the whole row here)."""
    import torch

    logits = model(input_ids=ids).logits[:, :-1].float()
    return torch.gather(logits.log_softmax(-1), 2, ids[:, 1:, None]).squeeze(-1).sum(-1)


def run_case(case: dict[str, Any], model_path: Path, steps: int, warmup: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t_load = time.time()
    model = load_4bit(model_path, case["attn"])
    ref = load_4bit(model_path, case["attn"]) if case.get("separate_ref") else None
    model = add_lora(model, case["r"], case["alpha"], case["dropout"], case["reentrant"])
    load_s = time.time() - t_load
    mem_after_load = torch.cuda.memory_allocated() / 2**30
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = make_optimizer(case["optimizer"], [p for p in model.parameters() if p.requires_grad], case["lr"])
    model.train()
    vocab = model.config.vocab_size
    mb, seq = case["micro_batch"], case["seq_len"]
    gen = torch.Generator(device="cuda").manual_seed(0)
    times, losses = [], []
    for step in range(warmup + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if case["kind"] == "sft":
                ids = torch.randint(0, vocab, (mb, seq), device="cuda", generator=gen)
                loss = model(input_ids=ids, labels=ids).loss
            else:
                ids = torch.randint(0, vocab, (2 * mb, seq), device="cuda", generator=gen)  # chosen rows, then rejected
                policy = seq_logps(model, ids)
                with torch.no_grad():
                    if ref is None:
                        with model.disable_adapter():
                            reference = seq_logps(model, ids)
                    else:
                        reference = seq_logps(ref, ids)
                logratio = (policy - reference)[:mb] - (policy - reference)[mb:]
                loss = -F.logsigmoid(case["beta"] * logratio).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
            losses.append(float(loss))
    tokens_per_step = mb * seq * (2 if case["kind"] == "dpo" else 1)
    result = {
        **case,
        "load_seconds": round(load_s, 1),
        "trainable_params": trainable,
        "memory_after_load_gib": round(mem_after_load, 2),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        "step_seconds_mean": round(statistics.fmean(times), 3),
        "step_seconds_p50": round(statistics.median(times), 3),
        "tokens_per_step": tokens_per_step,
        "tokens_per_second": round(tokens_per_step / statistics.fmean(times), 1),
        "timed_steps": steps,
        "warmup_steps": warmup,
        "loss_first_last_random_weights": [round(losses[0], 4), round(losses[-1], 4)],
    }
    del model, ref, opt
    gc.collect()
    torch.cuda.empty_cache()
    return result


def cases(sft: dict[str, Any], dpo: dict[str, Any], tiny: bool) -> list[dict[str, Any]]:
    cap = 256 if tiny else None
    recipe_sft = {
        "name": "sft-recipe", "kind": "sft", "attn": "sdpa", "optimizer": sft["optimizer"], "reentrant": False,
        "r": sft["lora_r"], "alpha": sft["lora_alpha"], "dropout": sft["lora_dropout"],
        "seq_len": cap or sft["sequence_len"], "micro_batch": sft["micro_batch_size"],
        "lr": float(sft["learning_rate"]),
    }  # fmt: skip
    baseline_sft = {
        **recipe_sft,
        "name": "sft-baseline",
        "attn": "eager",
        "optimizer": "adamw_torch",
        "reentrant": True,
    }
    recipe_dpo = {
        "name": "dpo-recipe", "kind": "dpo", "attn": "sdpa", "optimizer": dpo["optimizer"], "reentrant": False,
        "r": dpo["lora_r"], "alpha": dpo["lora_alpha"], "dropout": dpo["lora_dropout"], "beta": dpo["rl_beta"],
        "seq_len": cap or dpo["sequence_len"], "micro_batch": dpo["micro_batch_size"],
        "lr": float(dpo["learning_rate"]),
    }  # fmt: skip
    baseline_dpo = {**recipe_dpo, "name": "dpo-baseline", "attn": "eager", "optimizer": "adamw_torch",
                    "reentrant": True, "separate_ref": True}  # fmt: skip
    return [recipe_sft, baseline_sft, recipe_dpo, baseline_dpo]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--wheels", type=Path, default=ROOT / ".gpu-carry")
    ap.add_argument("--model-dir", type=Path, default=Path("/tmp/llama31-8b-random"))
    ap.add_argument("--only", nargs="*", help="case names to run (default: all)")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model instead of 8B (a quick check of the script)")
    args = ap.parse_args()

    ensure_packages(args.wheels)
    import torch

    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark measures GPU memory and speed (bitsandbytes 4-bit needs CUDA here)")
    sft = read_yaml(ROOT / "recipes/llama8b-qlora-sft/sft.axolotl.yaml")
    dpo = read_yaml(ROOT / "recipes/llama8b-qlora-dpo/dpo.axolotl.yaml")
    props = torch.cuda.get_device_properties(0)
    env = {
        "gpu": props.name,
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "driver": subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.strip(),
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "versions": versions(),
        "commit": os.environ.get("GIT_COMMIT", "unknown"),
        "date": time.strftime("%Y-%m-%d"),
        "weights": "random (Llama-3.1-8B-Instruct published config)" if not args.tiny else "random tiny config",
        "attention_note": "flash-attn absent: the recipe case uses attn_implementation=sdpa",
    }
    print(json.dumps(env, indent=1), flush=True)
    build_random_model(TINY if args.tiny else LLAMA31_8B, args.model_dir)
    results: list[dict[str, Any]] = []
    for case in cases(sft, dpo, args.tiny):
        if args.only and case["name"] not in args.only:
            continue
        print(f"--- {case['name']}", flush=True)
        try:
            res = run_case(case, args.model_dir, args.steps, args.warmup)
        except torch.OutOfMemoryError as exc:
            res = {**case, "error": f"CUDA OOM: {exc}"[:300]}
            gc.collect()
            torch.cuda.empty_cache()
        results.append(res)
        print(json.dumps(res), flush=True)
        args.out.write_text(json.dumps({"env": env, "results": results}, indent=1))
    by = {r["name"]: r for r in results if "error" not in r}
    ratios = {}
    for kind in ("sft", "dpo"):
        rec, base = by.get(f"{kind}-recipe"), by.get(f"{kind}-baseline")
        if rec and base:
            ratios[kind] = {
                "tokens_per_second_ratio": round(rec["tokens_per_second"] / base["tokens_per_second"], 3),
                "peak_allocated_ratio": round(rec["peak_allocated_gib"] / base["peak_allocated_gib"], 3),
            }
    print("\ncase          tok/s   step s  peak alloc GiB  peak reserved GiB")
    for r in results:
        if "error" in r:
            print(f"{r['name']:<13} {r['error'][:60]}")
        else:
            print(f"{r['name']:<13} {r['tokens_per_second']:>7.0f} {r['step_seconds_mean']:>7.2f} "
                  f"{r['peak_allocated_gib']:>15.2f} {r['peak_reserved_gib']:>18.2f}")  # fmt: skip
    print("ratios recipe/baseline:", json.dumps(ratios))
    args.out.write_text(json.dumps({"env": env, "results": results, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
