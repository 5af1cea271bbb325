"""A fork's data is the user's in every profile: the full profile trains on their rows, the smoke profile on a
slice of them, the evaluation scores their held-out rows; `recipe validate`, the PII gate and the leakage check
look at exactly those rows, and each refusal is exit 3 naming the file, the rows and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import copy_recipe, write_jsonl
from conftest import random_chats as chats
from ftkit.cli import main
from ftkit.data.readers import iter_records
from ftkit.data.text import row_text
from ftkit.errors import ExitCode, FtkitError, Problem
from ftkit.fork.create import fork_recipe
from ftkit.fork.data import heldout_size, rows_in_split, split_heldout, spread
from ftkit.pipeline.export_stage import HELDOUT_FIELD, require_exports_possible
from ftkit.recipes.load import data_counts, load_recipe
from ftkit.recipes.resolve import resolve_stage
from ftkit.yaml_edit import edit_or_rewrite, edit_text

SRC = "llama8b-qlora-sft"
SECRET = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example access key id


def texts(path: Path) -> list[str]:
    return [row_text(r.row) for r in iter_records(path) if r.error is None]


def test_split_slices_spread_and_heldout_sizes_follow_their_rules():
    assert rows_in_split("train", 48) == 48 and rows_in_split(None, 7) == 7
    assert rows_in_split("train[:16]", 48) == 16 and rows_in_split("train[:16]", 10) == 10
    assert rows_in_split("train[10:20]", 48) == 10 and rows_in_split("train[:25%]", 48) == 12
    assert rows_in_split("train[-5:]", 48) == 5
    assert spread(10, 4) == [0, 2, 5, 7] and spread(3, 8) == [0, 1, 2]
    assert len(set(spread(1000, 48))) == 48 and max(spread(1000, 48)) >= 950  # the whole file, not its head
    assert heldout_size(30) == 3 and heldout_size(5) == 1 and heldout_size(100_000) == 200


def test_a_split_holds_rows_out_and_moves_duplicates_of_training_rows_back(tmp_path: Path):
    rows = chats(40)
    rows += [dict(r, id=f"dup-{r['id']}") for r in rows[:10]]  # 10 exact repeats: a held-out copy would leak
    src = write_jsonl(tmp_path / "mine.jsonl", rows)
    train, held = tmp_path / "t.jsonl", tmp_path / "h.jsonl"
    n_train, n_held, moved = split_heldout(src, train, held, len(rows))
    assert n_train + n_held == len(rows) == len(texts(train)) + len(texts(held))  # nothing lost
    assert n_held == len(texts(held)) and 1 <= n_held <= heldout_size(len(rows))
    assert not set(texts(held)) & set(texts(train))  # no held-out row is trained on
    assert sorted(texts(train) + texts(held)) == sorted(row_text(r) for r in rows)
    # the same file splits the same way (seeded)
    split_heldout(src, tmp_path / "t2.jsonl", tmp_path / "h2.jsonl", len(rows))
    assert (tmp_path / "h2.jsonl").read_text() == held.read_text()
    assert moved == n_train - (len(rows) - heldout_size(len(rows)))


def test_a_fork_trains_every_profile_on_the_users_rows_and_evaluates_their_held_out_rows(
    recipes_root: Path, tmp_path: Path
):
    copy_recipe(SRC, recipes_root)
    mine = write_jsonl(tmp_path / "support.jsonl", chats(120))
    result = fork_recipe("support-bot", SRC, datasets={"sft": mine})
    fork = recipes_root / "support-bot"
    loaded = load_recipe("support-bot")
    full = resolve_stage(loaded, "sft", "full").config["datasets"][0]
    smoke = resolve_stage(loaded, "sft", "smoke").config["datasets"][0]
    heldout = fork / loaded.recipe.export.eval.heldout  # type: ignore[union-attr]
    assert (full["path"], full["split"]) == ("data/support.train.jsonl", "train")
    assert (smoke["path"], smoke["split"]) == ("data/support.smoke.jsonl", "train")
    assert loaded.recipe.stages[0].sample == "data/support.smoke.jsonl"
    train, slice_, held = texts(fork / full["path"]), texts(fork / smoke["path"]), texts(heldout)
    assert len(train) + len(held) == 120 and len(held) == heldout_size(120)
    assert len(slice_) == 48 and set(slice_) <= set(train)  # as many rows as the source's smoke run
    assert not set(held) & set(train)
    # the source's sample and held-out rows are gone: nothing of the fork reads them
    assert sorted(p.name for p in (fork / "data").iterdir()) == [
        "README.md", "support.heldout.jsonl", "support.smoke.jsonl", "support.train.jsonl",
    ]  # fmt: skip
    assert "support.train.jsonl" in (fork / "data" / "README.md").read_text()
    [d] = result.datasets
    assert (d.train_rows, d.smoke_rows, d.heldout_rows) == (len(train), 48, len(held))
    # `recipe validate` checked every file a profile trains on, not only the sample
    assert data_counts(loaded) == {"data/support.train.jsonl": {"rows": len(train), "valid": len(train)},
                                   "data/support.smoke.jsonl": {"rows": 48, "valid": 48}}  # fmt: skip


def test_held_out_rows_given_with_heldout_are_kept_and_refused_when_they_repeat_training_rows(
    recipes_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    copy_recipe(SRC, recipes_root)
    rows = chats(60)
    mine, held = write_jsonl(tmp_path / "mine.jsonl", rows[:50]), write_jsonl(tmp_path / "held.jsonl", rows[50:])
    result = fork_recipe("ok-bot", SRC, datasets={"sft": mine}, heldouts={"sft": held})
    assert result.datasets[0].heldout == "data/held.jsonl" and result.datasets[0].train == "data/mine.jsonl"
    assert (recipes_root / "ok-bot" / "data" / "held.jsonl").read_bytes() == held.read_bytes()

    leaky = write_jsonl(tmp_path / "leaky.jsonl", [*rows[50:], rows[3], rows[7]])  # rows 11 and 12 are trained on
    code = main(["recipe", "new", "leaky-bot", "--from", SRC, "--dataset", f"sft={mine}", "--heldout", f"sft={leaky}"])
    assert code == ExitCode.DATA_INVALID
    err = capsys.readouterr().err
    assert f"{leaky}:11" in err and f"{leaky}:12" in err and "2 exact + 0 near of 12 held-out rows" in err
    assert "ftkit data split" in err and "nothing was written" in err
    assert not (recipes_root / "leaky-bot").exists()


def test_heldout_must_name_the_evaluated_stage_with_its_dataset(recipes_root: Path, tmp_path: Path):
    copy_recipe("llama8b-qlora-dpo", recipes_root)
    copy_recipe(SRC, recipes_root)
    mine = write_jsonl(tmp_path / "mine.jsonl", chats(20))
    with pytest.raises(FtkitError) as exc:
        fork_recipe("x", "llama8b-qlora-dpo", datasets={"sft": mine}, heldouts={"sft": mine})
    assert exc.value.problems[0].fix == "write --heldout dpo=PATH"
    with pytest.raises(FtkitError, match="without --dataset dpo"):
        fork_recipe("x", "llama8b-qlora-dpo", datasets={"sft": mine}, heldouts={"dpo": mine})
    with pytest.raises(FtkitError, match="too few to hold some out") as exc:
        fork_recipe("x", SRC, datasets={"sft": write_jsonl(tmp_path / "few.jsonl", chats(5))})
    assert exc.value.code == ExitCode.DATA_INVALID and "--heldout" in (exc.value.problems[0].fix or "")


def test_a_fork_whose_training_rows_break_the_schema_is_refused_by_recipe_validate(
    recipes_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    copy_recipe(SRC, recipes_root)
    fork_recipe("my-bot", SRC, datasets={"sft": write_jsonl(tmp_path / "mine.jsonl", chats(60))})
    train = recipes_root / "my-bot" / "data" / "mine.train.jsonl"
    lines = train.read_text().splitlines()
    for i in (4, 20, 40):  # the user edits their data: three rows lose their answer
        row = json.loads(lines[i])
        lines[i] = json.dumps(row | {"messages": row["messages"][:1]})
    train.write_text("\n".join(lines) + "\n")
    assert main(["recipe", "validate", "my-bot"]) == ExitCode.DATA_INVALID
    out = capsys.readouterr().out
    assert all(f"{train}:{i + 1}" in out for i in (4, 20, 40))
    assert f"3 of {len(lines)} rows break sft.schema.json (profile 'full', stage 'sft')" in out
    assert "--quarantine" in out


@pytest.mark.slow
def test_a_planted_secret_in_the_users_rows_stops_the_forks_own_smoke_run(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):  # type: ignore[no-untyped-def]
    tiny_recipe("tiny-axolotl-sft-dpo")
    turn = lambda i: [{"role": "user", "content": f"question {i}?"}, {"role": "assistant", "content": f"answer {i}."}]  # noqa: E731
    rows = [{"messages": turn(i)} for i in range(20)]  # short rows: the fixture's sequence length is small
    rows[0]["messages"][1]["content"] += f" Use key {SECRET} and card 4111 1111 1111 1111."
    mine = write_jsonl(tmp_path / "mine.jsonl", rows)
    result = fork_recipe("leaky", "tiny-axolotl-sft-dpo", datasets={"sft": mine})
    assert any("1 rows carry SECRET" in note for note in result.review)  # said at fork time already
    runs = tmp_path / "runs"
    code = main(["recipe", "run", "leaky", "--profile", "smoke", "--runs-dir", str(runs)])  # the `next:` command
    assert code == ExitCode.DATA_INVALID
    err = capsys.readouterr().err
    assert "PII gate" in err and "mine.smoke.jsonl" in err and "SECRET" in err and SECRET not in err
    [run_dir] = (runs / "leaky").iterdir()
    assert not list(run_dir.glob("sft/**/adapter_model.safetensors"))  # nothing trained


def test_held_out_rows_that_leak_into_training_are_a_data_problem_not_a_machine_one():
    leak = Problem("3 exact + 0 near of 16 held-out rows are also rows of x.jsonl", "h.jsonl", None, HELDOUT_FIELD)
    with pytest.raises(FtkitError) as exc:
        require_exports_possible([leak, Problem("AWQ calibration needs a CUDA GPU", "r.yaml", None, "export.quantize")])
    assert exc.value.code == ExitCode.DATA_INVALID and exc.value.problems == [leak]
    with pytest.raises(FtkitError) as exc:
        require_exports_possible([Problem("AWQ calibration needs a CUDA GPU", "r.yaml", None, "export.quantize")])
    assert exc.value.code == ExitCode.ENVIRONMENT


def test_yaml_edits_add_missing_keys_to_block_mappings_and_address_keys_with_dots():
    text = "# head\nprofiles:\n  smoke:\n    base: x  # the base\n  full: {}\nexport: {a: 1}\n"
    stage = ("profiles", "smoke", "stages", "sft")
    out = edit_text(text, {(*stage, "datasets.0.path"): "d.jsonl", (*stage, "datasets.0.split"): "train"}, insert=True)
    assert "    base: x  # the base\n    stages:\n      sft:\n        datasets.0.path: d.jsonl\n" in out
    with pytest.raises(ValueError):
        edit_text(text, {"profiles.smoke.stages": 1})  # without insert a missing key is an error
    new, kept = edit_or_rewrite(text, {"export.b": 2})  # a flow mapping cannot take a key in place: rewritten
    assert not kept and "b: 2" in new


@pytest.mark.model
def test_a_dataset_whose_every_row_axolotl_would_drop_as_too_long_is_refused_before_training(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):  # type: ignore[no-untyped-def]
    tiny_recipe("tiny-axolotl-sft-dpo")
    answer = " ".join(["word"] * 80)
    long_answers = [{"messages": [{"role": "user", "content": "hi?"}, {"role": "assistant", "content": answer}]}] * 8
    data = write_jsonl(tmp_path / "long.jsonl", long_answers)
    runs = tmp_path / "runs"
    code = main(["recipe", "run", "tiny-axolotl-sft-dpo", "--profile", "smoke", "--runs-dir", str(runs),
                 "--set", "sft.sequence_len=32", "--set", f"sft.datasets.0.path={data}"])  # fmt: skip
    assert code == ExitCode.DATA_INVALID
    err = " ".join(capsys.readouterr().err.split())
    assert "is longer than the sequence length (32 tokens" in err and "axolotl leaves such rows out" in err
    assert "excess_length_strategy: truncate" in err
    [run_dir] = (runs / "tiny-axolotl-sft-dpo").iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["refused"]["check"] == "data"
