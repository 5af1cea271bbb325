"""`ftkit recipe new NAME --from RECIPE`: a renamed, valid copy; a new base model or dataset changes exactly
what it should, and the bounds it invalidates become estimates; bad names and datasets fail with a fix."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, copy_recipe, edit_yaml, random_chats, write_jsonl
from ftkit.cli import main
from ftkit.errors import ExitCode, FtkitError
from ftkit.fork.bounds import as_estimate, changed_stages
from ftkit.fork.create import fork_recipe, suggest_name
from ftkit.recipes.load import load_recipe
from ftkit.recipes.resolve import resolve_stage
from ftkit.recipes.schema import NAME_PATTERN, Bound

SRC = "llama8b-qlora-sft"


def changed_lines(a: Path, b: Path) -> list[str]:
    diff = difflib.unified_diff(a.read_text().splitlines(), b.read_text().splitlines(), lineterm="", n=0)
    return [ln for ln in diff if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]


def my_rows(tmp_path: Path, n: int = 6) -> Path:
    rows = [json.loads(x) for x in (ROOT / f"recipes/{SRC}/data/sft-heldout.jsonl").read_text().splitlines()][:n]
    return write_jsonl(tmp_path / "my-chats.jsonl", rows)


def my_chats(tmp_path: Path, n: int = 30, name: str = "my-chats.jsonl") -> Path:
    return write_jsonl(tmp_path / name, random_chats(n))


def test_the_fork_validates_and_is_renamed_everywhere_with_every_comment_kept(recipes_root: Path):
    src = copy_recipe(SRC, recipes_root)
    result = fork_recipe("my-sft", SRC)
    fork = recipes_root / "my-sft"
    assert result.dir == fork and fork.is_dir()
    loaded = load_recipe("my-sft")  # the same checks as `ftkit recipe validate`
    assert loaded.name == "my-sft" and loaded.expected is not None and loaded.expected.recipe == "my-sft"
    assert main(["recipe", "validate", "my-sft"]) == 0
    # only the names changed: comments, anchors and layout are kept
    assert changed_lines(src / "recipe.yaml", fork / "recipe.yaml") == [f"-name: {SRC}", "+name: my-sft"]
    assert changed_lines(src / "expected-metrics.yaml", fork / "expected-metrics.yaml") == [
        f"-recipe: {SRC}",
        "+recipe: my-sft",
    ]
    for same in ("sft.axolotl.yaml", "sft.schema.json", "data/sft.jsonl", "data/sft-heldout.jsonl"):
        assert (src / same).read_bytes() == (fork / same).read_bytes(), same
    # nothing the fork changed invalidates a bound: the measured ones stay measured
    assert result.estimated == []
    assert loaded.expected.profiles["smoke"]["sft"]["train_loss_drop"].source == "measured"
    readme = (fork / "README.md").read_text()
    assert f"Forked from [`{SRC}`](../{SRC}/README.md)" in readme and result.source_commit in readme
    assert f"ftkit recipe new my-sft --from {SRC}" in readme
    assert not [p for p in recipes_root.iterdir() if p.name.startswith(".")], "no staging folder is left"


def test_a_new_base_model_and_dataset_change_what_they_should_and_bounds_become_estimates(
    recipes_root: Path, tmp_path: Path
):
    src = copy_recipe(SRC, recipes_root)
    data = my_chats(tmp_path)
    code = main(["recipe", "new", "qwen-sft", "--from", SRC, "--base-model", "Qwen/Qwen2.5-7B-Instruct",
                 "--dataset", f"sft={data}", "--json"])  # fmt: skip
    assert code == 0
    fork = recipes_root / "qwen-sft"
    loaded = load_recipe("qwen-sft")
    assert loaded.recipe.base_model == "Qwen/Qwen2.5-7B-Instruct"

    # the engine config: base model, and the first dataset now the user's training rows (a local file: one split)
    assert sorted(changed_lines(src / "sft.axolotl.yaml", fork / "sft.axolotl.yaml")) == sorted([
        "-base_model: meta-llama/Llama-3.1-8B-Instruct", "+base_model: Qwen/Qwen2.5-7B-Instruct",
        "-  - path: HuggingFaceH4/ultrachat_200k", "+  - path: data/my-chats.train.jsonl",
        "-    split: train_sft", "+    split: train",
    ])  # fmt: skip
    full = resolve_stage(loaded, "sft", "full").config
    assert full["base_model"] == "Qwen/Qwen2.5-7B-Instruct"
    assert full["datasets"][0]["path"] == "data/my-chats.train.jsonl"
    # the smoke profile still trains SmolLM2, now on a slice of the user's rows: its bounds are estimates
    smoke = resolve_stage(loaded, "sft", "smoke").config
    assert (
        smoke["base_model"] == "smollm2-135m-instruct" and smoke["datasets"][0]["path"] == "data/my-chats.smoke.jsonl"
    )
    bounds = loaded.expected.profiles  # type: ignore[union-attr]
    assert {b.source for b in bounds["smoke"]["sft"].values()} == {"estimate"}

    # the full profile's bounds were judged for Llama on ultrachat: estimates, saying what changed
    for metric in ("train_loss_tail", "eval_loss"):
        bound = bounds["full"]["sft"][metric]
        assert bound.source == "estimate" and bound.measured is None
        assert "Qwen/Qwen2.5-7B-Instruct (was meta-llama/Llama-3.1-8B-Instruct)" in (bound.note or "")
        assert "data/my-chats.train.jsonl (was HuggingFaceH4/ultrachat_200k)" in (bound.note or "")
    assert bounds["full"]["sft"]["train_loss_tail"].max == 1.4  # the judgement's value is kept
    readme = (fork / "README.md").read_text()
    assert "`Qwen/Qwen2.5-7B-Instruct` (was `meta-llama/Llama-3.1-8B-Instruct`)" in readme
    assert "license" in readme and "`data/my-chats.heldout.jsonl`: 3 rows" in readme


def test_a_changed_smoke_dataset_turns_measured_bounds_into_estimates(recipes_root: Path, tmp_path: Path):
    copy_recipe(SRC, recipes_root)
    # without the smoke profile's own dataset, the new dataset reaches the smoke profile too
    edit_yaml(recipes_root / SRC / "recipe.yaml", lambda d: d["profiles"]["smoke"].pop("stages"))
    edit_yaml(recipes_root / SRC / "sft.axolotl.yaml",
              lambda d: d["datasets"][0].update(path="data/sft.jsonl", split="train"))  # fmt: skip
    result = fork_recipe("my-sft", SRC, datasets={"sft": my_chats(tmp_path)})
    assert sorted(result.estimated) == sorted([
        "smoke.sft.train_loss_drop", "smoke.sft.train_loss_tail", "smoke.sft.eval_loss",
        "full.sft.peak_memory_gib", "full.sft.train_loss_tail", "full.sft.eval_loss",
    ])  # fmt: skip
    drop = load_recipe("my-sft").expected.profiles["smoke"]["sft"]["train_loss_drop"]  # type: ignore[union-attr]
    assert drop.source == "estimate" and drop.measured is None and drop.min == 1.0
    assert f"the value measured for {SRC} (2.756, commit a7aa5e6, 2026-11-24) does not apply" in (drop.note or "")


def test_a_dataset_of_a_stage_that_others_start_from_changes_their_bounds_too(recipes_root: Path, tmp_path: Path):
    """The TRL fixture: flow-style YAML, the smoke profile trains on the configs' own data paths."""
    copy_recipe("tiny-trl-sft-dpo", recipes_root)
    result = fork_recipe("tiny-fork", "tiny-trl-sft-dpo", datasets={"sft": my_rows(tmp_path)})
    assert sorted(result.estimated) == ["smoke.dpo.rewards_margin_delta", "smoke.sft.train_loss_drop"]
    loaded = load_recipe("tiny-fork")
    assert loaded.stage_files("sft").config.data["dataset"] == {
        "path": "data/my-chats.jsonl", "split": "train", "val_fraction": 0.2,
    }  # fmt: skip
    dpo = loaded.expected.profiles["smoke"]["dpo"]["rewards_margin_delta"]  # type: ignore[union-attr]
    assert "it starts from stage sft, which changed" in (dpo.note or "")
    assert result.comments_lost == []


