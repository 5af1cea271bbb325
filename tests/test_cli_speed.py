"""`ftkit --help` and config errors answer fast: the CLI's entry module imports no engine, torch or transformers,
and a bad `--set`, an unknown recipe, profile or stage, a YAML syntax error and an unknown engine key are reported
before any engine is imported (docs/running-recipes.md, "What is checked before the engine is imported").

Each case runs the CLI in a fresh interpreter and asserts which modules it imported, not how long it took: the
test machines are shared. One loose wall-time bound stays (see `test_a_bad_set_key_is_answered_within_seconds`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, copy_recipe

# These launch `ftkit recipe run` and assert the child stopped before importing any engine (tests/model_guard.py).
pytestmark = pytest.mark.config_error

HEAVY = ("torch", "transformers", "axolotl", "trl", "peft", "datasets", "deepspeed", "bitsandbytes", "accelerate")
# Runs `ftkit ARGS…` in this interpreter, then prints the heavy top-level modules it imported.
WRAPPER = f"""
import json, sys
from ftkit.cli import main
rc = main(sys.argv[1:])
print("IMPORTED " + json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))
sys.exit(rc)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "tools"), env.get("PYTHONPATH", "")) if p)
    env.setdefault("FTKIT_RECIPES", str(ROOT / "recipes"))
    return env


