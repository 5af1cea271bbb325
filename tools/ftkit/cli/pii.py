"""`ftkit pii scan|clean`: parse, call the library, print (or --json)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ftkit.cli.console import err_console as console
from ftkit.cli.console import out_console as out
from ftkit.cli.console import print_json, say
from ftkit.errors import ExitCode, FtkitError

# ------------------------------------------------------------------ pii


class _FileProgress:
    """A rich progress bar over bytes (plain JSONL) or rows (other files) for the PII commands."""

    def __init__(self, what: str, enabled: bool) -> None:
        from rich.progress import DownloadColumn, TransferSpeedColumn

        self.bytes = Progress(TextColumn(what), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                              TimeElapsedColumn(), console=console, transient=True, disable=not enabled)  # fmt: skip
        self.task = self.bytes.add_task(what, total=None)

    def __enter__(self) -> _FileProgress:
        self.bytes.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bytes.__exit__(*exc)  # type: ignore[arg-type]

    def __call__(self, done: int, total: int | None) -> None:
        self.bytes.update(self.task, completed=done, total=total)


def _pii_settings(args: argparse.Namespace) -> Any:
    from ftkit.pii.fields import parse_patterns
    from ftkit.pii.findings import ENTITIES
    from ftkit.pii.rows import ScanSettings

    entities = None
    if args.entities:
        entities = tuple(e.strip().upper() for spec in args.entities for e in spec.split(",") if e.strip())
        unknown = sorted(set(entities) - set(ENTITIES))
        if unknown:
            raise FtkitError.one(f"unknown entities {unknown}", field="--entities", fix=f"use: {', '.join(ENTITIES)}")
    patterns = parse_patterns(args.fields)
    return ScanSettings(tuple(patterns) if patterns else None, entities, args.ner)


def cmd_pii_scan(args: argparse.Namespace) -> int:
    from ftkit.pii.gate import describe_example, parse_max_rows, thresholds, violations
    from ftkit.pii.scan import scan_file

    settings = _pii_settings(args)
    limits = thresholds(parse_max_rows(args.max_rows))
    with _FileProgress(f"scanning {Path(args.file).name}", not args.json) as progress:
        report = scan_file(args.file, settings, max_examples=args.examples, workers=args.workers, on_progress=progress)
    found = violations(report, limits)
    if args.json:
        print_json({**report.to_dict(), "gate": {"max_rows": limits, "violations": [v.to_dict() for v in found]}})
        return int(ExitCode.DATA_INVALID if found else ExitCode.OK)
    mb = Path(args.file).stat().st_size / 1e6
    say(
        out,
        f"{report.path}: format {report.format or 'unknown'}; rows {report.rows} (unreadable "
        f"{report.unreadable}), rows with PII {report.rows_with_pii}; {mb:.1f} MB in {report.seconds:.1f} s",
    )
    table = Table(title="PII by entity (values masked)")
    for col in ("entity", "findings", "rows", "limit", "examples"):
        table.add_column(col, justify="right" if col in ("findings", "rows", "limit") else "left", overflow="fold")
    for entity in report.entities_scanned:
        limit = limits.get(entity)
        over = limit is not None and report.rows_by_entity.get(entity, 0) > limit
        examples = Text("\n".join(describe_example(e) for e in report.examples.get(entity, [])))  # data: no markup
        table.add_row(f"[red]{entity}[/red]" if over else entity, str(report.findings.get(entity, 0)),
                      str(report.rows_by_entity.get(entity, 0)), "–" if limit is None else str(limit),
                      examples)  # fmt: skip
    out.print(table, highlight=False)
    ner = report.ner
    say(out, f"PERSON/ADDRESS: {ner['reason']}", style="" if ner["available"] else "yellow")
    if report.unreadable:
        say(out, (f"{report.unreadable} unreadable lines", "yellow"),
            f" (first: {report.unreadable_lines[:5]}): run `ftkit data validate` on the file")  # fmt: skip
    for v in found:
        say(out, ("over the limit:", "red"), f" {v.entity} in {v.rows} rows (allowed {v.max_rows})")
    return int(ExitCode.DATA_INVALID if found else ExitCode.OK)


def cmd_pii_clean(args: argparse.Namespace) -> int:
    from ftkit.pii.clean import clean_file

    settings = _pii_settings(args)
    with _FileProgress(f"cleaning {Path(args.input).name}", not args.json) as progress:
        report = clean_file(args.input, args.output, settings, mode=args.mode, workers=args.workers,
                            on_progress=progress)  # fmt: skip
    if args.json:
        print_json(report.to_dict())
        return 0
    aside = ""
    if report.dropped:
        aside += f" + dropped {report.dropped} ({report.dropped_path})"
    if report.unreadable:
        aside += f" + unreadable {report.unreadable} ({report.unreadable_path}, not cleaned)"
    say(out, f"{args.input} -> {args.output} ({args.mode}): rows in {report.rows_in} = out {report.rows_out}{aside}; "
        f"{report.rows_changed} rows changed")  # fmt: skip
    replaced = ", ".join(f"{e} {n}" for e, n in report.replaced.most_common()) or "nothing found"
    say(out, ("found (rows set aside): " if args.mode == "drop-row" else "replaced: ") + replaced)
    say(out, f"PERSON/ADDRESS: {report.ner['reason']}", style="" if report.ner["available"] else "yellow")
    if report.dropped_path or report.unreadable_path:
        say(out, "the side files hold the original rows, PII included: keep them out of training and delete them "
            "when done", style="yellow")  # fmt: skip
    return 0


# ------------------------------------------------------------------ parser


def register(sub: Any) -> None:
    pii = sub.add_parser(
        "pii",
        help="find and clean PII and secrets in datasets",
        description="Structured entities (EMAIL, PHONE, CREDIT_CARD, US_SSN, IBAN, IP_ADDRESS, URL with credentials, "
        "SECRET) are found by validated patterns; PERSON and ADDRESS need a spaCy model (presidio), and every report "
        "says whether one was used.",
    )
    psub = pii.add_subparsers(dest="pii_command", required=True)

    def pii_common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--fields", action="append", metavar="PATH[,PATH]",
                       help="text fields to look in, dotted with * for any index/key (messages.*.content); "
                       "default: the row format's text fields (contents, instruction/input/output, prompt/chosen/"
                       "rejected), never keys, roles or ids")  # fmt: skip
        p.add_argument("--entities", action="append", metavar="E[,E]", help="only these entities (default: all)")
        p.add_argument("--ner", default="auto", metavar="auto|off|MODEL",
                       help="PERSON/ADDRESS with presidio + a spaCy model: auto (use one if installed), off, or a "
                       "model name or path (default auto)")  # fmt: skip
        p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                       help="processes for a plain JSONL file (default: all cores; 1 = this process)")  # fmt: skip
        p.add_argument("--json", action="store_true")

    p = psub.add_parser(
        "scan",
        help="count PII per entity, rows affected, masked examples with line and row id",
        description="Exit code 3 when rows with an entity exceed --max-rows (default SECRET=0: any secret fails).",
    )
    p.add_argument("file")
    pii_common(p)
    p.add_argument("--examples", type=int, default=3, help="masked examples per entity (default 3)")
    p.add_argument(
        "--max-rows", action="append", metavar="ENTITY=N",
        help="rows allowed to carry ENTITY before exit 3 (default SECRET=0; ENTITY=none lifts it)",
    )  # fmt: skip
    p.set_defaults(func=cmd_pii_scan)

    p = psub.add_parser(
        "clean",
        help="replace PII in the text fields (mask, pseudonymize) or set rows with PII aside (drop-row)",
        description="mask: [EMAIL_1], [PHONE_1]... numbered per row (the same value gets the same placeholder "
        "everywhere in the row). pseudonymize: [EMAIL_3fa2b1c9d0], an HMAC of the value under $FTKIT_PII_SALT, the "
        "same across the dataset and across runs. drop-row: rows with PII go to OUTPUT.dropped.jsonl. Rows in = rows "
        "out (+ dropped, + unreadable lines in OUTPUT.unreadable.jsonl). OUTPUT is JSONL, or a JSON array if it ends "
        "in .json.",
    )
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--mode", default="mask", choices=["mask", "pseudonymize", "drop-row"])
    pii_common(p)
    p.set_defaults(func=cmd_pii_clean)
