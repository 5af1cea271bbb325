"""Classify a failed stage from its log text, exit code and tokenizer: pure functions, no file access."""

from __future__ import annotations

from typing import Any

from ftkit.doctor.findings import Finding
from ftkit.doctor.patterns import INTERRUPTED, INTERRUPTED_EXIT_CODE, KILLED_EXIT_CODES, PATTERNS, LogPattern


def _line_at(text: str, index: int) -> str:
    """The log line around `index`; a progress bar's carriage returns split it too."""
    start = max(text.rfind("\n", 0, index), text.rfind("\r", 0, index)) + 1
    ends = [e for e in (text.find("\n", index), text.find("\r", index)) if e >= 0]
    return text[start : min(ends) if ends else len(text)].strip()


def classify_log(
    text: str, file: str, first_line: int = 1, patterns: tuple[LogPattern, ...] = PATTERNS
) -> list[Finding]:
    """One finding per known failure in `text`, located at its first matching line (`first_line` is the file's
    line number of the text's first line, for a tail); lines count newlines, as editors and `sed -n` do."""
    found = []
    for pattern in patterns:
        matches = list(pattern.regex.finditer(text))
        if not matches:
            continue
        first = matches[0]
        lines = {text.count("\n", 0, m.start()) for m in matches}
        line = first_line + text.count("\n", 0, first.start())
        found.append(Finding(pattern.id, pattern.severity, pattern.title, list(pattern.fix), pattern.source,
                             file=file, line=line, excerpt=_line_at(text, first.start())[:300],
                             count=len(lines)))  # fmt: skip
    return found


def classify_exit(returncode: int | None, file: str | None = None) -> Finding | None:
    """A stage killed by SIGKILL (-9 from the runner, 137 from a shell), or stopped by SIGTERM at a checkpoint
    (exit 6: resumable, not a failure)."""
    if returncode == INTERRUPTED_EXIT_CODE:
        pattern = INTERRUPTED
    elif returncode in KILLED_EXIT_CODES:
        pattern = next(p for p in PATTERNS if p.id == "killed")
    else:
        return None
    return Finding(pattern.id, pattern.severity, pattern.title, list(pattern.fix), pattern.source,
                   detail=f"exit code {returncode}", file=file)  # fmt: skip


def classify_refusal(refused: dict[str, Any], metrics: dict[str, Any], run_dir: str) -> Finding:
    """A pre-flight that refused the run (or a resume of it), from metrics.json's `refused` record: which check, what
    it found, where (its first problem's file and line), and the fixes it gave, then how to go on."""
    from ftkit.pipeline.resume import PREFLIGHT_CHECKS, REFUSED

    check = PREFLIGHT_CHECKS.get(str(refused.get("check")), "the pre-flight")
    fresh = metrics.get("status") == REFUSED
    stage = f" on stage '{refused['stage']}'" if refused.get("stage") else ""
    problems = refused.get("problems") or []
    first = problems[0] if problems else {}
    fixes = list(dict.fromkeys(str(p["fix"]) for p in problems if p.get("fix")))[:5]
    if fresh:
        again = f"ftkit recipe run {metrics.get('recipe', 'NAME')} --profile {metrics.get('profile', 'smoke')}"
        fixes.append(f"then start a new run: {again} (a refused run trained nothing: there is nothing to resume)")
    else:
        fixes.append(f"then resume again: ftkit recipe run --resume {run_dir} (the run stays {metrics.get('status')})")
    others = [str(p.get("message")) for p in problems[1:3]]
    more = int(refused.get("problems_total") or len(problems)) - 1 - len(others)
    also = f"; also: {'; '.join(others)}" if others else ""
    return Finding(
        f"refused-{refused.get('check')}", "error",
        f"{check} refused {'the run' if fresh else 'a resume'}{stage} before training "
        f"(exit code {refused.get('exit_code')})",
        fixes, None,
        detail=f"{refused.get('message')}{also}" + (f" (+{more} more)" if more > 0 else ""),
        file=first.get("file"), line=first.get("line"), excerpt=first.get("message"),
        extra={"check": refused.get("check"), "at": refused.get("at")},
    )  # fmt: skip


def _token(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def classify_tokenizer(config: dict[str, Any], file: str) -> Finding | None:
    """The trained tokenizer's config (tokenizer_config.json) with pad == EOS."""
    pad, eos = _token(config.get("pad_token")), _token(config.get("eos_token"))
    same_id = config.get("pad_token_id") is not None and config.get("pad_token_id") == config.get("eos_token_id")
    if not ((pad and pad == eos) or same_id):
        return None
    pattern = next(p for p in PATTERNS if p.id == "pad-is-eos")
    return Finding(pattern.id, pattern.severity, pattern.title, list(pattern.fix), pattern.source,
                   detail=f"pad_token {pad!r} = eos_token {eos!r}", file=file)  # fmt: skip


def merge(findings: list[Finding]) -> list[Finding]:
    """One finding per id (from one stage): a located log line wins over an exit code or a config, and keeps
    their details."""
    out: dict[str, Finding] = {}
    for f in findings:
        kept = out.get(f.id)
        if kept is None:
            out[f.id] = f
            continue
        best, other = (kept, f) if kept.line or not f.line else (f, kept)
        best.detail = "; ".join(d for d in (best.detail, other.detail) if d) or None
        out[f.id] = best
    return list(out.values())
