"""Shared fixtures: a tiny Llama built offline, tiny recipes, and copies of the real recipes to break."""

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

from tinymodel import build_tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


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
