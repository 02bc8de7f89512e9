"""The technique x task table: complete, drives `ftlaunch techniques`, rejects an unsupported pair at
validation with its reason, and every supported pair has a training test."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ftlaunch.core import spec, techniques
from ftlaunch.core.techniques import Task, Technique

REPO = Path(__file__).resolve().parents[2]


def test_every_technique_has_description_rate_and_settings():
    for t in Technique:
        assert techniques.DESCRIPTIONS[t] and techniques.DEFAULT_LEARNING_RATE[t] > 0
        assert t in spec.TECHNIQUE_ARGS
    for task in Task:
        assert techniques.TASK_DESCRIPTIONS[task] and task in spec.TASK_ARGS


def test_table_rows_follow_the_unsupported_dict():
    rows = techniques.table()
    assert [r["technique"] for r in rows] == [t.value for t in Technique]
    for row in rows:
        for task in Task:
            assert row["tasks"][task.value] == techniques.unsupported_reason(row["technique"], task)


def test_an_unsupported_pair_is_rejected_at_validation_with_its_reason(monkeypatch):
    reason = "a test reason; use lora"
    monkeypatch.setitem(techniques.UNSUPPORTED, (Technique.PREFIX, Task.DPO), reason)
    assert techniques.supported_techniques("dpo") == [t for t in Technique if t is not Technique.PREFIX]
    with pytest.raises(spec.errors.UserError) as info:
        spec.loads("name: x\nmodel: a/b\ndataset: {path: d}\ntechnique: prefix\ntask: dpo\n")
    assert reason in info.value.render()


def test_every_supported_pair_is_trained_by_the_grid_test():
    """tests/containers/test_trainer_grid.py parametrises over the supported pairs of this very table."""
    source = (REPO / "tests" / "containers" / "test_trainer_grid.py").read_text()
    tree = ast.parse(source)
    assigns = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "PAIRS"]
    assert assigns, "the grid test must build PAIRS from the table"
    text = ast.unparse(assigns[0].value)
    assert "techniques.unsupported_reason" in text and "techniques.Technique" in text and "techniques.Task" in text
    assert "@pytest.mark.parametrize('technique,task', PAIRS" in ast.unparse(tree).replace('"', "'")


def test_rl_needs_a_reward_and_dpo_loss_types_are_checked():
    with pytest.raises(spec.errors.UserError) as info:
        spec.loads("name: x\nmodel: a/b\ndataset: {path: d}\ntask: rl\n")
    assert "reward" in info.value.render()
    ok = spec.loads("name: x\nmodel: a/b\ndataset: {path: d}\ntask: rl\ntask_args: {reward_function: 'm:f', "
                    "algorithm: rloo}\n")
    assert ok.task_settings.algorithm == "rloo"
    with pytest.raises(spec.errors.UserError):
        spec.loads("name: x\nmodel: a/b\ndataset: {path: d}\ntask: dpo\ntask_args: {loss_type: nope}\n")
