"""`ftkit doctor`: parse, call the library, print (or --json)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ftkit.cli.console import OK, consoles, print_json, say
from ftkit.errors import ExitCode

# ------------------------------------------------------------------ doctor


def _env_table(report: dict[str, Any]) -> Table:
    table = Table(title="environment", title_justify="left")
    table.add_column("what")
    table.add_column("value", overflow="fold")
    torch = report["torch"]
    table.add_row("python", report["python"])
    table.add_row("platform", report["platform"])
    table.add_row("torch", f"{torch['version'] or 'not installed'} (CUDA build {torch['cuda_build'] or 'none'}, "
                  f"cuDNN {torch['cudnn'] or 'none'}, CUDA available: {torch['cuda_available']})")  # fmt: skip
    nv = report["nvidia"]
    table.add_row("NVIDIA driver", f"{nv['driver']} (CUDA {nv['cuda_driver']})" if nv["driver"] else nv["note"])
    gpus = ", ".join(f"{g['name']} {g.get('memory_gib', '?')} GiB" for g in report["gpus"]) or "none"
    table.add_row("GPUs", gpus)
    for name, version in report["packages"].items():
        if name == "torch":
            continue  # its own row above
        locked = report["locked"].get(name)
        pin = f" (lock: {locked})" if locked and locked != version else ""
        table.add_row(name, f"{version or '–'}{pin}")
    return table


def _print_findings(out: Console, findings: list[dict[str, Any]], heading: str) -> None:
    """Each finding as a block: long paths, log lines and fixes do not fit a table's columns."""
    colour = {"error": "red", "warning": "yellow", "info": "cyan"}
    say(out, (heading, "bold"))
    for f in findings:
        sev = f["severity"]
        say(out, (sev, colour.get(sev, "white")), f": {f['title']} ({f['id']})")
        if f.get("detail"):
            say(out, f"  {f['detail']}")
        if f.get("where"):
            seen = f" ({f['count']} matching lines)" if f.get("count", 1) > 1 else ""
            say(out, f"  at {f['where']}{seen}: {f.get('excerpt') or ''}")
        label = "fix, in this order" if len(f["fix"]) > 1 else "fix"
        say(out, f"  {label}:")
        for i, fix in enumerate(f["fix"], 1):
            say(out, f"    {i}. {fix}")
        if f.get("source"):
            say(out, f"  source: {f['source']}")


def cmd_doctor(args: argparse.Namespace) -> int:
    from ftkit.doctor.env import env_report
    from ftkit.doctor.triage_run import triage_run

    console, out = consoles()
    with console.status("reading the environment"):
        report = env_report()
    triage = triage_run(Path(args.run_dir)).to_dict() if args.run_dir else None
    if args.json:
        print_json({"environment": report, "run": triage})
    else:
        out.print(_env_table(report))
        env_findings = report["findings"]
        if env_findings:
            _print_findings(out, env_findings, "known-bad combinations")
        else:
            say(out, OK, " no known-bad combination of versions found")
        if triage is not None:
            _print_triage(out, triage)
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    return int(ExitCode.ENVIRONMENT if errors else ExitCode.OK)


def _print_triage(out: Console, triage: dict[str, Any]) -> None:
    say(out, f"run {triage['run_dir']}: status {triage['status']}")
    for stage in triage["stages"]:
        rc = stage["returncode"]
        say(out, f"stage {stage['stage']}: exit code {'–' if rc is None else rc}, log {stage['log'] or 'none'}")
    if triage["findings"]:
        heading = "refused by the pre-flight" if triage["status"] == "refused" else "known failures"
        _print_findings(out, triage["findings"], heading)
    elif triage["tail"]:
        say(out, "no known failure pattern matched; the end of the log:")
        say(out, triage["tail"])


# ------------------------------------------------------------------ registration


def register(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="environment report with known-bad version combinations; with RUN_DIR, triage of a failed run",
        description="Versions come from package metadata (nothing heavy is imported but torch). With RUN_DIR, "
        "metrics.json and each stage's train.log are matched against known failures (CUDA OOM, NaN loss, chat "
        "template, pad = EOS, flash-attn, gated model, disk full, killed), each with the log line and a fix. "
        "Exit code 5 when the environment has a known-bad combination.",
    )
    p.add_argument("run_dir", nargs="?", help="a run dir written by `ftkit recipe run`")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)
