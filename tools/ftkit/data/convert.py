"""Convert rows to the two formats recipes train on: chat `messages` and `preference` pairs.

- alpaca {"instruction", "input", "output"} -> messages (user = instruction + input, assistant = output)
- sharegpt {"conversations": [{"from", "value"}]} -> messages
- hh-rlhf {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "..."} -> preference
  {"prompt": [turns before the answers], "chosen": prompt + chosen answer, "rejected": prompt + rejected answer}
Ids are kept (a row without one gets `<file stem>-<line>`). Rows that cannot be converted go to a
side file with the reason; rows in = rows out + rows set aside.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftkit.data.formats import SHAREGPT_ROLES, detect_format
from ftkit.data.prompt import prompt_key, prompt_turns
from ftkit.data.readers import iter_records

TARGETS = ("messages", "preference")
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


class ConversionError(ValueError):
    """A row that cannot be converted; the message is the reason written to the side file."""


def hh_turns(transcript: str) -> list[dict[str, str]]:
    """Split an hh-rlhf transcript ("\\n\\nHuman: …\\n\\nAssistant: …") into chat turns."""
    parts = _HH_TURN.split(transcript)
    if len(parts) < 3 or parts[0].strip():
        raise ConversionError("not an hh-rlhf transcript (expected '\\n\\nHuman: ' at the start)")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def alpaca_to_messages(row: dict[str, Any]) -> dict[str, Any]:
    user = row["instruction"].strip()
    if str(row.get("input") or "").strip():
        user += "\n\n" + row["input"].strip()
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
    if str(row.get("system") or "").strip():
        messages.insert(0, {"role": "system", "content": row["system"]})
    return {"messages": messages}


def sharegpt_to_messages(row: dict[str, Any]) -> dict[str, Any]:
    messages = []
    for turn in row["conversations"]:
        role = SHAREGPT_ROLES.get(turn.get("from"))
        if role is None:
            raise ConversionError(f"unknown ShareGPT speaker {turn.get('from')!r}")
        messages.append({"role": role, "content": turn.get("value", "")})
    if str(row.get("system") or "").strip() and messages and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": row["system"]})
    return {"messages": messages}


def hh_to_preference(row: dict[str, Any]) -> dict[str, Any]:
    chosen, rejected = hh_turns(row["chosen"]), hh_turns(row["rejected"])
    if chosen[:-1] != rejected[:-1]:
        raise ConversionError("chosen and rejected do not share the turns before the final answer")
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise ConversionError("the last turn of chosen and rejected must be the assistant's")
    if chosen[-1]["content"] == rejected[-1]["content"]:
        raise ConversionError("chosen and rejected answers are identical")
    return {"prompt": chosen[:-1], "chosen": chosen, "rejected": rejected}


def convert_row(row: Any, to: str) -> dict[str, Any]:
    fmt = detect_format(row)
    if to == "messages":
        if fmt == "messages":
            return {"messages": row["messages"]}
        if fmt == "alpaca":
            return alpaca_to_messages(row)
        if fmt == "sharegpt":
            return sharegpt_to_messages(row)
    if to == "preference" and fmt == "preference":
        if isinstance(row["chosen"], str) and isinstance(row["rejected"], str) and prompt_key(row) is None:
            return hh_to_preference(row)
        prompt = row["prompt"] if "prompt" in row else prompt_turns(row)  # Bradley-Terry: system + input
        return {"prompt": prompt, "chosen": row["chosen"], "rejected": row["rejected"]}
    raise ConversionError(f"cannot convert a '{fmt or 'unknown'}' row to {to}")


@dataclass
class ConvertReport:
    rows_in: int = 0
    rows_out: int = 0
    set_aside: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    rejected_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "reasons": dict(self.reasons)}


def convert_file(inp: str | Path, out: str | Path, to: str, rejected: str | Path | None = None) -> ConvertReport:
    src, dst = Path(inp), Path(out)
    rejected_path = Path(rejected) if rejected else dst.with_name(dst.name + ".rejected.jsonl")
    report = ConvertReport(rejected_path=str(rejected_path))
    stem = src.name.split(".")[0]
    with dst.open("w", encoding="utf-8") as fh, rejected_path.open("w", encoding="utf-8") as rej:
        for rec in iter_records(src):
            report.rows_in += 1
            try:
                if rec.error:
                    raise ConversionError(rec.error)
                converted = convert_row(rec.row, to)
            except (ConversionError, KeyError, TypeError, AttributeError) as exc:
                reason = str(exc) if isinstance(exc, ConversionError) else f"malformed row ({exc!r})"
                report.set_aside += 1
                report.reasons[reason] += 1
                rej.write(json.dumps({"line": rec.number, "reason": reason, "row": rec.row or rec.raw}) + "\n")
                continue
            row_id = rec.row.get("id") if isinstance(rec.row, dict) else None
            fh.write(json.dumps({"id": row_id if row_id is not None else f"{stem}-{rec.number}", **converted}) + "\n")
            report.rows_out += 1
    if report.set_aside == 0:
        rejected_path.unlink()
        report.rejected_path = None
    return report
