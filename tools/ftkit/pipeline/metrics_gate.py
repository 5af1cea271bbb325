"""Stage metrics from an engine's log history, and the gate against expected-metrics.yaml."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from ftkit.recipes.schema import Bound, ExpectedMetrics

# Counters of tokens processed that trainers log with their training records, and whether the trainer restores the
# counter from the checkpoint it resumes from: Axolotl's `tokens/total` does (tokens_state.json), TRL's `num_tokens`
# starts again at 0 in every training process.
TOKEN_COUNTERS: dict[str, bool] = {"tokens/total": True, "num_tokens": False}


def _tail(values: list[float]) -> float | None:
    if not values:
        return None
    n = max(1, len(values) // 4)
    return fmean(values[-n:])


def summarize(history: list[dict[str, float]]) -> dict[str, float | None]:
    """Reduce the logged records of one stage to the KNOWN_METRICS that the logs support."""
    train = [r for r in history if "loss" in r and "train_runtime" not in r and "eval_loss" not in r]
    losses = [r["loss"] for r in train if math.isfinite(r["loss"])]
    evals = [r["eval_loss"] for r in history if "eval_loss" in r]
    final = next((r for r in reversed(history) if "train_runtime" in r), {})
    acc = [r["rewards/accuracies"] for r in train if "rewards/accuracies" in r]
    margins = [r["rewards/margins"] for r in train if "rewards/margins" in r]
    accuracy = [r["accuracy"] for r in train if "accuracy" in r]
    eval_acc = [r["eval_accuracy"] for r in history if "eval_accuracy" in r]
    reward = [r["reward"] for r in train if "reward" in r and math.isfinite(r["reward"])]
    kl = [r["kl"] for r in train if "kl" in r and math.isfinite(r["kl"])]
    tokens = max((r.get("tokens/total", r.get("num_tokens", 0.0)) for r in history), default=0.0)
    runtime = final.get("train_runtime")
    cuda_peaks = [v for r in history for k, v in r.items() if k.startswith("memory/max_allocated")]
    out: dict[str, float | None] = {
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_min": min(losses) if losses else None,
        "train_loss_tail": _tail(losses),
        "train_loss_drop": losses[0] - _tail(losses) if losses else None,  # type: ignore[operator]
        "eval_loss": evals[-1] if evals else None,
        "rewards_accuracy_tail": _tail(acc),
        "rewards_margin_first": margins[0] if margins else None,
        "rewards_margin_tail": _tail(margins),
        "rewards_margin_delta": (_tail(margins) - margins[0]) if margins else None,  # type: ignore[operator]
        "accuracy_tail": _tail(accuracy),
        "eval_accuracy": eval_acc[-1] if eval_acc else None,
        "reward_first": reward[0] if reward else None,
        "reward_tail": _tail(reward),
        "reward_delta": (_tail(reward) - reward[0]) if reward else None,  # type: ignore[operator]
        "kl_tail": _tail(kl),
        "steps": float(len(train)),
        "tokens_per_second": tokens / runtime if runtime and tokens else None,
        "train_runtime_s": runtime,
        "cuda_peak_gib": max(cuda_peaks) if cuda_peaks and max(cuda_peaks) > 0 else None,
    }
    return out


def attempt_work(records: list[dict[str, float]], before: list[dict[str, float]]) -> dict[str, float | None]:
    """What one training attempt did: its trainer's training seconds (`train_runtime`) and the tokens it processed.
    `records` are those it logged; `before` those kept from earlier attempts (up to the checkpoint it resumed from),
    where a counter the trainer restores on resume continues from. None where the attempt did not log it (a crash
    before the trainer's summary, a model without a token counter)."""
    final = next((r for r in reversed(records) if "train_runtime" in r), {})
    tokens = None
    for key, restored in TOKEN_COUNTERS.items():
        seen = [r[key] for r in records if key in r]
        if seen:
            start = next((r[key] for r in reversed(before) if key in r), 0.0) if restored else 0.0
            tokens = max(seen) - start
            break
    return {"train_seconds": final.get("train_runtime"), "tokens": tokens}


def throughput(attempts: list[dict[str, Any]]) -> dict[str, float | None]:
    """A stage's `tokens_per_second` and `train_runtime_s` over all its attempts: the tokens every attempt processed
    over the training seconds of every attempt. A resumed stage thus reads what an uninterrupted one does (the time
    before the stop counts); steps done again after an older checkpoint count twice in both, as the machine did
    them twice. Attempts that logged no training seconds count in neither."""
    timed = [a for a in attempts if a.get("train_seconds")]
    seconds = sum(float(a["train_seconds"]) for a in timed)
    counted = [a for a in timed if a.get("tokens") is not None]
    tokens = sum(float(a["tokens"]) for a in counted)
    counted_seconds = sum(float(a["train_seconds"]) for a in counted)
    return {
        "tokens_per_second": tokens / counted_seconds if counted_seconds and tokens else None,
        "train_runtime_s": round(seconds, 4) if timed else None,
    }


@dataclass
class CheckRow:
    stage: str
    metric: str
    value: float | None
    bound: Bound
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "metric": self.metric,
            "value": self.value,
            "min": self.bound.min,
            "max": self.bound.max,
            "source": self.bound.source,
            "passed": self.passed,
            "reason": self.reason,
        }


def check_bound(value: float | None, bound: Bound) -> tuple[bool, str]:
    if value is None or not math.isfinite(value):
        return False, "not measured in this run"
    if bound.min is not None and value < bound.min:
        return False, f"{value:.4g} < min {bound.min:g}"
    if bound.max is not None and value > bound.max:
        return False, f"{value:.4g} > max {bound.max:g}"
    return True, "within bounds"


def check_metrics(stage_metrics: dict[str, dict[str, Any]], expected: ExpectedMetrics, profile: str) -> list[CheckRow]:
    """Compare a run's per-stage metrics with the bounds for its profile (no bounds: no rows)."""
    rows = []
    for stage, bounds in expected.profiles.get(profile, {}).items():
        values = stage_metrics.get(stage, {})
        for metric, bound in bounds.items():
            value = values.get(metric)
            passed, reason = check_bound(value, bound)
            if stage not in stage_metrics:
                passed, reason = False, f"stage '{stage}' did not run"
            rows.append(CheckRow(stage, metric, value, bound, passed, reason))
    return rows
