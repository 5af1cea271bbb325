"""The end of `recipe run`: after the last stage is merged (and verified), write the GGUF and AWQ/GPTQ
exports the recipe's `export:` section asks for, evaluate the model, and write the model card.

`preflight_exports` runs before any training, so a run never trains for hours and then finds that its
exports cannot be made here (K-quants without llama.cpp, AWQ without a GPU, a held-out file that leaks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftkit.errors import ExitCode, FtkitError, Problem
from ftkit.recipes.load import LoadedRecipe
from ftkit.recipes.schema import Export

BUILTIN_PROMPTS = {
    "builtin:mt-bench": Path(__file__).resolve().parents[1] / "evaluate" / "data" / "mt-bench-questions.jsonl"
}


def general_prompts_path(loaded: LoadedRecipe, ref: str | None) -> Path | None:
    if ref is None:
        return None
    return BUILTIN_PROMPTS.get(ref) or loaded.dir / ref


def preflight_exports(loaded: LoadedRecipe, plan: Export, train_files: list[str], cuda: bool) -> list[Problem]:
    """What would make the exports or the evaluation fail, found before training."""
    from ftkit.export.gguf import PYTHON_QUANTS, find_llama_cpp

    where = str(loaded.source.path)
    problems: list[Problem] = []
    for quant in plan.gguf:
        if quant not in PYTHON_QUANTS and find_llama_cpp() is None:
            problems.append(Problem(
                f"GGUF {quant} needs llama.cpp (llama-quantize), which this machine lacks; without it only "
                f"{', '.join(PYTHON_QUANTS)} can be written", where, None, "export.gguf",
                "run in the recipe's container, or set export.gguf to f16/q8_0 in this profile"))  # fmt: skip
    if plan.quantize and not cuda:
        problems.append(Problem(
            f"{'/'.join(q.upper() for q in plan.quantize)} calibration needs a CUDA GPU", where, None,
            "export.quantize", "run on a GPU, or leave export.quantize empty in this profile"))  # fmt: skip
    if plan.calibration and not (loaded.dir / plan.calibration).is_file():
        problems.append(Problem("calibration file not found", str(loaded.dir / plan.calibration), None,
                                "export.calibration", "name a JSONL in the recipe folder"))  # fmt: skip
    if plan.eval is None:
        return problems
    prompts = general_prompts_path(loaded, plan.eval.general_prompts)
    if prompts is not None and not prompts.is_file():
        problems.append(Problem("general prompt set not found", str(prompts), None, "export.eval.general_prompts",
                                "use builtin:mt-bench, a JSONL path in the recipe folder, or null"))  # fmt: skip
    if plan.eval.heldout:
        problems += _heldout_problems(loaded.dir / plan.eval.heldout, train_files)
    return problems


HELDOUT_FIELD = "export.eval.heldout"


def _heldout_problems(heldout: Path, train_files: list[str]) -> list[Problem]:
    from ftkit.data.split import leak_problems

    if not heldout.is_file():
        return [Problem("held-out file not found", str(heldout), None, HELDOUT_FIELD,
                        "name a JSONL of rows never trained on (ftkit data split makes one)")]  # fmt: skip
    problems = []
    for train in train_files:
        if not Path(train).is_file():
            continue  # a hub dataset: nothing local to compare
        problems += leak_problems(train, heldout, field=HELDOUT_FIELD, fix=(
            f"held-out rows must never be trained on: remove them from {heldout.name} (`ftkit data leakage {train} "
            f"{heldout}` lists them all); for a fork of your own data, `ftkit recipe new NAME --from SOURCE "
            "--dataset STAGE=TRAIN --heldout STAGE=HELDOUT` (or no --heldout: it splits held-out rows off TRAIN); "
            "or make both files with `ftkit data split`"))  # fmt: skip
    return problems


def require_exports_possible(problems: list[Problem]) -> None:
    """Refuse before training: leaking or missing held-out rows are a data problem (exit 3), anything else is
    what this machine cannot make (exit 5)."""
    data = [p for p in problems if p.field == HELDOUT_FIELD]
    if data:
        raise FtkitError("the held-out rows the evaluation scores are not usable; training did not start", data,
                         ExitCode.DATA_INVALID)  # fmt: skip
    if problems:
        raise FtkitError("the recipe's exports cannot be made here; training did not start", problems,
                         ExitCode.ENVIRONMENT)  # fmt: skip


def _read_rows(path: Path) -> list[Any]:
    from ftkit.data.readers import iter_records

    return [r.row for r in iter_records(path) if r.error is None]


def run_exports(
    loaded: LoadedRecipe,
    plan: Export,
    run_dir: Path,
    merged: Path,
    root_base: str,
    events: Any,
    sequence_len: int | None = None,
) -> dict[str, Any]:
    """GGUF + AWQ/GPTQ exports and the evaluation of the last stage's merged model (`merged`); returns the run
    record's `export`."""
    export_dir = run_dir / "export"
    artifacts: list[dict[str, Any]] = []
    for quant in plan.gguf:
        artifacts.append(_gguf(merged, export_dir / f"{loaded.name}.{quant}.gguf", quant, events))
    for method in plan.quantize:
        artifacts.append(_quantized(loaded, plan, merged, export_dir / f"{loaded.name}-{method}", method, events))
    result: dict[str, Any] = {"model_dir": str(merged), "artifacts": artifacts}
    if plan.eval is not None:
        result["eval"] = _evaluate(loaded, plan, merged, root_base, run_dir, events, sequence_len)
    return result


