"""A run's record, `RunRecord`, as metrics.json holds it, and that record read back for people: its stops, resumes and
refused pre-flights, and the gates it went past (--allow-pii, --force).

The pipeline fills one typed `RunRecord` and writes it with `to_dict()`; the run report, the model card and
`ftkit doctor` read the written form. Stage summaries stay mappings: their keys are the metrics the gate knows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

METRICS_FILE = "metrics.json"
# running: training; trained: every stage trained, the gate not yet run; then passed, failed-metrics (a bound),
# failed-export (a GGUF or evaluation check), failed (an engine), interrupted (SIGTERM), refused (the pre-flight).
RunStatus = Literal[
    "running", "trained", "passed", "failed-metrics", "failed-export", "failed", "interrupted", "refused"
]

REFUSED: RunStatus = "refused"  # the pre-flight refused the run: nothing trained

# The pre-flight checks in the order they run, and how a person names each one.
PREFLIGHT_CHECKS: dict[str, str] = {
    "hardware": "the hardware check (the profile needs GPUs this machine lacks)",
    "checkpoints": "the checkpoint-dir check (it holds another run's checkpoints)",
    "model": "the base model check (the model could not be had)",
    "config": "the config check (a stage's resolved engine config or weights)",
    "data": "the data check (rows that break the stage's schema)",
    "pii": "the PII gate",
    "vram": "the VRAM pre-flight (a stage will not fit the GPU)",
    "exports": "the exports check (an export this machine cannot make)",
    "leakage": "the held-out check (held-out rows missing or also in the training data)",
}


@dataclass
class RunRecord:
    """What a run is and what happened to it; `to_dict()` is metrics.json, `from_dict()` reads one back.

    Keys of a metrics.json this version does not know are kept in `extra` and written back, so a resume by a newer
    or older ftkit loses nothing."""

    recipe: str
    recipe_dir: str
    profile: str
    sets: list[str]
    run_dir: str
    checkpoint_dir: str | None
    started: str
    git_commit: str
    hardware: dict[str, Any]
    hardware_label: str
    versions: dict[str, Any]
    engine: str
    image: dict[str, Any]
    status: RunStatus = "running"
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> its summary (metrics, data, merge…)
    interruptions: list[dict[str, Any]] = field(default_factory=list)  # SIGTERM: stage, signal, at, checkpoint, step
    resumes: list[dict[str, Any]] = field(default_factory=list)  # at, from, skipped_stages (stage, checkpoint, step)
    refusals: list[dict[str, Any]] = field(default_factory=list)  # every refused pre-flight of this run
    export: dict[str, Any] | None = None  # GGUF, quantized and evaluation results
    finished: str | None = None
    checks: list[dict[str, Any]] | None = None  # the gate's rows
    model_card: str | None = None
    refused: dict[str, Any] | None = None  # the last refusal
    cluster: dict[str, Any] | None = None  # a multi-node run: nodes, rendezvous (ftkit.cluster.Cluster.to_dict)
    extra: dict[str, Any] = field(default_factory=dict)

    _OPTIONAL: ClassVar[tuple[str, ...]] = ("export", "finished", "checks", "model_card", "refused", "cluster")

    def to_dict(self) -> dict[str, Any]:
        """metrics.json: every field, the optional ones only once set, then the unknown keys read with it."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (f.name in self._OPTIONAL and value is None):
                continue
            out[f.name] = value
        return out | self.extra

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        for key in ("sets", "interruptions", "resumes", "refusals"):
            known[key] = list(known.get(key) or [])
        known["stages"] = dict(known.get("stages") or {})
        for key in ("recipe", "recipe_dir", "profile", "run_dir", "started", "git_commit", "hardware_label", "engine"):
            known.setdefault(key, "")
        for key in ("hardware", "versions", "image"):
            known.setdefault(key, {})
        known.setdefault("checkpoint_dir", None)
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    def write(self, run_dir: Path, checkpoint_root: Path | None) -> None:
        """metrics.json in the run dir, and its copy beside the checkpoints (what a restarted machine still has)."""
        write_metrics(self.to_dict(), run_dir, checkpoint_root)


def write_metrics(metrics: dict[str, Any], run_dir: Path, checkpoint_root: Path | None) -> None:
    """Write a metrics.json mapping to the run dir and, when they differ, beside the checkpoints."""
    text = json.dumps(metrics, indent=2, default=str)
    (run_dir / METRICS_FILE).write_text(text)
    if checkpoint_root is not None and checkpoint_root.resolve() != run_dir.resolve():
        checkpoint_root.mkdir(parents=True, exist_ok=True)
        (checkpoint_root / METRICS_FILE).write_text(text)


