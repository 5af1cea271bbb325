"""`ftkit estimate`: parse, call the estimator, print (or --json)."""

from __future__ import annotations

import argparse
from typing import Any

from ftkit.cli.console import out_console as out
from ftkit.cli.console import print_json
from ftkit.errors import FtkitError


def _estimate_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Setting fields given on the command line (None = not given)."""
    given = {
        "method": args.method, "stage": args.stage, "seq_len": args.seq_len, "micro_batch": args.micro_batch,
        "grad_accum": args.grad_accum, "gradient_checkpointing": args.checkpointing, "attention": args.attention,
        "optimizer": args.optimizer, "lora_rank": args.lora_rank, "sample_packing": args.packing,
        "gpus": args.gpus, "parallelism": args.parallelism, "cpu_offload": args.cpu_offload or None, "loss": args.loss,
        "load_whole_model": args.whole_model_load, "embedding_upcast": args.embedding_upcast,
        "fp32_embeddings": args.fp32_embeddings or None, "adamw_kernel": args.adamw_kernel,
        "max_completion_len": args.completion_len, "generation": "vllm" if args.vllm else None,
        "lora_targets": tuple(args.lora_targets.split(",")) if args.lora_targets else None,
    }  # fmt: skip
    return {k: v for k, v in given.items() if v is not None}


def cmd_estimate(args: argparse.Namespace) -> int:
    from ftkit.estimate.summary import estimate_report

    if bool(args.recipe) == bool(args.model):
        raise FtkitError.one(
            "give either --recipe NAME or --model NAME_OR_DIR", field="--recipe/--model",
            fix="ftkit estimate --recipe llama8b-qlora-dpo, or --model llama-3.1-8b --method qlora",
        )  # fmt: skip
    report = estimate_report(
        recipe=args.recipe, model=args.model, profile=args.profile, overrides=_estimate_overrides(args),
        tokens=args.tokens, rows=args.rows, avg_tokens=args.avg_tokens, gpu=args.gpu, tokenizer=args.tokenizer,
        token_sample=args.token_sample, nodes=args.nodes,
    )  # fmt: skip
    if args.json:
        print_json(report)
        return 0
    from ftkit.estimate.summary import print_report

    print_report(report, out, top=args.top)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "estimate",
        help="GPU memory (per term), training time and cost of a recipe or a setting, before it runs",
        description="Memory per GPU from the architecture's shapes: weights (NF4 with its block scales, bf16), "
        "adapter, gradients, optimizer states, activations per layer, logits, reference model, allocator and CUDA "
        "context. Time from FLOPs per token at an MFU per method (measured on one H200, applied to every GPU); cost "
        "from a built-in GPU price catalog "
        "(each price with the date it was read). Tokens: --tokens, --rows, or a recipe's local datasets counted with "
        "the base model's tokenizer (chat template applied, at the sequence length; docs/estimate.md). Works "
        "offline: models come from a built-in architecture catalog or a local dir with config.json.",
    )
    p.add_argument("--recipe", help="a recipe: every stage is estimated from its engine config")
    p.add_argument("--profile", default="full", help="recipe profile (default full)")
    p.add_argument("--model", help="a catalog name (llama-3.1-8b, qwen2.5-7b, ...), Hub id or local model dir")
    p.add_argument("--method", choices=["full", "lora", "qlora", "dora"])
    p.add_argument("--stage", choices=["sft", "dpo", "orpo", "kto", "reward", "grpo"])
    p.add_argument("--seq-len", type=int)
    p.add_argument("--micro-batch", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="gradient checkpointing on/off")  # fmt: skip
    p.add_argument("--attention", choices=["eager", "sdpa", "flash"])
    p.add_argument("--optimizer", choices=["adamw", "adamw_8bit", "paged_adamw_8bit", "adafactor", "sgd"])
    p.add_argument("--adamw-kernel", choices=["fused", "foreach"],
                   help="AdamW's step: fused (adamw_torch_fused, the default) or foreach (adamw_torch: the step "
                   "allocates a temporary the size of the second-moment states)")  # fmt: skip
    p.add_argument("--lora-rank", type=int)
    p.add_argument("--lora-targets", help="comma-separated module names (default: all linear layers)")
    p.add_argument("--packing", action=argparse.BooleanOptionalAction, default=None, help="sample packing")
    p.add_argument("--gpus", type=int, help="GPUs per node (default: the recipe's hardware.gpus, else 1)")
    p.add_argument("--nodes", type=int, metavar="N",
                   help="machines of --gpus GPUs each (default: the recipe profile's nodes, else 1): the states "
                   "shard over all their GPUs; time and cost count every one (assumed inter-node scaling)")  # fmt: skip
    p.add_argument("--parallelism", choices=["none", "ddp", "fsdp", "zero1", "zero2", "zero3"])
    p.add_argument("--cpu-offload", action="store_true", help="optimizer states (and sharded weights) on the CPU")
    p.add_argument("--whole-model-load", action=argparse.BooleanOptionalAction, default=None,
                   help="QLoRA under FSDP/ZeRO-3: every rank quantizes the whole model onto its GPU before sharding "
                   "(default: yes, as transformers loads 4-bit models; --no-whole-model-load for a loader that "
                   "quantizes unit by unit)")  # fmt: skip
    p.add_argument("--embedding-upcast", action=argparse.BooleanOptionalAction, default=None,
                   help="adapters on one GPU: embeddings, lm_head and norms upcast to fp32 while the model is prepared "
                   "(default: yes, as Axolotl and PEFT do; a peak before training)")  # fmt: skip
    p.add_argument("--fp32-embeddings", action="store_true",
                   help="full fine-tuning that trains embeddings, lm_head and norms in fp32 (Axolotl on one process "
                   "without flash attention; read from an Axolotl config)")  # fmt: skip
    p.add_argument(
        "--completion-len",
        type=int,
        help="GRPO: completion tokens per sequence (TRL's max_completion_length; default half of --seq-len)",
    )
    p.add_argument("--vllm", action="store_true",
                   help="GRPO: completions sampled by vLLM (its memory is not modelled) instead of the policy's "
                   "generate() on this GPU")  # fmt: skip
    p.add_argument("--loss", choices=["standard", "chunked", "fused"],
                   help="the SFT loss kernel: standard cross-entropy over fp32 logits (10 bytes a logit), "
                   "chunked (Axolotl chunked_cross_entropy: 4 bytes), fused (Cut Cross-Entropy / Liger: no logits "
                   "tensor)")  # fmt: skip
    p.add_argument("--tokens", type=float, help="tokens the run processes in all, every sequence counted (time, cost)")
    p.add_argument("--rows", type=int, help="dataset rows per epoch (with --avg-tokens; time and cost)")
    p.add_argument("--avg-tokens", type=int, help="tokens per row (default: the sequence length, an upper bound)")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="count a recipe's local datasets with this tokenizer (a local dir) instead of the base "
                   "model's (default: the base model's when on this machine, else a labelled stand-in)")  # fmt: skip
    p.add_argument("--token-sample", type=int, default=2000, metavar="N",
                   help="rows tokenized per dataset file at most, spread evenly and scaled by the exact row count "
                   "(default 2000; 0: every row)")  # fmt: skip
    p.add_argument("--gpu", help="only this GPU in the table (e.g. H100, A100-80GB, L4)")
    p.add_argument("--top", type=int, default=8, help="GPU rows to print (default 8)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_estimate)