def _ftkit(*args: str) -> tuple[int, str, list[str]]:
    """Exit code, stdout + stderr, and the heavy modules imported by `ftkit ARGS` in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True, cwd=ROOT,
                          env=_env(), timeout=300)  # fmt: skip
    marker = next(line for line in proc.stdout.splitlines() if line.startswith("IMPORTED "))
    return proc.returncode, proc.stdout + proc.stderr, json.loads(marker.removeprefix("IMPORTED "))


def test_importing_the_cli_imports_no_engine_and_takes_under_a_second():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import ftkit.cli"], capture_output=True,
                          text=True, cwd=ROOT, env=_env(), check=True)  # fmt: skip
    rows = [line.split("|") for line in proc.stderr.splitlines() if line.startswith("import time:")]
    names = {row[2].strip() for row in rows[1:]}  # the first row is the header
    assert not {n for n in names if n.split(".")[0] in HEAVY}
    # `import ftkit.cli` is the top-level rows `ftkit` and `ftkit.cli`; about 0.1 s on an idle machine
    cumulative_us = sum(int(row[1]) for row in rows[1:] if row[2].rstrip() in (" ftkit", " ftkit.cli"))
    assert 0 < cumulative_us < 1_000_000


def test_help_imports_no_engine():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ftkit", "--help"], capture_output=True,
                          text=True, cwd=ROOT, env=_env())  # fmt: skip
    assert proc.returncode == 0 and "recipe" in proc.stdout
    names = {line.split("|")[2].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not {n for n in names if n.split(".")[0] in HEAVY}


def test_a_mistyped_set_key_is_refused_before_axolotl_is_imported(tmp_path: Path):
    rc, out, imported = _ftkit("recipe", "run", "llama8b-qlora-sft", "--profile", "smoke", "--set",
                               "lerning_rate=1e-4", "--runs-dir", str(tmp_path))  # fmt: skip
    assert rc == 2 and imported == []
    assert "unknown Axolotl key 'lerning_rate'" in out and "did you mean 'learning_rate'?" in out
    assert "--set lerning_rate" in out
    assert not any(tmp_path.iterdir()), "refused before a run dir was made"


def test_a_set_for_an_unknown_stage_is_refused_before_axolotl_is_imported(tmp_path: Path):
    rc, out, imported = _ftkit("recipe", "run", "llama8b-qlora-sft", "--set", "sfy.max_steps=5",
                               "--runs-dir", str(tmp_path))  # fmt: skip
    assert rc == 2 and imported == []
    assert "'sfy' is not a stage of llama8b-qlora-sft" in out and "did you mean sft.max_steps=5" in out


def test_a_mistyped_trainer_key_of_a_trl_engine_is_refused_before_trl_is_imported(tmp_path: Path):
    rc, out, imported = _ftkit("recipe", "run", "mistral7b-qlora-sft-unsloth", "--set",
                               "trainer.lerning_rate=1e-4", "--runs-dir", str(tmp_path))  # fmt: skip
    assert rc == 2 and imported == []
    assert "unknown trainer argument 'lerning_rate'" in out and "did you mean 'learning_rate'?" in out


def test_an_unknown_recipe_is_refused_with_a_suggestion_and_no_engine_imported(tmp_path: Path):
    rc, out, imported = _ftkit("recipe", "run", "llama8b-qlora-sfx", "--runs-dir", str(tmp_path))
    assert rc == 2 and imported == []
    assert "no recipe named 'llama8b-qlora-sfx'" in out and "did you mean 'llama8b-qlora-sft'?" in out


def test_an_unknown_profile_is_a_usage_error_before_any_engine_or_gpu_check(tmp_path: Path):
    rc, out, imported = _ftkit("recipe", "run", "llama8b-qlora-sft", "--profile", "smok", "--runs-dir", str(tmp_path))
    assert rc == 2 and imported == []
    assert "has no profile 'smok'" in out and "use one of full, smoke" in out
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_yaml_syntax_error_is_reported_with_its_line_before_any_engine_is_imported(
    command: str, recipes_root: Path, tmp_path: Path
):
    rdir = copy_recipe("llama8b-qlora-sft", recipes_root)
    text = (rdir / "recipe.yaml").read_text(encoding="utf-8")
    (rdir / "recipe.yaml").write_text(text.replace("  full: {}", "  full: {", 1), encoding="utf-8")
    line = text.splitlines().index("  full: {}") + 1
    extra = ["--runs-dir", str(tmp_path / "runs")] if command == "run" else []
    rc, out, imported = _ftkit("recipe", command, "llama8b-qlora-sft", *extra)
    assert rc == 2 and imported == []
    assert f"recipe.yaml:{line}:" in out and "YAML syntax error" in out and f"close the '{{' at line {line}" in out


def test_an_unknown_key_in_an_engine_yaml_is_reported_by_validate_before_axolotl_is_imported(recipes_root: Path):
    rdir = copy_recipe("llama8b-qlora-sft", recipes_root)
    config = rdir / "sft.axolotl.yaml"
    lines = config.read_text(encoding="utf-8").splitlines(keepends=True)
    at = next(i for i, s in enumerate(lines) if s.startswith("lora_dropout:"))
    lines.insert(at + 1, "lora_dropuot: 0.1\n")
    config.write_text("".join(lines), encoding="utf-8")
    rc, out, imported = _ftkit("recipe", "validate", "llama8b-qlora-sft")
    assert rc == 2 and imported == []
    assert f"sft.axolotl.yaml:{at + 2}" in out and "unknown Axolotl key 'lora_dropuot'" in out
    assert "did you mean 'lora_dropout'?" in out


def test_a_bad_set_key_is_answered_within_seconds(tmp_path: Path):
    # About 0.5 s on an idle machine (8-10 s when Axolotl's schema was imported first). The bound is 5 s because
    # CI and dev machines run several test processes on two cores; the import assertions above are the real check.
    start = time.monotonic()
    rc, _, _ = _ftkit("recipe", "run", "llama8b-qlora-sft", "--set", "bad_key=1", "--runs-dir", str(tmp_path))
    assert rc == 2 and time.monotonic() - start < 5.0


def test_a_stored_key_list_is_used_only_for_the_version_it_was_made_from(monkeypatch: pytest.MonkeyPatch):
    from ftkit.engines import known_keys

    stored = known_keys._stored()["peft.LoraConfig"]
    read: list[str] = []
    monkeypatch.setitem(known_keys.SOURCES, "peft.LoraConfig", ("peft", lambda: read.append("live") or {"r"}))
    for version, expected in ((stored["version"], set(stored["keys"])), (None, set(stored["keys"])), ("0.0.1", {"r"})):
        known_keys.known_keys.cache_clear()
        monkeypatch.setattr(known_keys, "installed_version", lambda _dist, v=version: v)
        assert known_keys.known_keys("peft.LoraConfig") == expected
    known_keys.known_keys.cache_clear()
    assert read == ["live"], "the installed package is read only when its version differs"


@pytest.mark.slow
def test_the_stored_engine_keys_match_the_installed_axolotl_trl_and_peft():
    # imports Axolotl, TRL and PEFT (about 10 s); after changing their pins run scripts/engine_keys.py --write
    from ftkit.engines import known_keys

    stored = known_keys._stored()
    assert set(stored) == set(known_keys.SOURCES)
    for schema, (dist, _) in known_keys.SOURCES.items():
        assert stored[schema]["version"] == known_keys.installed_version(dist), schema
        assert set(stored[schema]["keys"]) == known_keys.live_keys(schema), schema
