"""Triage a run dir written by `ftkit recipe run`: metrics.json (a refused pre-flight, each stage's exit code), each
stage's train.log (its tail) and the trained tokenizer, through the pure classifiers of `triage`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftkit.doctor.findings import Finding
from ftkit.doctor.patterns import INTERRUPTED
from ftkit.doctor.triage import classify_exit, classify_log, classify_refusal, classify_tokenizer, merge
from ftkit.errors import FtkitError

LOG = "train.log"
TAIL_BYTES = 4 * 2**20  # the end of a long log holds the failure; earlier lines are counted, not scanned
TAIL_LINES = 25


def read_tail(path: Path, max_bytes: int = TAIL_BYTES) -> tuple[str, int]:
    """The last `max_bytes` of a file, from a line start, and the file's line number of its first line."""
    size = path.stat().st_size
    start = max(0, size - max_bytes)
    skipped_lines = 0
    with path.open("rb") as fh:
        while fh.tell() < start:
            skipped_lines += fh.read(min(2**20, start - fh.tell())).count(b"\n")
        data = fh.read()
    if start and b"\n" in data:
        cut = data.index(b"\n") + 1
        data, skipped_lines = data[cut:], skipped_lines + 1
    return data.decode("utf-8", errors="replace"), skipped_lines + 1


def last_lines(text: str, n: int = TAIL_LINES) -> str:
    lines = [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


@dataclass
class StageTriage:
    stage: str
    returncode: int | None
    log: str | None


@dataclass
class RunTriage:
    run_dir: Path
    status: str | None
    refused: dict[str, Any] | None = None  # metrics.json's record of a refused pre-flight (run or resume)
    stages: list[StageTriage] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    tail: str = ""  # the end of the failed (or last) stage's log, when no known pattern matched

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "status": self.status,
            "refused": self.refused,
            "stages": [s.__dict__ for s in self.stages],
            "findings": [f.to_dict() for f in self.findings],
            "tail": self.tail,
        }


def _stage_names(run_dir: Path, metrics: dict[str, Any]) -> list[str]:
    names = list(metrics.get("stages", {}))
    names += sorted(p.parent.name for p in run_dir.glob(f"*/{LOG}") if p.parent.name not in names)
    return names


def triage_stage(run_dir: Path, stage: str, summary: dict[str, Any]) -> tuple[StageTriage, list[Finding], str]:
    log = run_dir / stage / LOG
    rc = summary.get("returncode")
    findings: list[Finding] = []
    text = ""
    if log.is_file():
        text, first = read_tail(log)
        findings += classify_log(text, str(log), first)
        if summary.get("status") == "interrupted":  # its stop lines, located (a resumed log has them too: not a fault)
            findings += classify_log(text, str(log), first, (INTERRUPTED,))
    if (exit_finding := classify_exit(rc, str(log) if log.is_file() else None)) is not None:
        findings.append(exit_finding)
    tok = run_dir / stage / "output" / "tokenizer_config.json"
    if tok.is_file():
        try:
            if (pad := classify_tokenizer(json.loads(tok.read_text(encoding="utf-8")), str(tok))) is not None:
                findings.append(pad)
        except (ValueError, OSError):
            pass
    return StageTriage(stage, rc, str(log) if log.is_file() else None), merge(findings), text


def triage_run(run_dir: Path) -> RunTriage:
    metrics_path = run_dir / "metrics.json"
    metrics: dict[str, Any] = {}
    if metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise FtkitError.one(
                f"metrics.json is not JSON: {exc}", file=metrics_path,
                fix="pass the run dir of a finished or failed `ftkit recipe run`",
            ) from exc  # fmt: skip
    names = _stage_names(run_dir, metrics)
    if not metrics and not names:
        raise FtkitError.one(
            "not a run dir: no metrics.json and no <stage>/train.log", file=run_dir,
            fix="pass a dir written by `ftkit recipe run` (runs/<recipe>/<time>-<profile>/)",
        )  # fmt: skip
    result = RunTriage(run_dir, metrics.get("status"), metrics.get("refused"))
    if result.refused:
        result.findings.append(classify_refusal(result.refused, metrics, str(run_dir)))
    tail, from_failed = "", False
    for stage in names:
        summary = metrics.get("stages", {}).get(stage, {})
        triaged, findings, text = triage_stage(run_dir, stage, summary)
        result.stages.append(triaged)
        result.findings += findings
        failed = summary.get("returncode") not in (0, None)
        if text and not from_failed:  # the failed stage's log, else the last one
            tail, from_failed = text, failed
    if recipe := metrics.get("recipe"):
        for f in result.findings:
            f.fix = [fix.replace("--recipe NAME", f"--recipe {recipe}") for fix in f.fix]
    if not result.findings:
        result.tail = last_lines(tail)
    return result
