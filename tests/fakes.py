"""Fakes shared by the tests (their fixtures are in conftest.py): `FakeEngine`, an engine that trains nothing
and logs a falling loss (fast), `fake_merges` (merge and model card stand-ins), and helpers that run the fixture
recipe `RECIPE` with them. A run through them still loads the tiny Llama's tokenizer (the data checks): `model`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from ftkit.cli import main
from ftkit.engines.base import ProcessResult, StageContext
from ftkit.engines.trl import TrlEngine
from ftkit.errors import ExitCode
from ftkit.pipeline.resume import checkpoint_step

RECIPE = "tiny-trl-sft-dpo"


TOKENS_PER_STEP = 100
SECONDS_PER_STEP = 0.5
START_SECONDS = 1.0  # each attempt's trainer time before its first step (the fake's train_runtime includes it)


class FakeEngine(TrlEngine):
    """Logs a falling loss (and, for DPO, a rising margin) per step; at `stop_at[stage]` it saves a checkpoint and
    exits as a SIGTERM'd training process does (code 6); `on_train` runs first (e.g. to send a signal).

    Each attempt logs its trainer's `train_runtime` (START_SECONDS + SECONDS_PER_STEP per step it trained). With
    `token_key` it logs a token counter as the engines do: `num_tokens` (TRL) counts from 0 in each process,
    `tokens/total` (Axolotl) goes on from the checkpoint's count. With `eval_every` it logs an evaluation every that
    many steps and, as Axolotl does, one when each process starts."""

    def __init__(self) -> None:
        self.stop_at: dict[str, int] = {}
        self.calls: list[tuple[str, int]] = []  # (stage, step it started from)
        self.on_train: Callable[[str], None] | None = None
        self.token_key: str | None = None
        self.eval_every = 0
        self.merged: list[str] = []  # stages fake_merges merged (set by the fake_engine fixture)
        self.recipe_dir = Path()  # the fixture recipe's folder (set by the fake_engine fixture)

    def train(
        self, config_path: Path, ctx: StageContext, on_progress: Any = None, append_log: bool = False
    ) -> ProcessResult:
        cfg = yaml.safe_load(config_path.read_text())
        resume = cfg["trainer"].get("resume_from_checkpoint")
        start = checkpoint_step(Path(resume)) if resume else 0
        self.calls.append((ctx.stage, start))
        if self.on_train:
            self.on_train(ctx.stage)
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        with ctx.log_path.open("a" if append_log else "w") as log:
            log.write(f"fake {ctx.stage} from {start}\n")

        def runtime(step: int) -> float:
            return START_SECONDS + SECONDS_PER_STEP * (step - start)

        with ctx.history_path.open("a") as fh:
            if self.eval_every:
                fh.write(json.dumps({"step": start, "eval_loss": 2.0, "eval_runtime": 0.1}) + "\n")
            for step in range(start + 1, int(cfg["trainer"]["max_steps"]) + 1):
                record = {"step": step, "loss": 3.0 / step, "rewards/margins": 0.1 * step, "rewards/accuracies": 1.0}
                if self.token_key:
                    counted = step if self.token_key == "tokens/total" else step - start
                    record[self.token_key] = TOKENS_PER_STEP * counted
                fh.write(json.dumps(record) + "\n")
                if self.eval_every and step % self.eval_every == 0:
                    fh.write(json.dumps({"step": step, "eval_loss": 2.0 / step, "eval_runtime": 0.1}) + "\n")
                if step == self.stop_at.get(ctx.stage):
                    ckpt = ctx.output_dir / f"checkpoint-{step}"
                    ckpt.mkdir()
                    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
                    fh.write(json.dumps({"step": step, "train_runtime": runtime(step)}) + "\n")
                    return ProcessResult(int(ExitCode.INTERRUPTED), 2**20, 0.5, signal="SIGTERM")
            fh.write(json.dumps({"step": step, "train_runtime": runtime(step)}) + "\n")
        (ctx.output_dir / "adapter_config.json").write_text("{}")
        return ProcessResult(0, 2**20, 1.0)


def fake_merges(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace merge (and the model card) with a stand-in that writes a config.json; returns the merged stages."""
    merged: list[str] = []

    def merge(engine: Any, resolved: Any, ctx: StageContext, name: str, plan: Any, summary: dict, events: Any) -> Path:
        out = ctx.stage_dir / "merged"
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_text("weights")
        summary["merged_dir"] = str(out)
        merged.append(name)
        return out

    monkeypatch.setattr("ftkit.pipeline.run._merge_stage", merge)
    monkeypatch.setattr("ftkit.pipeline.run.write_card", lambda loaded, metrics, *a, **k: Path("README.md"))
    return merged


def run(runs: Path, *extra: str) -> int:
    return main(["recipe", "run", RECIPE, "--runs-dir", str(runs), *extra])


def only(runs: Path) -> Path:
    [d] = (runs / RECIPE).iterdir()
    return d


def metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())
