"""`ftkit data validate|convert|dedup|split|leakage`: parse, call the library, print (or --json)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from rich.table import Table
from rich.text import Text

from ftkit.cli.console import err_console as console
from ftkit.cli.console import out_console as out
from ftkit.cli.console import print_json, say
from ftkit.data.formats import FORMATS
from ftkit.errors import ExitCode


def cmd_data_validate(args: argparse.Namespace) -> int:
    from ftkit.data.validate import validate_file

    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        with console.status(f"loading tokenizer {args.tokenizer}"):
            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    with console.status(f"validating {args.file}"):
        report = validate_file(
            args.file, args.schema, args.quarantine, args.format, tokenizer, args.max_len, workers=args.workers
        )
    if args.json:
        print_json(report.to_dict())
    else:
        quarantined = f" -> {report.quarantine}" if report.quarantine else ""
        say(out, f"{report.path}: format {report.format or 'unknown'}; rows {report.rows} = valid {report.valid} "
            f"+ invalid {report.invalid}{quarantined}")  # fmt: skip
        if report.lengths and report.lengths.get("rows"):
            ln = report.lengths
            over = f"; {ln['over_max_len']} over --max-len {ln['max_len']} (truncated)" if ln["max_len"] else ""
            say(out, f"tokens after the chat template: p50 {ln['p50']}, p95 {ln['p95']}, max {ln['max']}{over}")
        if report.reasons:
            table = Table(title="problems by reason")
            table.add_column("reason")
            table.add_column("problems", justify="right")
            for reason, count in report.reasons.most_common():
                table.add_row(Text(reason), str(count))
            out.print(table)
        for p in report.problems[: args.show]:
            say(out, f"  - {p.render()}")
        if len(report.problems) > args.show:
            say(out, f"  … {len(report.problems) - args.show} more (use --show N or --json)")
    return int(ExitCode.OK if report.ok else ExitCode.DATA_INVALID)


def cmd_data_convert(args: argparse.Namespace) -> int:
    from ftkit.data.convert import convert_file

    report = convert_file(args.input, args.output, args.to, args.rejected)
    if args.json:
        print_json(report.to_dict())
    else:
        aside = f" (set aside: {report.rejected_path})" if report.rejected_path else ""
        say(out, f"{args.input} -> {args.output} ({args.to}): rows in {report.rows_in} = out {report.rows_out} "
            f"+ set aside {report.set_aside}{aside}")  # fmt: skip
        for reason, count in report.reasons.most_common(10):
            say(out, f"  {count:>6}  {reason}")
    return 0


def cmd_data_dedup(args: argparse.Namespace) -> int:
    from ftkit.data.dedup import dedup_file

    with console.status("deduplicating (exact + MinHash LSH)" if not args.exact_only else "deduplicating (exact)"):
        report = dedup_file(args.input, args.output, args.dropped, near=not args.exact_only, threshold=args.threshold)
    if args.json:
        print_json(report.to_dict())
        return 0
    say(out, f"{args.input} -> {args.output}: rows in {report.rows_in} = kept {report.kept} + exact {report.exact} "
        f"+ near {report.near} + unreadable {report.unreadable} (dropped rows: {report.dropped_path})")  # fmt: skip
    for ex in report.examples:
        say(out, f"  line {ex['line']}: {ex['kind']} duplicate of {ex.get('duplicate_of')} "
            f"(similarity {ex.get('similarity')})")  # fmt: skip
    return 0


def _leak_line(name: str, leak: dict[str, Any]) -> str:
    return (f"{name}: {leak['exact']} exact + {leak['near']} near of {leak['rows']} rows also in train"
            + ("" if leak["exact"] + leak["near"] else " (no leakage)"))  # fmt: skip


def cmd_data_split(args: argparse.Namespace) -> int:
    from ftkit.data.split import split_file

    with console.status("splitting and checking leakage"):
        report = split_file(
            args.input, args.out_dir, val=args.val, test=args.test, stratify=args.stratify, seed=args.seed
        )
    if args.json:
        print_json(report.to_dict())
        return 0
    counts = " + ".join(f"{n} {c}" for n, c in report.counts.items())
    say(out, f"{args.input}: rows {report.rows} = {counts} + unreadable {report.unreadable}")
    for name, path in report.files.items():
        say(out, f"  {name}: {path}")
    for name, leak in report.leakage.items():
        say(out, "  " + _leak_line(name, leak))
    return 0


def cmd_data_leakage(args: argparse.Namespace) -> int:
    from ftkit.data.split import leakage

    leak = leakage(args.train, args.other, threshold=args.threshold)
    if args.json:
        print_json(leak)
    else:
        say(out, _leak_line(args.other, leak))
        for ex in leak["examples"]:
            say(out, f"  line {ex['line']} ({ex['id']}): {ex['kind']} match of train {ex['train_id']} "
                f"(similarity {ex['similarity']})")  # fmt: skip
    return int(ExitCode.DATA_INVALID if leak["exact"] + leak["near"] else ExitCode.OK)


def register(sub: Any) -> None:
    data = sub.add_parser("data", help="dataset checks")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser(
        "validate",
        help="check every row of a dataset: JSON, schema, format rules (turn order, pairs, labels)",
        description="Reads .jsonl/.ndjson/.json/.parquet (JSON optionally .gz/.zst), streaming JSONL and Parquet. "
        "Each problem names the line (or row), the field and a fix. Exit code 3 when any row is invalid.",
    )
    p.add_argument("file")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="row format (default: detect)")
    p.add_argument("--schema", help="a JSON Schema every row must match (e.g. recipes/<name>/sft.schema.json)")
    p.add_argument("--quarantine", help="write invalid rows with their reasons to this JSONL file")
    p.add_argument("--tokenizer", help="a model dir (or hub id) whose tokenizer and chat template measure lengths")
    p.add_argument("--max-len", type=int, help="the training sequence length: rows over it are counted, and rows "
                   "whose answer it would cut off entirely are invalid")  # fmt: skip
    p.add_argument("--show", type=int, default=20, help="problems to print (default 20)")
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1,
        help="processes for a plain JSONL file over 4 MB (default: all cores; 1 = sequential)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_validate)

    p = dsub.add_parser(
        "convert",
        help="convert alpaca/sharegpt rows to chat messages, hh-rlhf transcripts to preference pairs",
        description="Ids are kept. Rows that cannot be converted go to OUT.rejected.jsonl (or --rejected) with the "
        "reason; rows in = out + set aside.",
    )
    p.add_argument("input")
    p.add_argument("output", help="JSONL to write")
    p.add_argument("--to", required=True, choices=["messages", "preference"])
    p.add_argument("--rejected", help="where rows that cannot be converted go (default OUTPUT.rejected.jsonl)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_convert)

    p = dsub.add_parser(
        "dedup",
        help="drop exact (normalised) and near (MinHash LSH) duplicates, keeping the first",
        description="Dropped rows go to OUTPUT.dropped.jsonl with the id of the row kept, the kind and the "
        "estimated Jaccard similarity of word 5-grams.",
    )
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--threshold", type=float, default=0.8, help="near-duplicate Jaccard threshold (default 0.8)")
    p.add_argument("--exact-only", action="store_true", help="skip the near-duplicate pass")
    p.add_argument("--dropped", help="where dropped rows go (default OUTPUT.dropped.jsonl)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_dedup)
    p = dsub.add_parser(
        "split",
        help="seeded train/val/test split (optionally stratified) with a leakage check",
        description="Writes <stem>.train.jsonl, <stem>.val.jsonl (and .test.jsonl) and reports rows of val/test "
        "that are exact or near duplicates of train rows.",
    )
    p.add_argument("input")
    p.add_argument("--val", type=float, default=0.1)
    p.add_argument("--test", type=float, default=0.0)
    p.add_argument("--stratify", help="field (dotted path) whose values keep their proportions in every split")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out-dir", help="where the split files go (default: beside the input)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_split)
    p = dsub.add_parser("leakage", help="rows of OTHER that are in TRAIN (exact or near); exit 3 when any")
    p.add_argument("train")
    p.add_argument("other")
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_leakage)