def _gguf(merged: Path, path: Path, quant: str, events: Any) -> dict[str, Any]:
    from dataclasses import asdict

    from ftkit.export.gguf import describe_gguf_check, export_gguf, verify_gguf

    events.stage_start(f"gguf-{quant}", f"{merged.name} -> {path.name}")
    written = export_gguf(merged, path, quant)
    check = asdict(verify_gguf(merged, path))
    events.message(f"gguf: {path.name} ({written.size_bytes / 2**20:.1f} MiB, {written.backend}); "
                   f"{describe_gguf_check(check)}")  # fmt: skip
    return {"format": "gguf", "quant": quant, "path": str(path), "file": path.name, "size_bytes": written.size_bytes,
            "backend": written.backend, "seconds": written.seconds, "check": check,
            "passed": bool(check["passed"])}  # fmt: skip


def _quantized(loaded: LoadedRecipe, plan: Export, merged: Path, out: Path, method: str, events: Any) -> dict[str, Any]:
    from ftkit.export.quantize import check_quantize_inputs, quantize_model

    calibration = loaded.dir / (plan.calibration or loaded.recipe.stages[-1].sample)
    events.stage_start(f"{method}", f"{merged.name} -> {out.name} (W4A16, llm-compressor)")
    q_plan = check_quantize_inputs(merged, out, method, "W4A16", calibration, 256, 2048)
    done = quantize_model(q_plan)
    return {"format": "compressed-tensors", "quant": method, "path": str(out), "file": out.name,
            "seconds": done["seconds"], "passed": True}  # fmt: skip


def _evaluate(
    loaded: LoadedRecipe, plan: Export, merged: Path, root_base: str, run_dir: Path, events: Any,
    sequence_len: int | None,
) -> dict[str, Any]:  # fmt: skip
    from ftkit.evaluate import evaluate_model, write_eval

    assert plan.eval is not None
    ev = plan.eval
    heldout = _read_rows(loaded.dir / ev.heldout)[: ev.max_rows] if ev.heldout else None
    events.stage_start("eval", f"{merged.name}: held-out, generation, forgetting vs the base")
    report = evaluate_model(
        merged,
        heldout_rows=heldout,
        base_model_dir=root_base,
        general_prompts=general_prompts_path(loaded, ev.general_prompts),
        lm_eval_tasks=ev.lm_eval_tasks or None,
        max_len=sequence_len or 2048,
        max_new_tokens=ev.max_new_tokens,
        forgetting_threshold=ev.forgetting_threshold,
        progress=lambda stage, done, total: events.progress("eval", done, total),
    )
    report["heldout_file"] = ev.heldout
    write_eval(report, run_dir / "eval.json")
    events.message(eval_summary(report))
    return report


