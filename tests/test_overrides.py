from __future__ import annotations

import pytest
from ftkit.errors import FtkitError
from ftkit.recipes.overrides import apply_overrides, parse_set
from ftkit.recipes.resolve import route_sets


def test_set_values_are_parsed_as_yaml_scalars():
    assert parse_set(["lr=1e-4", "steps=5", "flag=true", "name=abc", "lst=[a, b]"]) == [
        ("lr", 1e-4),
        ("steps", 5),
        ("flag", True),
        ("name", "abc"),
        ("lst", ["a", "b"]),
    ]


def test_set_without_equals_is_a_usage_error_with_a_fix():
    with pytest.raises(FtkitError) as exc:
        parse_set(["max_steps"])
    assert "KEY=VALUE" in str(exc.value) and "fix:" in str(exc.value)


def test_dotted_overrides_index_lists_and_leave_the_original_untouched():
    base = {"datasets": [{"path": "hub/id", "type": "chat_template"}], "special_tokens": {"pad_token": "x"}}
    out = apply_overrides(base, {"datasets.0.path": "data/a.jsonl", "special_tokens.pad_token": "y", "new.key": 1})
    assert out["datasets"][0] == {"path": "data/a.jsonl", "type": "chat_template"}
    assert out["special_tokens"]["pad_token"] == "y" and out["new"] == {"key": 1}
    assert base["datasets"][0]["path"] == "hub/id"


def test_override_past_the_end_of_a_list_names_the_key():
    with pytest.raises(FtkitError) as exc:
        apply_overrides({"datasets": [{}]}, {"datasets.3.path": "x"})
    assert "datasets.3.path" in str(exc.value)


def test_sets_route_to_one_stage_when_prefixed_with_its_name():
    routed = route_sets([("sft.max_steps", 3), ("learning_rate", 0.1), ("report_to", "tensorboard")], ["sft", "dpo"])
    assert routed.per_stage == {"sft": {"max_steps": 3}}
    assert routed.common == {"learning_rate": 0.1}
    assert routed.report_to == "tensorboard"


def test_unknown_report_backend_is_rejected():
    with pytest.raises(FtkitError, match="report_to"):
        route_sets([("report_to", "neptune")], [])
