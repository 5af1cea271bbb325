"""Optional NER backend for PERSON and ADDRESS: presidio's spaCy recognizer over a spaCy pipeline.

The regex detectors find structured PII; names and places need a statistical model. This wraps presidio's
`AnalyzerEngine` with only its `SpacyRecognizer`, over a spaCy pipeline loaded here. ADDRESS means a named place
(spaCy's GPE, LOC and FAC), not a postal address. `load_ner()` does not raise when no model is installed: it returns
a backend that is not available and says why, unless a model was asked for explicitly. presidio and spaCy are
imported lazily, and a loaded backend is cached per model. Entities and scores: docs/pii.md, "`pii/ner.py`:
entities and the optional model".
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftkit.errors import ExitCode, FtkitError
from ftkit.pii.findings import Finding

ENV_VAR = "FTKIT_PII_NER_MODEL"
DEFAULT_MODELS = ("en_core_web_lg", "en_core_web_md", "en_core_web_sm")
LANGUAGE = "en"

# spaCy label -> presidio entity. presidio's default maps GPE and LOC to LOCATION; FAC is ours.
SPACY_TO_PRESIDIO = {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION"}
# presidio entity -> ftkit entity.
PRESIDIO_TO_FTKIT = {"PERSON": "PERSON", "LOCATION": "ADDRESS"}
# Labels the usual English pipelines emit that we do not report (named so presidio drops them quietly).
_OTHER_LABELS = (
    "ORG", "NORP", "DATE", "TIME", "CARDINAL", "ORDINAL", "MONEY", "PERCENT", "QUANTITY",
    "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE", "MISC",
)  # fmt: skip

FIX_MISSING = f"install a spaCy model (the container images have en_core_web_sm) or pass --ner PATH (or set {ENV_VAR})"


@dataclass
class NerStatus:
    """Whether PERSON/ADDRESS scanning is on, with which model, and why (or why not)."""

    available: bool
    model: str | None
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"available": self.available, "model": self.model, "reason": self.reason}


class NerBackend:
    """PERSON and ADDRESS findings from presidio + spaCy; an inert backend when no model loaded."""

    def __init__(self, status: NerStatus, analyzer: Any = None) -> None:
        self.status = status
        self._analyzer = analyzer  # presidio AnalyzerEngine, or None when unavailable

    @property
    def available(self) -> bool:
        return self.status.available

    def detect(self, text: str) -> list[Finding]:
        """Findings in `text` (sorted by start); [] when no model is available."""
        if self._analyzer is None or not text:
            return []
        results = self._analyzer.analyze(text=text, language=LANGUAGE, entities=list(PRESIDIO_TO_FTKIT))
        return to_findings(results)

    def detect_batch(self, texts: Sequence[str], batch_size: int = 64) -> list[list[Finding]]:
        """`detect` for each text, running the spaCy pipeline over them with `nlp.pipe` (presidio's batch path)."""
        if self._analyzer is None:
            return [[] for _ in texts]
        from presidio_analyzer import BatchAnalyzerEngine

        batch = BatchAnalyzerEngine(analyzer_engine=self._analyzer)
        results = batch.analyze_iterator(
            list(texts), language=LANGUAGE, batch_size=batch_size, entities=list(PRESIDIO_TO_FTKIT)
        )
        return [to_findings(r) for r in results]


def to_findings(results: Iterable[Any]) -> list[Finding]:
    """presidio RecognizerResults -> ftkit Findings (entities we do not map are dropped)."""
    out = [
        Finding(r.start, r.end, PRESIDIO_TO_FTKIT[r.entity_type], float(r.score), f"ner:{r.entity_type}")
        for r in results
        if r.entity_type in PRESIDIO_TO_FTKIT
    ]
    return sorted(out, key=lambda f: (f.start, f.end))


# --- loading -------------------------------------------------------------------------------------

_CACHE: dict[str, NerBackend] = {}
_CACHE_LOCK = threading.Lock()


def load_ner(model: str | None = None) -> NerBackend:
    """The NER backend for `model`: a spaCy package name or the path of a saved pipeline (`nlp.to_disk`).

    None means FTKIT_PII_NER_MODEL if set, else the first of en_core_web_lg, en_core_web_md,
    en_core_web_sm that is installed. Cached per model in this process (see `clear_ner_cache`).
    """
    source = "argument"
    if model is None and os.environ.get(ENV_VAR):
        model, source = os.environ[ENV_VAR], ENV_VAR
    key = f"{source}:{model}"
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load_uncached(model, source)
        return _CACHE[key]


def clear_ner_cache() -> None:
    """Forget every loaded backend (tests; or after installing a model in a running process)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _load_uncached(model: str | None, source: str) -> NerBackend:
    auto = model is None
    if model is None:
        found = next((name for name in DEFAULT_MODELS if _is_installed(name)), None)
        if found is None:
            tried = ", ".join(DEFAULT_MODELS)
            return _unavailable(None, f"no spaCy model installed (tried {tried}): PERSON and ADDRESS were not scanned")
        model = found
    elif not _looks_like_path(model) and not _is_installed(model):
        raise _load_error(model, source, "is neither a saved spaCy pipeline (no such folder) nor an installed package")
    elif _looks_like_path(model) and not Path(model).expanduser().is_dir():
        raise _load_error(model, source, "does not exist or is not a folder")

    try:
        import presidio_analyzer  # noqa: F401  (check both imports before loading anything)
        import spacy  # noqa: F401
    except ImportError as exc:
        return _unavailable(
            None,
            f"presidio-analyzer or spaCy is not installed ({exc.name}): PERSON and ADDRESS were not scanned",
            fix="pip install presidio-analyzer spacy, then install a spaCy model",
        )

    name = str(Path(model).expanduser()) if _looks_like_path(model) else model
    try:
        nlp = _load_spacy(name)
    except Exception as exc:  # spaCy raises OSError, ValueError, KeyError, catalogue errors... for a bad pipeline
        if auto:  # found, not asked for: report it, do not stop the scan
            return _unavailable(
                name,
                f"spaCy model {name} is installed but did not load ({type(exc).__name__}: {exc}): "
                "PERSON and ADDRESS were not scanned",
                fix=f"reinstall it for spaCy {_spacy_version()} or pass --ner PATH",
            )
        raise _load_error(model, source, f"did not load as a spaCy pipeline: {type(exc).__name__}: {exc}") from exc
    if not nlp.pipe_names:
        raise _load_error(model, source, "is a blank pipeline (no components): it cannot find any entity")
    analyzer = build_analyzer(nlp, name)
    return NerBackend(NerStatus(True, name, f"presidio + spaCy {name}"), analyzer)


def _unavailable(model: str | None, reason: str, fix: str = FIX_MISSING) -> NerBackend:
    return NerBackend(NerStatus(False, model, f"{reason} (fix: {fix})"))


def _load_error(model: str, source: str, what: str) -> FtkitError:
    given = "--ner / load_ner(model=...)" if source == "argument" else f"environment variable {source}"
    return FtkitError.one(
        f"NER model {model!r} (from {given}) {what}",
        file=model if _looks_like_path(model) else None,
        fix="pass the folder of a pipeline saved with nlp.to_disk (it holds config.cfg and meta.json), "
        "or the name of an installed spaCy model such as en_core_web_lg (python -m spacy download en_core_web_lg), "
        "or --ner off to scan without PERSON/ADDRESS",
        code=ExitCode.ENVIRONMENT,
    )


def _looks_like_path(model: str) -> bool:
    return os.sep in model or "/" in model or model.startswith(("~", ".")) or Path(model).exists()


def _is_installed(package: str) -> bool:
    """Whether a spaCy model package is importable, without importing spaCy (cheap)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _spacy_version() -> str:
    import spacy

    return str(spacy.__version__)


def _load_spacy(name: str) -> Any:
    import spacy

    # Only the entity pipeline is needed: keep the tagger/parser/lemmatizer out of the hot path when present.
    # presidio reads token lemmas only for context words, which its spaCy recognizer does not use.
    return spacy.load(name, exclude=["parser", "tagger", "morphologizer", "attribute_ruler", "lemmatizer", "senter"])


def build_analyzer(nlp: Any, name: str) -> Any:
    """presidio AnalyzerEngine over an already-loaded spaCy pipeline, with only the spaCy NER recognizer."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer

    labels = set(_OTHER_LABELS) | {label for labels in nlp.pipe_labels.values() for label in labels}
    config = NerModelConfiguration(
        model_to_presidio_entity_mapping=dict(SPACY_TO_PRESIDIO),
        labels_to_ignore=sorted(labels - set(SPACY_TO_PRESIDIO)),
    )
    engine = SpacyNlpEngine(models=[{"lang_code": LANGUAGE, "model_name": name}], ner_model_configuration=config)
    # Hand presidio the pipeline we loaded rather than calling engine.load(): its load() would load the
    # model a second time and, for a name that is not an installed package or an existing path, run
    # `spacy.cli.download` (a network fetch).
    engine.nlp = {LANGUAGE: nlp}
    recognizer = SpacyRecognizer(supported_language=LANGUAGE, supported_entities=sorted(PRESIDIO_TO_FTKIT))
    registry = RecognizerRegistry(recognizers=[recognizer], supported_languages=[LANGUAGE])
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=[LANGUAGE])
