"""The fork journey of docs/fork-a-recipe.md, step by step as a new user walks it: a ShareGPT export becomes
checked, PII-masked, deduplicated and split chat rows, the fork of llama8b-qlora-sft trains on them (smoke
profile, SmolLM2 on CPU, a few steps) and the run's model gets serving commands. Each step's outcome is asserted."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import ROOT, copy_recipe
from ftkit.cli import main

SRC = "llama8b-qlora-sft"


def sharegpt_export(path: Path, n: int = 80) -> Path:
    """A FastChat-style export: `conversations` of human/gpt turns; one leaks an email, one is a duplicate."""
    rng = random.Random(7)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5)) for _ in range(500)]  # short rows
    say = lambda k: " ".join(rng.choice(vocab) for _ in range(k))  # noqa: E731
    rows = [{"id": f"t{i}", "conversations": [{"from": "human", "value": say(12) + "?"},
                                              {"from": "gpt", "value": say(24) + "."}]} for i in range(n)]  # fmt: skip
    rows[3]["conversations"][1]["value"] += " Write to jane.doe@example.com for a refund."
    rows.append(dict(rows[10], id="t10-again"))
    path.write_text(json.dumps(rows, indent=1))
    return path


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.recipe_smoke  # a minute on 2 cores (SmolLM2, 2 steps, merge, GGUF, evaluation): `make smoke-fork`
def test_the_fork_journey_from_a_sharegpt_export_to_serving_commands(
    recipes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("FTKIT_CACHE", str(ROOT / ".cache"))
    copy_recipe(SRC, recipes_root)
    schema = recipes_root / SRC / "sft.schema.json"
    monkeypatch.chdir(tmp_path)
    export = sharegpt_export(tmp_path / "support.sharegpt.json")

    assert main(["data", "convert", str(export), "chats.jsonl", "--to", "messages"]) == 0  # 1. convert
    assert len(rows(tmp_path / "chats.jsonl")) == 81
    assert main(["data", "validate", "chats.jsonl", "--schema", str(schema)]) == 0  # 2. validate
    assert main(["pii", "clean", "chats.jsonl", "clean.jsonl", "--mode", "mask"]) == 0  # 3. clean
    cleaned = (tmp_path / "clean.jsonl").read_text()
    assert "jane.doe@example.com" not in cleaned and "[EMAIL_1]" in cleaned
    assert main(["data", "dedup", "clean.jsonl", "dedup.jsonl"]) == 0  # 4. dedup
    assert len(rows(tmp_path / "dedup.jsonl")) == 80 and len(rows(tmp_path / "dedup.jsonl.dropped.jsonl")) == 1
    assert main(["data", "split", "dedup.jsonl", "--val", "0.1"]) == 0  # 5. split
    train, val = tmp_path / "dedup.train.jsonl", tmp_path / "dedup.val.jsonl"
    assert (len(rows(train)), len(rows(val))) == (72, 8)
    capsys.readouterr()

    code = main(["recipe", "new", "support-bot", "--from", SRC, "--dataset", f"sft={train}",  # 6. fork
                 "--heldout", f"sft={val}"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "next: make recipe NAME=support-bot PROFILE=smoke" in out
    assert main(["recipe", "validate", "support-bot"]) == 0  # 7. validate the fork

    runs = tmp_path / "runs"  # 8. its smoke profile (a few steps), exactly as `next:` runs it
    code = main(["recipe", "run", "support-bot", "--profile", "smoke", "--runs-dir", str(runs), "--set", "max_steps=2"])
    [run_dir] = (runs / "support-bot").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    sft = metrics["stages"]["sft"]
    assert sft["returncode"] == 0 and sft["steps"] == 2
    [data] = sft["data"]  # it trained on the slice of the user's rows, and the PII gate scanned exactly those
    assert Path(data["path"]).name == "dedup.smoke.jsonl" and data["rows"] == 48 and data["invalid"] == 0
    [pii] = sft["pii"]
    assert Path(pii["path"]).name == "dedup.smoke.jsonl" and pii["gate"]["verdict"] == "passed"
    assert Path(sft["merged_dir"]).is_dir() and sft["merge"]["check"]["passed"]
    evaluation = metrics["export"]["eval"]  # on the user's held-out rows
    assert evaluation["passed"] and evaluation["heldout_file"] == "data/dedup.val.jsonl"
    assert code in (0, 1) and metrics["status"] in ("passed", "failed-metrics")  # 2 steps may miss the bounds

    capsys.readouterr()
    assert main(["serve-cmd", str(run_dir)]) == 0  # 9. serving commands, one copy-pastable line each
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("vllm serve ") and sft["merged_dir"] in line for line in lines)
