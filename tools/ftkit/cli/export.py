"""`ftkit export …`, `ftkit eval`, `ftkit serve-cmd` and `ftkit serve`: parse, call the library, print (or --json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ftkit.cli.console import consoles, print_json, say
from ftkit.errors import ExitCode, FtkitError

# ------------------------------------------------------------------ export merge


def cmd_export_merge(args: argparse.Namespace) -> int:
    from ftkit.export.merge import (
        final_dtype,
        merge_source,
        require_merged,
        resolve_merge_source,
        write_provenance,
    )
    from ftkit.export.verify_merge import describe_merge_check, verify_merge, verify_resaved

    console, out = consoles()
    source = resolve_merge_source(Path(args.source), base=args.base, stage=args.stage)
    args.dtype = final_dtype(args.dtype, source.adapter_dir, source.full)
    doing = f"re-saving the fully trained {source.adapter_dir}" if source.full else (
        f"merging {source.adapter_dir} into {source.base}")  # fmt: skip
    with console.status(f"{doing} ({args.dtype})", spinner="dots"):
        result = merge_source(source, Path(args.out), args.dtype, args.max_shard_size)
    if not args.no_verify:
        against = "the trained checkpoint" if source.full else "base + adapter"
        with console.status(f"verifying: logits vs {against}", spinner="dots"):
            if source.full:
                result.check = verify_resaved(source.adapter_dir, result.out_dir, args.dtype, tolerance=args.tolerance)
            else:
                result.check = verify_merge(source.base, source.adapter_dir, result.out_dir, args.dtype,
                                            tolerance=args.tolerance)  # fmt: skip
        write_provenance(result)
    if source.run_dir is not None and source.metrics is not None:
        _card_for_merge(source, result)
    if args.json:
        print_json(result.to_dict())
    else:
        what = (
            f"saved the fully trained {source.adapter_dir} ({args.dtype}, no adapter to merge)"
            if source.full
            else f"merged {source.adapter_dir} into {source.base} ({args.dtype}"
            f"{', base loaded unquantized: the adapter was trained on 4-bit' if source.trained_on_4bit else ''})"
        )
        say(out, f"{what} -> {result.out_dir} ({len(result.shards)} shard(s), {result.parameters:,} parameters, "
            f"{result.seconds:.1f} s)")  # fmt: skip
        if result.check:
            say(out, f"verify: {describe_merge_check(result.check)}", style="" if result.check["passed"] else "red")
    require_merged(result)
    return 0


def _card_for_merge(source: Any, result: Any) -> None:
    """A merge from a run dir gets the model card of that run."""
    from ftkit.pipeline.export_stage import card_for_run_dir

    card_for_run_dir(source.run_dir, result.out_dir, result.to_dict())


# ------------------------------------------------------------------ export gguf


def cmd_export_gguf(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ftkit.export.gguf import describe_gguf_check, export_gguf, verify_gguf

    console, out = consoles()
    model_dir = Path(args.model_dir)
    path = Path(args.out) if args.out else model_dir / f"{model_dir.name}.{args.quant}.gguf"
    with console.status(f"writing {path.name}", spinner="dots"):
        written = export_gguf(model_dir, path, args.quant, backend=args.backend)
    result: dict[str, Any] = {**asdict(written), "path": str(written.path)}
    code = 0
    if not args.no_verify:
        with console.status("verifying: loading the GGUF back with transformers", spinner="dots"):
            check = asdict(verify_gguf(model_dir, path, tolerance=args.tolerance))
        result["check"] = check
        code = 0 if check["passed"] else int(ExitCode.METRICS_FAILED)
    if args.json:
        print_json(result)
    else:
        say(out, f"{path} ({written.size_bytes / 2**20:.1f} MiB, {written.quant}, {written.backend}, "
            f"{written.seconds:.1f} s)")  # fmt: skip
        if "check" in result:
            passed = result["check"]["passed"]
            say(out, f"verify: {describe_gguf_check(result['check'])}", style="" if passed else "red")
    return code


# ------------------------------------------------------------------ export quantize


def cmd_export_quantize(args: argparse.Namespace) -> int:
    from ftkit.export.quantize import check_quantize_inputs, quantize_model

    console, out = consoles()
    model_dir = Path(args.model_dir)
    out_dir = Path(args.out) if args.out else model_dir.with_name(f"{model_dir.name}-{args.method}")
    plan = check_quantize_inputs(model_dir, out_dir, args.method, args.scheme, Path(args.calibration),
                                 args.samples, args.max_len)  # fmt: skip
    with console.status(f"{args.method.upper()} {args.scheme} on {plan.rows_available} calibration rows"):
        result = quantize_model(plan)
    print_json(result) if args.json else say(out, f"{out_dir} ({result['seconds']} s)")
    return 0


# ------------------------------------------------------------------ export mergekit


def cmd_export_mergekit(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ftkit.export.model_merge import merge_models

    console, out = consoles()
    with console.status(f"mergekit: {args.config}", spinner="dots"):
        result = merge_models(Path(args.config), Path(args.out))
    data = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}
    if args.json:
        print_json(data)
    else:
        say(out, ", ".join(f"{k}: {v}" for k, v in data.items()))
    return 0


# ------------------------------------------------------------------ eval


def cmd_eval(args: argparse.Namespace) -> int:
    from ftkit.data.readers import iter_records
    from ftkit.evaluate import evaluate_model, write_eval
    from ftkit.pipeline.export_stage import BUILTIN_PROMPTS, eval_summary

    console, out = consoles()
    target = Path(args.target)
    model_dir, base, run_metrics = target, args.base, None
    if (target / "metrics.json").is_file():
        run_metrics = json.loads((target / "metrics.json").read_text())
        stages = run_metrics.get("stages") or {}
        last = stages[list(stages)[-1]] if stages else {}
        if not last.get("merged_dir"):
            fix = "merge first: ftkit export merge RUN_DIR --out DIR, then ftkit eval DIR"
            raise FtkitError.one("the run's last stage has no merged model", file=target / "metrics.json", fix=fix)
        model_dir = Path(last["merged_dir"])
        first = stages[next(iter(stages))]
        base = base or first.get("base_model")
    heldout = None
    if args.heldout:
        heldout = [r.row for r in iter_records(args.heldout) if r.error is None][: args.max_rows]
    prompts: Any = None
    if args.general_prompts != "none":
        prompts = BUILTIN_PROMPTS.get(args.general_prompts) or Path(args.general_prompts)
    with console.status(f"evaluating {model_dir}", spinner="dots"):
        report = evaluate_model(
            model_dir, heldout_rows=heldout, base_model_dir=base, general_prompts=prompts if base else None,
            lm_eval_tasks=args.tasks or None, lm_eval_limit=args.limit, max_len=args.max_len,
            max_new_tokens=args.max_new_tokens, forgetting_threshold=args.forgetting_threshold,
        )  # fmt: skip
    path = write_eval(report, Path(args.out) if args.out else (target if run_metrics else model_dir) / "eval.json")
    if run_metrics is not None:
        run_metrics.setdefault("export", {})["eval"] = report
        (target / "metrics.json").write_text(json.dumps(run_metrics, indent=2, default=str))
    if args.json:
        print_json(report)
    else:
        say(out, eval_summary(report))
        say(out, f"report: {path}")
    return 0 if report.get("passed") else int(ExitCode.METRICS_FAILED)


# ------------------------------------------------------------------ serve-cmd


def cmd_serve(args: argparse.Namespace) -> int:
    from ftkit.export.serve import serve_commands, serve_commands_text, serve_target

    _, out = consoles()
    cmds = serve_commands(serve_target(Path(args.target), stage=args.stage), port=args.port)
    if args.json:
        print_json(cmds)
        return 0
    if not cmds:
        say(out, "nothing to serve: no merged model, adapter or GGUF found")
        return int(ExitCode.USAGE)
    say(out, serve_commands_text(cmds))  # never wrapped: long paths stay whole and copy-pastable
    return 0


# ------------------------------------------------------------------ serve


def cmd_serve_local(args: argparse.Namespace) -> int:
    from ftkit.export.serve_local import check_port_free, check_serve_packages, run_server, serve_plan

    console, out = consoles()
    plan = serve_plan(Path(args.target), host=args.host, port=args.port, stage=args.stage, device=args.device)
    check_serve_packages()
    check_port_free(plan.host, plan.port)
    say(console, f"starting transformers serve for {plan.model_dir} ({plan.source}) on {plan.url} ...")

    def ready(plan: Any, pid: int, seconds: float) -> None:  # stdout: the URL, model name and curl line, whole
        say(out, f"ready in {seconds:.1f} s (server pid {pid}); Ctrl-C or SIGTERM stops it")
        say(out, f"url:        {plan.url}  (OpenAI base URL: {plan.url}/v1)")
        say(out, f"model name: {plan.model_name}")
        if not plan.loopback_only:
            say(out, f"warning: listening on {plan.host}, beyond this machine, without authentication", style="red")
        if not plan.has_chat_template:
            say(out, "warning: the tokenizer has no chat template: /v1/chat/completions fails; use /v1/completions")
        say(out, f"try it:\n{plan.curl_example()}")

    outcome = run_server(plan, ready, ready_timeout=args.ready_timeout)
    if outcome.stopped_by:
        how = "it shut down cleanly" if outcome.clean else (
            "killed after it ignored SIGTERM" if outcome.killed else f"exit code {outcome.returncode}")  # fmt: skip
        say(console, f"stopped on {outcome.stopped_by}: {how}")
        return 0
    say(console, f"the server exited on its own with code {outcome.returncode} (its log is above)", style="red")
    return int(ExitCode.ENGINE_FAILED)


# ------------------------------------------------------------------ parser


def register(sub: Any) -> None:
    export = sub.add_parser("export", help="merge adapters, write GGUF/AWQ/GPTQ, merge several models (mergekit)")
    esub = export.add_subparsers(dest="export_command", required=True)

    p = esub.add_parser(
        "merge",
        help="merge a LoRA/DoRA adapter into its base in bf16, verify it, write the model card",
        description="SOURCE is a run dir of `ftkit recipe run` (its last stage, or --stage) or an adapter dir. The "
        "base is loaded unquantized even when the adapter was trained on a 4-bit base (merging into 4-bit weights "
        "is lossy). The merged model's logits are compared with base + adapter; exit 1 above the tolerance.",
    )
    p.add_argument("source", help="RUN_DIR or ADAPTER_DIR")
    p.add_argument("--out", required=True, help="the merged model's dir")
    p.add_argument("--base", help="the base model (default: the run's or adapter_config.json's)")
    p.add_argument("--stage", help="which stage of a run (default: the last)")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                   help="the merged weights' dtype (default: bfloat16; float32 for a reward model's adapter, whose "
                   "small deltas bf16 rounds away)")  # fmt: skip
    p.add_argument("--max-shard-size", default="5GB", help="safetensors shard size (default 5GB)")
    p.add_argument("--tolerance", type=float, help="max |logit diff| allowed (default: per dtype)")
    p.add_argument("--no-verify", action="store_true", help="skip the logits comparison")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export_merge)

    p = esub.add_parser(
        "gguf",
        help="write a GGUF for llama.cpp/Ollama and check it loads back with matching logits",
        description="With llama.cpp (LLAMA_CPP_DIR, or in the containers): its converter and llama-quantize, any "
        "quant. Without it: a pure-Python writer (gguf package) for Llama-family models, f32/f16/bf16/q8_0.",
    )
    p.add_argument("model_dir", help="a merged model dir (config.json + safetensors + tokenizer)")
    p.add_argument("--quant", default="f16", help="f16 (default), bf16, f32, q8_0, q4_k_m, q5_k_m, q6_k, …")
    p.add_argument("--out", help="the .gguf file (default MODEL_DIR/<name>.<quant>.gguf)")
    p.add_argument("--backend", default="auto", choices=["auto", "llama.cpp", "python"])
    p.add_argument("--tolerance", type=float, help="max |logit diff| allowed (default: per quant)")
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export_gguf)

    p = esub.add_parser(
        "quantize",
        help="AWQ or GPTQ 4-bit (compressed-tensors, for vLLM) via llm-compressor; needs a CUDA GPU",
        description="Checks the model dir and calibration rows anywhere; refuses (exit 5) without a GPU.",
    )
    p.add_argument("model_dir")
    p.add_argument("--method", default="awq", choices=["awq", "gptq"])
    p.add_argument("--scheme", default="W4A16")
    p.add_argument("--calibration", required=True, help="JSONL rows like the training data")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--max-len", type=int, default=2048)
    p.add_argument("--out")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export_quantize)

    p = esub.add_parser(
        "mergekit",
        help="merge several fine-tuned models (linear, SLERP, TIES, DARE) from a mergekit YAML",
        description="Model paths in the YAML are relative to its folder; nothing is downloaded.",
    )
    p.add_argument("config", help="a mergekit YAML (see tools/ftkit/export/examples/ties.mergekit.yaml)")
    p.add_argument("--out", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export_mergekit)

    p = sub.add_parser(
        "eval",
        help="held-out perplexity, generation check, forgetting vs the base, lm-eval tasks -> eval.json",
        description="TARGET is a run dir (its final merged model; the base is the run's first base model; eval.json "
        "is added to metrics.json) or a model dir (--base for the forgetting check). Exit 1 when a check fails.",
    )
    p.add_argument("target", help="RUN_DIR or MODEL_DIR")
    p.add_argument("--base", help="the base model, for the forgetting check")
    p.add_argument("--heldout", help="JSONL rows never trained on (perplexity; chosen-rejected margin for pairs)")
    p.add_argument("--max-rows", type=int, default=200)
    p.add_argument("--general-prompts", default="builtin:mt-bench",
                   help="builtin:mt-bench (default), a JSONL, or none")  # fmt: skip
    p.add_argument("--forgetting-threshold", type=float, default=0.05)
    p.add_argument("--tasks", action="append", help="lm-evaluation-harness task (repeat; needs its dataset)")
    p.add_argument("--limit", type=float, help="lm-eval examples per task")
    p.add_argument("--max-len", type=int, default=2048)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--out", help="where eval.json goes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("serve-cmd", help="print commands that serve a run's model: vLLM, TGI, llama.cpp, Ollama")
    p.add_argument("target", help="RUN_DIR, a model dir or an adapter dir")
    p.add_argument("--stage", help="which stage of a run (default: the last)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "serve",
        help="serve a run's merged model here: an OpenAI-compatible API (transformers serve), CPU or GPU",
        description="TARGET is a run dir (the merged model of its last stage, or --stage) or a merged model dir. "
        "Starts `transformers serve` pinned to that model, waits until it answers, then prints the URL, the model "
        "name requests send, and a curl example; Ctrl-C or SIGTERM stops it. Endpoints: /v1/chat/completions, "
        "/v1/completions, /health. Nothing is downloaded (the hub is offline for the server); no authentication: "
        "it listens on 127.0.0.1 unless --host says otherwise. Needs transformers' serving extra (fastapi, uvicorn, "
        "openai). For production serving (vLLM, TGI, llama.cpp) see `ftkit serve-cmd`.",
    )
    p.add_argument("target", help="RUN_DIR or a merged model dir (config.json + safetensors + tokenizer)")
    p.add_argument("--stage", help="which stage of a run (default: the last)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="listen port (default 8000)")
    p.add_argument("--device", default="auto", help="auto (default: a GPU if there is one), cpu, cuda:0, …")
    p.add_argument("--ready-timeout", type=float, default=300.0,
                   help="seconds to wait for the model to load before giving up (default 300)")  # fmt: skip
    p.set_defaults(func=cmd_serve_local)
