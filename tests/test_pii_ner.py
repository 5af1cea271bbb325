"""ftkit.pii.ner (presidio + spaCy for PERSON/ADDRESS) and ftkit.pii.offline (tldextract without network).

Everything runs offline: the spaCy pipeline is a blank English one with an entity_ruler, saved to a
temp folder; sockets are blocked where a network call could hide.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from ftkit.errors import FtkitError
from ftkit.pii import ner
from ftkit.pii.findings import Finding
from ftkit.pii.offline import use_bundled_public_suffix_list, uses_bundled_public_suffix_list

ROOT = Path(__file__).resolve().parents[1]
TEXT = "Ada Lovelace wrote to Grace Hopper from London, then walked by Lake Geneva and over the Golden Gate Bridge."


def _no_connect(*args: object, **kwargs: object) -> None:
    raise OSError("network blocked by test")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _no_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _no_connect)
    monkeypatch.setattr(socket, "create_connection", _no_connect)
    monkeypatch.setattr(socket, "getaddrinfo", _no_connect)


@pytest.fixture(autouse=True)
def fresh_ner_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(ner.ENV_VAR, raising=False)
    ner.clear_ner_cache()
    yield
    ner.clear_ner_cache()


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A blank English spaCy pipeline whose entity_ruler labels a few names and places."""
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [
            {"label": "PERSON", "pattern": "Ada Lovelace"},
            {"label": "PERSON", "pattern": [{"LOWER": "grace"}, {"LOWER": "hopper"}]},
            {"label": "GPE", "pattern": "London"},
            {"label": "LOC", "pattern": "Lake Geneva"},
            {"label": "FAC", "pattern": "Golden Gate Bridge"},
            {"label": "ORG", "pattern": "Acme"},  # a label we do not report
        ]
    )
    path = tmp_path_factory.mktemp("spacy") / "tiny-ner"
    nlp.to_disk(path)
    return path


# --- offline tldextract ------------------------------------------------------------------------