def eval_summary(report: dict[str, Any]) -> str:
    parts = []
    if "perplexity" in report:
        p = report["perplexity"]
        parts.append(f"held-out perplexity {p.get('perplexity', float('nan')):.3g} on {p.get('rows_scored')} rows")
    if "generation" in report:
        g = report["generation"]
        parts.append(f"generation {'passed' if g.get('passed') else 'FAILED'}")
    if "forgetting" in report and report["forgetting"].get("overall"):
        f = report["forgetting"]["overall"]
        parts.append(f"general-text perplexity {f['base_perplexity']:.3g} -> {f['tuned_perplexity']:.3g} "
                     f"({f['relative_change']:+.1%}{', FORGETTING' if f['forgetting'] else ''})")  # fmt: skip
    return "eval: " + "; ".join(parts) + f" ({'passed' if report.get('passed') else 'FAILED'})"


def card_for_run_dir(run_dir: Path, out_dir: Path, merge: dict[str, Any] | None) -> Path:
    """The model card of a finished run, for a model merged from it later (`ftkit export merge RUN_DIR`)."""
    from ftkit.engines import get_engine
    from ftkit.recipes.load import load_recipe
    from ftkit.yaml_load import load_yaml

    metrics = json.loads((run_dir / "metrics.json").read_text())
    loaded = load_recipe(metrics["recipe_dir"], check_profiles=False)
    configs = {s: load_yaml(run_dir / "resolved" / f"{s}.yaml").data for s in metrics.get("stages", {})
               if (run_dir / "resolved" / f"{s}.yaml").is_file()}  # fmt: skip
    return write_card(loaded, metrics, get_engine(metrics["engine"]), configs, metrics.get("export"),
                      out_dir=out_dir, merge=merge)  # fmt: skip


def write_card(
    loaded: LoadedRecipe, metrics: dict[str, Any], engine: Any, resolved_configs: dict[str, dict[str, Any]],
    export: dict[str, Any] | None, *, out_dir: Path | None = None, merge: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """README.md with front matter in the final merged model's dir (or `out_dir`)."""
    from ftkit.engines.facts import method_of
    from ftkit.export.model_card import card_facts_from_run, render_model_card
    from ftkit.models import BUILTIN_MODELS

    last = loaded.recipe.stages[-1].name
    merged = out_dir or Path(metrics["stages"][last]["merged_dir"])
    first_base = Path(str(metrics["stages"][loaded.recipe.stages[0].name]["base_model"])).name
    builtin = BUILTIN_MODELS.get(first_base)
    license_id = builtin.license.lower() if builtin else loaded.recipe.license
    datasets = []
    for cfg in resolved_configs.values():
        for path in engine.dataset_paths(cfg):
            p = Path(path)
            datasets.append(str(p.relative_to(loaded.dir)) if p.is_relative_to(loaded.dir) else str(path))
    methods = {name: method_of(engine.engine_facts(cfg)) for name, cfg in resolved_configs.items()}
    facts = card_facts_from_run(
        metrics, license_id=license_id, container=loaded.recipe.container.model_dump(), datasets=datasets,
        methods=methods, merge=merge or metrics["stages"][last].get("merge"), evaluation=(export or {}).get("eval"),
        exports=(export or {}).get("artifacts"),
    )  # fmt: skip
    path = merged / "README.md"
    path.write_text(render_model_card(facts))
    return path


def export_passed(export: dict[str, Any], plan: Export) -> tuple[bool, list[str]]:
    """Whether every export check passed, and what failed (GGUF load-back, evaluation when gated)."""
    failed = [f"{a['file']}: {a.get('check', {}).get('reason', 'check failed')}" for a in export.get("artifacts", [])
              if not a.get("passed")]  # fmt: skip
    ev = export.get("eval")
    if ev is not None and plan.eval is not None and plan.eval.gate and not ev.get("passed"):
        failed.append("eval: " + ", ".join(k for k in ("perplexity", "generation", "forgetting", "lm_eval")
                                           if k in ev and not ev[k].get("passed")))  # fmt: skip
    return not failed, failed


def dump(export: dict[str, Any]) -> str:
    return json.dumps(export, indent=2, default=str)