def cell(value: Any) -> str:
    """A table cell: '–' for None, 4 significant digits for floats."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def short_model(base_model: str, run_dir: str) -> str:
    """A run's own merged model as 'sft/merged'; a cache dir by its name; a hub id as it is."""
    path = Path(base_model)
    if path.is_relative_to(run_dir):
        return str(path.relative_to(run_dir))
    return path.name if path.is_absolute() else base_model


def run_events(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's stops, resumes and refused pre-flights in time order. Each: at, what ('stopped': the checkpoint
    saved; 'resumed': the checkpoint continued from; 'refused': the check), stage, step, signal, checkpoint."""
    found = [{"what": "stopped", **{k: i.get(k) for k in ("at", "stage", "step", "signal", "checkpoint")}}
             for i in metrics.get("interruptions") or []]  # fmt: skip
    found += [{"what": "resumed", "at": r.get("at"), "stage": r.get("stage"), "step": r.get("step"), "signal": None,
               "checkpoint": r.get("checkpoint"), "skipped_stages": r.get("skipped_stages") or []}
              for r in metrics.get("resumes") or []]  # fmt: skip
    found += [{"what": "refused", "at": r.get("at"), "stage": r.get("stage"), "step": None, "signal": None,
               "checkpoint": None, "check": r.get("check")} for r in metrics.get("refusals") or []]  # fmt: skip
    order = {"stopped": 0, "resumed": 1, "refused": 2}
    return sorted(found, key=lambda e: (str(e.get("at") or ""), order[e["what"]]))


def describe_event(event: dict[str, Any], run_dir: str = "") -> str:
    """One line: 'sft stopped by SIGTERM at step 6, checkpoint saved: sft/output/checkpoint-6'."""
    stage = event.get("stage") or "the run"
    ckpt = short_model(str(event["checkpoint"]), run_dir) if event.get("checkpoint") else None
    step = f" at step {event['step']}" if event.get("step") is not None else ""
    if event["what"] == "stopped":
        saved = f", checkpoint saved: `{ckpt}`" if ckpt else f", no checkpoint: {stage} starts from its beginning"
        return f"{stage} stopped by {event.get('signal') or 'a signal'}{step}{saved}"
    if event["what"] == "resumed":
        skipped = event.get("skipped_stages") or []
        kept = f" ({', '.join(skipped)} finished before: kept)" if skipped else ""
        if ckpt:
            return f"resumed: {stage} continued from `{ckpt}`{step}{kept}"
        return f"resumed: no checkpoint to continue from, the next stage started from its beginning{kept}"
    return f"resume refused by {PREFLIGHT_CHECKS.get(str(event.get('check')), 'the pre-flight')}" + (
        f" (stage {event['stage']})" if event.get("stage") else ""
    )


def gate_overrides(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The pre-flight gates this run went past: the PII gate with --allow-pii (per stage and file: the entities over
    their limits, in how many rows and at which lines) and the VRAM pre-flight with --force (need and budget)."""
    out: list[dict[str, Any]] = []
    for stage, st in (metrics.get("stages") or {}).items():
        for scan in st.get("pii") or []:
            gate = scan.get("gate") or {}
            if gate.get("verdict") != "overridden":
                continue
            found = [{**v, "lines": [e.get("line") for e in (scan.get("examples") or {}).get(v.get("entity"), [])]}
                     for v in gate.get("violations") or []]  # fmt: skip
            out.append({"gate": "pii", "flag": "--allow-pii", "stage": stage, "file": scan.get("path"),
                        "rows": scan.get("rows"), "found": found})  # fmt: skip
        vram = st.get("vram_estimate") or {}
        if vram.get("verdict") == "forced":
            out.append({"gate": "vram", "flag": "--force", "stage": stage, "need_gib": vram.get("need_gib"),
                        "budget_gib": vram.get("budget_gib")})  # fmt: skip
    return out


def describe_override(o: dict[str, Any]) -> str:
    """One line saying what a gate found and that the run went past it, and with which flag."""
    if o["gate"] == "pii":
        found = "; ".join(
            f"{v.get('entity')} in {v.get('rows')} of {o.get('rows')} rows (allowed: {v.get('max_rows')}"
            + (f"; first at line {', '.join(str(n) for n in v['lines'])})" if v.get("lines") else ")")
            for v in o["found"]
        )
        return f"{o['stage']}: the PII gate found {found} in `{o.get('file')}` and let it through ({o['flag']})"
    return (
        f"{o['stage']}: the VRAM pre-flight estimated {cell(o.get('need_gib'))} GiB per GPU on a "
        f"{cell(o.get('budget_gib'))} GiB GPU (it refuses what will not fit) and was overridden ({o['flag']})"
    )