def test_changed_stages_and_as_estimate_are_plain_functions():
    before = {("full", "sft"): ("a", ("x",)), ("full", "dpo"): ("a", ("y",)), ("smoke", "sft"): ("s", ("x",))}
    after = {("full", "sft"): ("a", ("z",)), ("full", "dpo"): ("a", ("y",)), ("smoke", "sft"): ("s", ("x",))}
    changed = changed_stages(before, after, {"sft": None, "dpo": "sft"})
    assert changed == {("full", "sft"): ["stage sft trains on z (was x)"],
                       ("full", "dpo"): ["it starts from stage sft, which changed"]}  # fmt: skip
    estimate = as_estimate(Bound(max=2.0, source="estimate"), "src", ["base model b (was a)"])
    note = "forked from src with base model b (was a); the source's estimate had no note"
    assert estimate == {"max": 2.0, "source": "estimate", "note": note}


@pytest.mark.parametrize("bad", ["My Recipe", "-leading-dash", "a/b", "Ünïcode"])
def test_a_bad_name_is_refused_with_a_valid_suggestion(recipes_root: Path, bad: str):
    copy_recipe(SRC, recipes_root)
    with pytest.raises(FtkitError) as exc:
        fork_recipe(bad, SRC)
    [p] = exc.value.problems
    assert p.field == "NAME" and p.fix and suggest_name(bad) in p.fix
    assert re.fullmatch(NAME_PATTERN, suggest_name(bad))


