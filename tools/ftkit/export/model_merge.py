"""Merge several fine-tuned models into one with mergekit (linear, SLERP, TIES, DARE and the rest).

The mergekit YAML is checked before anything is loaded, and every problem names the file, the line, the field and
a fix. Model paths are local folders relative to the config: nothing is downloaded, `trust_remote_code` is refused.
The output folder gets the merged model, the tokenizer, mergekit's card and config, and `ftkit-mergekit.json`
(provenance). In full: docs/export-and-eval.md, "`export/model_merge.py`: what is checked and written".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ftkit.envinfo import versions
from ftkit.errors import ExitCode, FtkitError, Problem
from ftkit.export.mergekit_config import method_names, parse_merge_config, read_merge_config
from ftkit.yaml_load import LocatedYaml, load_yaml

if TYPE_CHECKING:
    from mergekit.common import ModelReference
    from mergekit.config import MergeConfiguration

PROVENANCE_FILE = "ftkit-mergekit.json"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedMergeConfig:
    """A validated mergekit config whose model paths are absolute and exist locally."""

    path: Path
    text: str
    config: MergeConfiguration
    method: str
    base_model: str | None
    models: tuple[str, ...]  # the merged inputs in config order ("dir" or "dir+adapter"), base left out


@dataclass(frozen=True)
class MergeResult:
    method: str
    base_model: str | None
    models: tuple[str, ...]
    out_dir: Path
    parameters: int  # stored tensors' elements (a tied embedding counts once)
    seconds: float
    mergekit_version: str

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "out_dir": str(self.out_dir), "models": list(self.models)}


# --- resolving paths and checking the models on disk ---------------------------------------------


def resolve_merge_config(config_path: Path, *, allow_crimes: bool = False) -> ResolvedMergeConfig:
    """Validate the YAML, make model paths absolute (relative to its folder), check each exists locally.

    `allow_crimes` lets models of different architectures through (mergekit's name for it).
    """
    config_path = Path(config_path).resolve()
    source = load_yaml(config_path)
    config = parse_merge_config(source)
    problems: list[Problem] = []
    seen: dict[str, ModelReference] = {}
    order: list[tuple[str, ModelReference]] = []

    def resolve(ref: ModelReference, dotted: str) -> ModelReference:
        key = str(ref)
        if key not in seen:
            seen[key] = _resolve_ref(ref, config_path.parent, dotted, source, problems)
        order.append((dotted, seen[key]))
        return seen[key]

    resolved = _map_refs(config, resolve)
    if not problems:
        problems += _model_problems(resolved, order, source, allow_crimes)
    if problems:
        raise FtkitError(f"{config_path}: the models to merge are not usable ({len(problems)} problem(s))", problems)
    base = str(resolved.base_model) if resolved.base_model else None
    inputs = {str(m) for m in resolved.referenced_models()} - {base}
    models = tuple(dict.fromkeys(str(r) for _, r in order if str(r) in inputs))
    text = config_path.read_text(encoding="utf-8")
    return ResolvedMergeConfig(config_path, text, resolved, resolved.merge_method, base, models)


def _map_refs(obj: Any, fn: Callable[[ModelReference, str], ModelReference], dotted: str = "") -> Any:
    """A copy of a pydantic tree with every ModelReference replaced by fn(ref, dotted location)."""
    from mergekit.common import ModelReference

    if isinstance(obj, ModelReference):
        return fn(obj, dotted)
    if isinstance(obj, BaseModel):
        updates = {}
        for name in type(obj).model_fields:
            value = getattr(obj, name)
            new = _map_refs(value, fn, f"{dotted}.{name}" if dotted else name)
            if new is not value:
                updates[name] = new
        return obj.model_copy(update=updates) if updates else obj
    if isinstance(obj, list | tuple):
        items = [_map_refs(v, fn, f"{dotted}.{i}") for i, v in enumerate(obj)]
        return type(obj)(items) if any(a is not b for a, b in zip(items, obj, strict=True)) else obj
    if isinstance(obj, dict):
        mapped = {k: _map_refs(v, fn, f"{dotted}.{k}") for k, v in obj.items()}
        return mapped if any(mapped[k] is not obj[k] for k in obj) else obj
    return obj


def _resolve_ref(
    ref: ModelReference, folder: Path, dotted: str, source: LocatedYaml, problems: list[Problem]
) -> ModelReference:
    from mergekit.common import ModelPath, ModelReference

    file, line = str(source.path), source.line_of(dotted)
    paths = {}
    for role, mpath in (("model", ref.model), ("adapter", ref.lora)):
        if mpath is None:
            continue
        if mpath.revision:
            problems.append(
                Problem(
                    f"'{mpath}': a revision (@...) is for hub models; ftkit merges local folders",
                    file,
                    line,
                    dotted,
                    "download that revision to a folder and write its path without '@'",
                )
            )
        path = Path(os.path.expanduser(mpath.path))
        path = (path if path.is_absolute() else folder / path).resolve()
        problems += _folder_problems(mpath.path, path, role, file, line, dotted, folder)
        paths[role] = ModelPath(path=str(path))
    return ModelReference(
        model=paths["model"], lora=paths.get("adapter"), override_architecture=ref.override_architecture
    )


def _folder_problems(
    raw: str, path: Path, role: str, file: str, line: int | None, dotted: str, folder: Path
) -> list[Problem]:
    def problem(message: str, fix: str) -> list[Problem]:
        return [Problem(message, file, line, dotted, fix)]

    if not path.is_dir():
        if HUB_ID.match(raw) and not raw.startswith("."):
            fix = (
                f"ftkit does not download models: `hf download {raw} --local-dir <folder>`, then write that folder here"
            )
        else:
            fix = f"check the path (a relative path starts from {folder})"
        return problem(f"{role} folder not found: {path}", fix)
    weights = "adapter_model.safetensors" if role == "adapter" else "*.safetensors"
    marker = "adapter_config.json" if role == "adapter" else "config.json"
    if not (path / marker).is_file():
        return problem(f"{path} has no {marker}: not a {role} folder", f"point at the folder that holds {marker}")
    if not list(path.glob(weights)):
        pickled = [p.name for p in path.glob("*.bin")]
        fix = "save it with save_pretrained(..., safe_serialization=True)"
        if pickled:
            return problem(f"{path} holds only pickled weights ({pickled[0]}); ftkit reads safetensors only", fix)
        return problem(f"{path} holds no {weights}", fix)
    return []


def _model_problems(
    config: MergeConfiguration, order: list[tuple[str, ModelReference]], source: LocatedYaml, allow_crimes: bool
) -> list[Problem]:
    """Architectures transformers implements, one architecture (or allow_crimes), one vocabulary."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    file = str(source.path)
    first: dict[str, tuple[str, ModelReference]] = {}
    for dotted, ref in order:
        first.setdefault(ref.model.path, (dotted, ref))
    problems = []
    archs: dict[str, list[str]] = {}
    vocabularies: dict[str, list[str]] = {}
    for path, (dotted, _ref) in first.items():
        cfg = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
        model_type = cfg.get("model_type")
        if model_type not in CONFIG_MAPPING_NAMES:
            problems.append(
                Problem(
                    f"{path}: model_type {model_type!r} is not implemented in transformers (it needs the "
                    "model's own code, trust_remote_code, which ftkit refuses)",
                    file,
                    source.line_of(dotted),
                    dotted,
                    "merge models of an architecture transformers implements",
                )
            )
        archs.setdefault(",".join(cfg.get("architectures") or [str(model_type)]), []).append(path)
        if (fp := _vocabulary_fingerprint(Path(path))) is not None:
            vocabularies.setdefault(fp, []).append(path)
    if len(archs) > 1 and not allow_crimes:
        listing = "; ".join(f"{a}: {', '.join(p)}" for a, p in archs.items())
        problems.append(
            Problem(
                f"the models have different architectures ({listing})",
                file,
                None,
                "models",
                "merge models of one architecture (mixing them needs allow_crimes=True and rarely works)",
            )
        )
    if len(vocabularies) > 1 and config.tokenizer is None and config.tokenizer_source is None:
        listing = "; ".join(", ".join(p) for p in vocabularies.values())
        problems.append(
            Problem(
                f"the models' tokenizers differ (groups: {listing}): token ids would not line up",
                file,
                None,
                "tokenizer",
                "add 'tokenizer: {source: base}' (or source: union) so mergekit aligns the embeddings",
            )
        )
    return problems


def _vocabulary_fingerprint(model_dir: Path) -> str | None:
    """A hash of the tokenizer's vocabulary and added tokens (not of its settings), or None without one."""
    tok = model_dir / "tokenizer.json"
    if not tok.is_file():
        return None
    data = json.loads(tok.read_text(encoding="utf-8"))
    vocab = data.get("model", {}).get("vocab")
    added = sorted((t.get("id"), t.get("content")) for t in data.get("added_tokens") or [])
    return hashlib.sha256(json.dumps([vocab, added], sort_keys=True).encode()).hexdigest()


# --- running the merge ---------------------------------------------------------------------------


def merge_models(
    config_path: Path,
    out_dir: Path,
    *,
    device: str = "cpu",
    lazy_unpickle: bool = False,
    copy_tokenizer: bool = True,
    allow_crimes: bool = False,
    random_seed: int | None = 0,
    overwrite: bool = False,
) -> MergeResult:
    """Merge the models a mergekit YAML names into `out_dir` (safetensors, tokenizer, provenance).

    `random_seed` makes the random methods (DARE, DELLA) reproducible; it seeds the process's RNGs.
    `overwrite` replaces an earlier merge output (a folder holding ftkit-mergekit.json), nothing else.
    """
    from mergekit.options import MergeOptions

    resolved = resolve_merge_config(config_path, allow_crimes=allow_crimes)
    _check_device(device)
    out_dir = _prepare_out_dir(Path(out_dir).resolve(), resolved, overwrite)
    started = time.perf_counter()
    with _lora_cache(resolved, out_dir) as lora_cache:
        options = MergeOptions(
            device=device,
            lazy_unpickle=lazy_unpickle,
            copy_tokenizer=copy_tokenizer,
            allow_crimes=allow_crimes,
            trust_remote_code=False,
            safe_serialization=True,
            random_seed=random_seed,
            quiet=True,
            lora_merge_cache=lora_cache,
            lora_merge_dtype=resolved.config.dtype,
        )
        _run(resolved, out_dir, options)
    seconds = time.perf_counter() - started
    if copy_tokenizer and not (out_dir / "tokenizer_config.json").is_file():
        raise FtkitError.one(
            f"the merged weights are in {out_dir}, but mergekit could not copy a tokenizer",
            file=resolved.path,
            field="base_model",
            fix="copy the tokenizer files from the base model's folder into the output folder",
            code=ExitCode.ENGINE_FAILED,
        )
    result = MergeResult(
        method=resolved.method,
        base_model=resolved.base_model,
        models=resolved.models,
        out_dir=out_dir,
        parameters=count_parameters(out_dir),
        seconds=round(seconds, 3),
        mergekit_version=versions(("mergekit",)).get("mergekit", "unknown"),
    )
    write_provenance(
        result, resolved, options={"device": device, "random_seed": random_seed, "allow_crimes": allow_crimes}
    )
    return result


@contextlib.contextmanager
def _lora_cache(resolved: ResolvedMergeConfig, out_dir: Path) -> Iterator[str | None]:
    """A scratch folder beside the output for adapters merged into their base, only when there are any."""
    if not any(ref.lora for ref in resolved.config.referenced_models()):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.lora-", dir=out_dir.parent) as folder:
        yield folder


def _run(resolved: ResolvedMergeConfig, out_dir: Path, options: Any) -> None:
    """mergekit's run_merge; a failure leaves no half-written output folder behind."""
    from mergekit.io.tasks import LoaderCache
    from mergekit.merge import run_merge

    # mergekit keeps one loader per model reference for the whole process: start and end empty,
    # so a model rewritten at the same path (or a deleted LoRA cache) is never read stale.
    LoaderCache().loaders.clear()
    try:
        run_merge(
            resolved.config.model_copy(deep=True),  # run_merge rewrites the config it is given
            str(out_dir),
            options=options,
            config_source=resolved.config.to_yaml(),
        )
    except (RuntimeError, ValueError, TypeError, KeyError, OSError) as exc:
        shutil.rmtree(out_dir, ignore_errors=True)  # it was empty or new (see _prepare_out_dir)
        raise _merge_failed(exc, resolved) from exc
    finally:
        LoaderCache().flush_all()
        LoaderCache().loaders.clear()


def _prepare_out_dir(out_dir: Path, resolved: ResolvedMergeConfig, overwrite: bool) -> Path:
    for ref in resolved.config.referenced_models():
        for p in filter(None, (ref.model, ref.lora)):
            inp = Path(p.path)
            if out_dir == inp or inp in out_dir.parents:
                raise FtkitError.one(
                    f"the output folder {out_dir} is inside an input model's folder ({inp})",
                    field="out_dir",
                    fix="write the merge to a folder of its own",
                )
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (overwrite and (out_dir / PROVENANCE_FILE).is_file()):
            fix = "choose an empty or new folder"
            if (out_dir / PROVENANCE_FILE).is_file():
                fix += ", or pass overwrite=True to replace this earlier merge"
            raise FtkitError.one(f"the output folder {out_dir} is not empty", field="out_dir", fix=fix)
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _check_device(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise FtkitError.one(
                f"device '{device}' asked for, but torch sees no CUDA GPU",
                field="device",
                fix="use device='cpu' (merging needs no GPU; it is only faster there)",
                code=ExitCode.ENVIRONMENT,
            )


KNOWN_FAILURES = (
    ("Tensor size mismatch", "the models' tensors differ in shape: with a different vocabulary add "
     "'tokenizer: {source: base}'; otherwise merge only models of the same size"),
    ("Missing required parameter", "add the parameter named above under 'parameters:'"),
    ("allow-crimes", "the models' architectures differ: merge models of one architecture"),
)  # fmt: skip


def _merge_failed(exc: BaseException, resolved: ResolvedMergeConfig) -> FtkitError:
    message = f"mergekit failed: {type(exc).__name__}: {exc}"
    for pattern, fix in KNOWN_FAILURES:
        if pattern in str(exc):
            return FtkitError.one(message, file=resolved.path, fix=fix, code=ExitCode.USAGE)
    return FtkitError.one(
        message,
        file=resolved.path,
        fix="the config validated, so this is a failure while merging: check that the models load with transformers",
        code=ExitCode.ENGINE_FAILED,
    )


def count_parameters(model_dir: Path) -> int:
    """Elements of every tensor stored in the folder's safetensors files (read from the headers only)."""
    from safetensors import safe_open

    total = 0
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as st:
            total += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())  # noqa: SIM118
    return total


def write_provenance(result: MergeResult, resolved: ResolvedMergeConfig, options: dict[str, object]) -> Path:
    path = result.out_dir / PROVENANCE_FILE
    record = {
        "tool": "mergekit",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config_file": str(resolved.path),
        "config_text": resolved.text,
        "resolved_config": resolved.config.to_yaml(),
        "method": result.method,
        "base_model": result.base_model,
        "models": list(result.models),
        "options": options,
        "parameters": result.parameters,
        "seconds": result.seconds,
        "versions": versions(("mergekit", "torch", "transformers", "safetensors", "ftkit")),
    }
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


__all__ = [
    "PROVENANCE_FILE",
    "MergeResult",
    "ResolvedMergeConfig",
    "count_parameters",
    "merge_models",
    "method_names",
    "read_merge_config",
    "resolve_merge_config",
    "write_provenance",
]
