"""Shared fixtures: a tiny Llama built offline, tiny recipes, copies of the real recipes to break, the fakes
(tests/fakes.py), and the layers' guard (tests/model_guard.py: an unmarked test may not load a model)."""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(Path(__file__).parent))

import model_guard  # noqa: E402
from fakes import RECIPE, FakeEngine, fake_merges  # noqa: E402
from tinymodel import build_tiny_llama  # noqa: E402
from trained_run import TrainedRun  # noqa: E402
from trained_run import train as train_tiny_trl  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    model_guard.install()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture is built: an unmarked test may not ask for one that builds a model."""
    if built := model_guard.MODEL_FIXTURES.intersection(item.fixturenames):
        with model_guard.refusing(model_guard.unmarked([m.name for m in item.iter_markers()])):
            model_guard.refuse(f"fixture {', '.join(sorted(built))}", pytrace=False, test=item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
    """An unmarked test's setup (module and session fixtures included), call and teardown refuse model loads."""
    markers = [m.name for m in item.iter_markers()]
    with model_guard.refusing(model_guard.unmarked(markers), run_allowed=model_guard.CONFIG_ERROR in markers):
        yield


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_trl_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> TrainedRun:
    """`tiny-trl-sft-dpo` trained once with its exports (tests/trained_run.py), for tests that only read the run."""
    return train_tiny_trl(tmp_path_factory.mktemp("tiny-trl-run"), tiny_llama)


@pytest.fixture
def recipes_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty recipes/ folder for this test (FTKIT_RECIPES points at it)."""
    root = tmp_path / "recipes"
    root.mkdir()
    monkeypatch.setenv("FTKIT_RECIPES", str(root))
    return root


def copy_recipe(src_name: str, root: Path, new_name: str | None = None) -> Path:
    src = ROOT / "recipes" / src_name if (ROOT / "recipes" / src_name).is_dir() else FIXTURES / "recipes" / src_name
    dst = root / (new_name or src_name)
    shutil.copytree(src, dst)
    for schema in ("sft.schema.json", "dpo.schema.json"):  # fixtures share the real recipes' schemas
        if not (dst / schema).exists():
            shutil.copy(ROOT / "recipes" / "llama8b-qlora-dpo" / schema, dst / schema)
    if new_name:
        edit_yaml(dst / "recipe.yaml", lambda d: d.update(name=new_name))
        edit_yaml(dst / "expected-metrics.yaml", lambda d: d.update(recipe=new_name))
    return dst


def edit_yaml(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def json_shape(value: object) -> object:
    """A JSON value with every leaf replaced by its type name: two rows of equal shape differ only in values."""
    if isinstance(value, dict):
        return {k: json_shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_shape(v) for v in value]
    return type(value).__name__


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def stub_recipe(recipes_root: Path):  # type: ignore[no-untyped-def]
    """Factory: `tiny_recipe` for tests that never load the model: the smoke profile's base model is a path that does
    not exist, so no tiny Llama is built and such a test stays in the fast layer."""

    def make(name: str) -> Path:
        dst = copy_recipe(name, recipes_root)
        stub = str(recipes_root.parent / "no-model-here")
        edit_yaml(dst / "recipe.yaml", lambda d: d["profiles"]["smoke"].update(base_model=stub))
        return dst

    return make


@pytest.fixture
def tiny_recipe(recipes_root: Path, tiny_llama: Path):  # type: ignore[no-untyped-def]
    """Factory: copy a fixture recipe and point its smoke profile at the tiny Llama."""

    def make(name: str) -> Path:
        dst = copy_recipe(name, recipes_root)
        edit_yaml(dst / "recipe.yaml", lambda d: d["profiles"]["smoke"].update(base_model=str(tiny_llama)))
        return dst

    return make


def random_chats(n: int, seed: int = 0) -> list[dict]:
    """`n` distinct two-turn chats of random words (ids c0, c1, …): no two rows are near-duplicates."""
    rng = random.Random(seed)
    vocab = [f"w{rng.randrange(10**6):06d}" for _ in range(400)]
    say = lambda k: " ".join(rng.choice(vocab) for _ in range(k))  # noqa: E731
    turns = lambda: [{"role": "user", "content": say(14) + "?"}, {"role": "assistant", "content": say(20) + "."}]  # noqa: E731
    return [{"id": f"c{i}", "messages": turns()} for i in range(n)]


@pytest.fixture
def fake_engine(tiny_recipe, monkeypatch: pytest.MonkeyPatch) -> FakeEngine:  # type: ignore[no-untyped-def]
    """The fixture recipe `fakes.RECIPE`, run by `FakeEngine` (trains nothing) with `fake_merges`; the engine holds
    the merged stages (`merged`) and the recipe's folder (`recipe_dir`)."""
    engine = FakeEngine()
    engine.recipe_dir = tiny_recipe(RECIPE)
    monkeypatch.setattr("ftkit.pipeline.run.get_engine", lambda name: engine)
    engine.merged = fake_merges(monkeypatch)
    return engine
