"""Evaluate a fine-tuned model directory with whatever checks are given; one JSON-serialisable report.

Sections: perplexity (held-out rows), generation (greedy answers + chat template), forgetting (base vs
tuned on general prompts), lm_eval (harness tasks). Each has `passed` and `seconds`; the top-level
`passed` is true when every section that ran passed. A failing lm-eval run is recorded as its section's
error (the other sections are kept). The generation check uses short-answer prompts by default
(DEFAULT_CHAT_PROMPTS): a general prompt asking for an essay would hit the length limit legitimately.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ftkit.envinfo import PACKAGES, hardware, versions
from ftkit.errors import FtkitError
from ftkit.evaluate.forgetting import forgetting_check
from ftkit.evaluate.generation import generation_check
from ftkit.evaluate.harness import run_lm_eval
from ftkit.evaluate.loading import load_model
from ftkit.evaluate.perplexity import perplexity
from ftkit.evaluate.prompts import DEFAULT_CHAT_PROMPTS, Prompt, as_prompts, load_prompts

StageProgress = Callable[[str, int, int], None]


def jsonable(value: Any) -> Any:
    """Dataclasses, paths and tuples to JSON types; non-finite floats to None (JSON has no inf/NaN)."""
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _timed(section: dict[str, Any], started: float) -> dict[str, Any]:
    return {**section, "seconds": round(time.monotonic() - started, 2)}


def _stage(progress: StageProgress | None, name: str) -> Callable[[int, int], None] | None:
    return (lambda done, total: progress(name, done, total)) if progress else None


def evaluate_model(
    model_dir: str | Path,
    *,
    heldout_rows: Sequence[Any] | None = None,
    fmt: str | None = None,
    base_model_dir: str | Path | None = None,
    general_prompts: str | Path | Sequence[Prompt | str] | None = None,
    generation_prompts: Sequence[Prompt | str] | None = None,
    lm_eval_tasks: Sequence[str] | None = None,
    lm_eval_limit: int | float | None = None,
    max_len: int = 2048,
    batch_size: int = 4,
    max_new_tokens: int = 128,
    forgetting_threshold: float = 0.05,
    max_perplexity: float | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    progress: StageProgress | None = None,
) -> dict[str, Any]:
    """Run the checks the arguments ask for on the model in `model_dir` and return the report."""
    started = time.monotonic()
    model, tokenizer = load_model(model_dir, device=device, dtype=dtype)
    prompts = load_prompts(general_prompts) if isinstance(general_prompts, str | Path) else general_prompts
    prompts = as_prompts(prompts) if prompts is not None else None
    report: dict[str, Any] = {
        "model_dir": str(model_dir),
        "base_model_dir": str(base_model_dir) if base_model_dir else None,
        "settings": {
            "fmt": fmt,
            "max_len": max_len,
            "batch_size": batch_size,
            "max_new_tokens": max_new_tokens,
            "forgetting_threshold": forgetting_threshold,
            "max_perplexity": max_perplexity,
            "device": device,
            "dtype": dtype,
        },
        "versions": versions((*PACKAGES, "lm_eval")),
        "hardware": hardware(),
    }
    if heldout_rows is not None:
        t = time.monotonic()
        result = perplexity(
            model, tokenizer, heldout_rows, fmt, max_len, batch_size=batch_size, progress=_stage(progress, "perplexity")
        )
        ok = result.perplexity is not None and math.isfinite(result.perplexity)
        ok = ok and (max_perplexity is None or result.perplexity <= max_perplexity)  # type: ignore[operator]
        report["perplexity"] = _timed({**result.to_dict(), "passed": ok}, t)

    t = time.monotonic()
    chat = generation_prompts or list(DEFAULT_CHAT_PROMPTS)
    report["generation"] = _timed(
        generation_check(model, tokenizer, chat, max_new_tokens, progress=_stage(progress, "generation")).to_dict(),
        t,
    )

    if base_model_dir is not None and prompts:
        t = time.monotonic()
        base, _ = load_model(base_model_dir, device=device, dtype=dtype)
        if base.get_input_embeddings().num_embeddings < len(tokenizer):
            raise FtkitError.one(
                f"the base model's vocabulary ({base.get_input_embeddings().num_embeddings}) is smaller than the "
                f"tuned tokenizer's ({len(tokenizer)}): they cannot score the same tokens",
                file=base_model_dir,
                fix="compare against the base the model was fine-tuned from",
            )
        result = forgetting_check(
            base,
            model,
            tokenizer,
            prompts,
            forgetting_threshold,
            max_len=max_len,
            batch_size=batch_size,
            progress=_stage(progress, "forgetting"),
        )
        report["forgetting"] = _timed(result.to_dict(), t)
        del base

    del model  # lm-eval loads its own copy
    if lm_eval_tasks:
        t = time.monotonic()
        try:
            section = {
                **run_lm_eval(model_dir, lm_eval_tasks, lm_eval_limit, batch_size, device=device),
                "passed": True,
            }
        except FtkitError as exc:
            section = {"tasks": list(lm_eval_tasks), "passed": False, "error": exc.to_dict()}
        report["lm_eval"] = _timed(section, t)

    sections = [report[k] for k in ("perplexity", "generation", "forgetting", "lm_eval") if k in report]
    report["passed"] = all(s["passed"] for s in sections)
    report["seconds"] = round(time.monotonic() - started, 2)
    return jsonable(report)


def write_eval(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report as JSON; a directory gets `eval.json` inside it. Returns the file written."""
    out = Path(path)
    if out.is_dir():
        out = out / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(jsonable(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return out