def test_email_recognizer_validates_with_sockets_blocked(
    no_network: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tldextract.tldextract as tx
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    # Start from tldextract's default (cache under tmp_path, remote URLs) so the test does not depend
    # on what an earlier test or the user's ~/.cache holds; monkeypatch puts the original back.
    monkeypatch.setenv("TLDEXTRACT_CACHE", str(tmp_path / "tldcache"))
    monkeypatch.setattr(tx, "TLD_EXTRACTOR", tx.TLDExtract())

    use_bundled_public_suffix_list()
    assert uses_bundled_public_suffix_list()
    patched = tx.TLD_EXTRACTOR
    use_bundled_public_suffix_list()  # idempotent: same extractor, nothing rebuilt
    assert tx.TLD_EXTRACTOR is patched

    text = "write to jane.doe@mail.example.co.uk, not to someone@localhost.invalidtld"
    found = EmailRecognizer().analyze(text, entities=["EMAIL_ADDRESS"])
    assert [text[r.start : r.end] for r in found] == ["jane.doe@mail.example.co.uk"]
    assert not (tmp_path / "tldcache").exists(), "the bundled snapshot must not write a cache"


# --- the NER backend ---------------------------------------------------------------------------


def test_detects_person_and_address_with_exact_offsets(tiny_pipeline: Path, no_network: None) -> None:
    backend = ner.load_ner(str(tiny_pipeline))
    assert backend.status.available
    assert backend.status.model == str(tiny_pipeline)
    assert str(tiny_pipeline) in backend.status.reason

    found = backend.detect(TEXT)
    spans = [(f.entity, TEXT[f.start : f.end], f.kind) for f in found]
    assert spans == [
        ("PERSON", "Ada Lovelace", "ner:PERSON"),
        ("PERSON", "Grace Hopper", "ner:PERSON"),
        ("ADDRESS", "London", "ner:LOCATION"),
        ("ADDRESS", "Lake Geneva", "ner:LOCATION"),
        ("ADDRESS", "Golden Gate Bridge", "ner:LOCATION"),  # FAC: mapped by us, not by presidio's default
    ]
    assert (found[0].start, found[0].end) == (0, 12)
    start = TEXT.index("London")
    assert (found[2].start, found[2].end) == (start, start + len("London"))
    assert all(f.score == pytest.approx(0.85) for f in found)
    assert backend.detect("Acme makes anvils.") == []  # ORG is not reported
    assert backend.detect("") == []


def test_detect_batch_matches_detect(tiny_pipeline: Path) -> None:
    backend = ner.load_ner(str(tiny_pipeline))
    texts = [TEXT, "", "nothing to see", "Grace Hopper", "London"]
    assert backend.detect_batch(texts) == [backend.detect(t) for t in texts]


def test_backend_is_cached_per_model(tiny_pipeline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = ner.load_ner(str(tiny_pipeline))
    assert ner.load_ner(str(tiny_pipeline)) is first
    monkeypatch.setenv(ner.ENV_VAR, str(tiny_pipeline))
    from_env = ner.load_ner()
    assert from_env.status.available and ner.load_ner() is from_env


def test_missing_model_is_unavailable_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ner, "_is_installed", lambda name: False)
    backend = ner.load_ner()
    assert not backend.status.available
    assert backend.status.model is None
    for name in ("en_core_web_lg", "en_core_web_md", "en_core_web_sm"):
        assert name in backend.status.reason
    assert "PERSON and ADDRESS were not scanned" in backend.status.reason
    assert "--ner PATH" in backend.status.reason
    assert backend.detect(TEXT) == []
    assert backend.detect_batch([TEXT, "x"]) == [[], []]


def test_explicit_bad_path_raises_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(FtkitError) as err:
        ner.load_ner(str(missing))
    assert str(missing) in str(err.value)
    assert "fix:" in str(err.value)

    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.cfg").write_text("this is not a spaCy config\n")
    with pytest.raises(FtkitError) as err:
        ner.load_ner(str(broken))
    assert str(broken) in str(err.value) and "did not load" in str(err.value)


def test_explicit_blank_pipeline_raises(tmp_path: Path) -> None:
    import spacy

    spacy.blank("en").to_disk(tmp_path / "blank")
    with pytest.raises(FtkitError, match="blank pipeline"):
        ner.load_ner(str(tmp_path / "blank"))


def test_env_var_naming_a_missing_package_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ner.ENV_VAR, "en_core_web_doesnotexist")
    with pytest.raises(FtkitError) as err:
        ner.load_ner()
    assert "en_core_web_doesnotexist" in str(err.value) and ner.ENV_VAR in str(err.value)


def test_to_findings_maps_and_sorts() -> None:
    results = [
        SimpleNamespace(entity_type="LOCATION", start=10, end=16, score=0.85),
        SimpleNamespace(entity_type="ORGANIZATION", start=0, end=4, score=0.85),
        SimpleNamespace(entity_type="PERSON", start=0, end=3, score=0.5),
    ]
    assert ner.to_findings(results) == [
        Finding(0, 3, "PERSON", 0.5, "ner:PERSON"),
        Finding(10, 16, "ADDRESS", 0.85, "ner:LOCATION"),
    ]


def test_importing_the_module_imports_neither_presidio_nor_spacy() -> None:
    modules = "{'presidio_analyzer', 'spacy'}"
    code = f"import sys, ftkit.pii.ner, ftkit.pii.offline; print(sorted({modules} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_installed_model_that_does_not_load_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ner, "_is_installed", lambda name: name == "en_core_web_md")

    def broken(name: str) -> None:
        raise OSError(f"[E050] Can't find model '{name}'")

    monkeypatch.setattr(ner, "_load_spacy", broken)
    backend = ner.load_ner()
    assert not backend.status.available
    assert backend.status.model == "en_core_web_md"
    assert "did not load" in backend.status.reason and "E050" in backend.status.reason
    assert backend.detect(TEXT) == []