def test_an_existing_name_is_refused_unless_forced(recipes_root: Path, capsys: pytest.CaptureFixture[str]):
    copy_recipe(SRC, recipes_root)
    fork_recipe("mine", SRC)
    (recipes_root / "mine" / "stale.txt").write_text("old fork")
    assert main(["recipe", "new", "mine", "--from", SRC]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert main(["recipe", "new", "mine", "--from", SRC, "--force"]) == 0
    assert not (recipes_root / "mine" / "stale.txt").exists()
    with pytest.raises(FtkitError, match="the recipe being forked"):
        fork_recipe(SRC, SRC, force=True)


def test_a_dataset_that_breaks_the_stage_schema_writes_nothing(recipes_root: Path, tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    copy_recipe(SRC, recipes_root)
    good = json.loads(my_rows(tmp_path).read_text().splitlines()[0])
    bad = write_jsonl(tmp_path / "bad.jsonl", [good, {"messages": [{"role": "user", "content": "no answer"}]}])
    assert main(["recipe", "new", "mine", "--from", SRC, "--dataset", f"sft={bad}"]) == ExitCode.DATA_INVALID
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "nothing was written" in err and "ftkit data validate" in err
    assert sorted(p.name for p in recipes_root.iterdir()) == [SRC]


def test_a_dataset_for_an_unknown_stage_or_a_missing_file_is_refused(recipes_root: Path, tmp_path: Path):
    copy_recipe(SRC, recipes_root)
    with pytest.raises(FtkitError) as exc:
        fork_recipe("mine", SRC, datasets={"dpo": my_rows(tmp_path)})
    assert exc.value.problems[0].fix == "stages are: sft"
    with pytest.raises(FtkitError, match="dataset file not found"):
        fork_recipe("mine", SRC, datasets={"sft": tmp_path / "nope.jsonl"})
    assert main(["recipe", "new", "mine", "--from", SRC, "--dataset", "sft"]) == ExitCode.USAGE
    assert sorted(p.name for p in recipes_root.iterdir()) == [SRC]


def test_a_fork_that_would_not_validate_leaves_nothing_and_keeps_an_old_fork(
    recipes_root: Path, monkeypatch: pytest.MonkeyPatch
):
    copy_recipe(SRC, recipes_root)
    fork_recipe("mine", SRC)
    before = sorted(p.name for p in (recipes_root / "mine").iterdir())

    def break_the_staged_copy(src, work: Path, result) -> None:  # type: ignore[no-untyped-def]
        with (work / "data" / "sft.jsonl").open("a") as fh:
            fh.write("not json\n")

    monkeypatch.setattr("ftkit.fork.create._review_notes", break_the_staged_copy)
    with pytest.raises(FtkitError) as exc:
        fork_recipe("mine", SRC, force=True)
    assert "does not validate; nothing was written" in exc.value.title
    assert str(recipes_root / "mine" / "data" / "sft.jsonl") in [p.file for p in exc.value.problems]
    assert sorted(p.name for p in (recipes_root / "mine").iterdir()) == before
    assert not [p for p in recipes_root.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
@pytest.mark.recipe_smoke  # minutes on 2 cores: `nox -s smoke` runs it (with every recipe's smoke profile)
def test_the_fork_runs_its_smoke_profile_unchanged(recipes_root: Path, tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    """The fork of the shipped SFT recipe trains SmolLM2 (2 steps), merges, exports and evaluates, as the source."""
    monkeypatch.setenv("FTKIT_CACHE", str(ROOT / ".cache"))
    copy_recipe(SRC, recipes_root)
    fork_recipe("my-sft", SRC)
    runs = tmp_path / "runs"
    code = main(["recipe", "run", "my-sft", "--profile", "smoke", "--runs-dir", str(runs), "--set", "max_steps=2"])
    [run_dir] = list((runs / "my-sft").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    sft = metrics["stages"]["sft"]
    assert metrics["recipe"] == "my-sft" and sft["returncode"] == 0 and sft["steps"] == 2
    assert Path(sft["merged_dir"]).is_dir() and sft["merge"]["check"]["passed"]
    [gguf] = metrics["export"]["artifacts"]
    assert gguf["format"] == "gguf" and gguf["passed"] and Path(gguf["path"]).name == "my-sft.f16.gguf"
    assert metrics["export"]["eval"]["passed"] and (run_dir / "eval.json").is_file()
    # 2 steps cannot meet the 12-step bounds (the gate may fail); everything before the gate must pass
    assert code in (0, 1) and metrics["status"] in ("passed", "failed-metrics")
    changes = yaml.safe_load((run_dir / "resolved" / "sft.changes.yaml").read_text())
    assert {"key": "max_steps", "from": 12, "to": 2, "origin": "--set max_steps"} in changes


def test_yaml_text_edits_keep_comments_and_fall_back_to_a_rewrite_only_when_they_must():
    from ftkit.yaml_edit import TextEditError, edit_or_rewrite, edit_text

    text = "# head\na: 1  # one\nb: {path: x, split: s}  # flow\nc:\n  - &anc {v: 1}\n  - *anc\n"
    out = edit_text(text, {"a": 2, "b.path": "data/my file, 2.jsonl"})
    assert out.splitlines()[1] == "a: 2  # one" and "# flow" in out and "&anc" in out
    assert yaml.safe_load(out)["b"] == {"path": "data/my file, 2.jsonl", "split": "s"}  # quoted inside the flow
    with pytest.raises(TextEditError):
        edit_text(text, {"missing.key": 1})
    new, kept = edit_or_rewrite(text, {"c.0": {"v": 3}})  # the anchor's alias would change too: rewritten
    assert not kept and new.startswith("# head\n") and yaml.safe_load(new)["c"] == [{"v": 3}, {"v": 1}]
