"""What the grid does not show: RLHF against a reward model trained by task: reward, merged LoRA weights,
a named chat template for a tokenizer without one, and each task's evaluation metrics in summary.json."""

from __future__ import annotations

import json

import pytest
import taskdata

from ftlaunch.core import manifest, spec, techniques
from ftlaunch.containers.trainer import contract, run

pytestmark = pytest.mark.slow


def _paths(folder):
    return contract.Paths(str(folder / "out"), str(folder / "ckpt"), None, "local")


def test_rl_against_a_reward_model_from_the_reward_task(tiny_lm, task_data, tmp_path):
    reward_spec = spec.loads(taskdata.spec_text(tiny_lm, "lora", "reward", task_data("reward"), 8, 0.02))
    summary = run.train(reward_spec, _paths(tmp_path / "reward"))
    assert summary["reward_accuracy"] is not None and summary["reward_margin"] is not None
    text = taskdata.spec_text(tiny_lm, "lora", "rl", task_data("rl"), 3, 0.02, batch=8)
    text = text.replace(f"reward_function: '{task_data('rl').parent / 'reward.py'}:vowels'",
                        f"reward_model: '{tmp_path / 'reward' / 'out'}', algorithm: rloo")
    rl = run.train(spec.loads(text), _paths(tmp_path / "rl"))
    assert rl["reward_source"].endswith("out") and rl["mean_reward"] is not None
    manifest.verify(tmp_path / "rl" / "out")


def test_merge_writes_full_weights_and_sft_keeps_samples(tiny_lm, alpaca_file, tmp_path):
    text = taskdata.spec_text(tiny_lm, "lora", "sft", alpaca_file, 4, 0.02) + \
        "output: {merge: true}\ntask_args: {sample_prompts: ['Where is Paris?']}\n"
    summary = run.train(spec.loads(text), _paths(tmp_path))
    out = tmp_path / "out"
    assert (out / "merged" / "model.safetensors").exists() and (out / "weights" / "adapter_model.safetensors").exists()
    assert summary["samples"][0]["prompt"] == "Where is Paris?" and "after" in summary["samples"][0]
    assert summary["perplexity"] > 1 and "merged/model.safetensors" in manifest.verify(out)["files"]


def test_classification_reports_accuracy_macro_f1_and_labels(tiny_classifier, task_data, tmp_path):
    summary = run.train(spec.loads(taskdata.spec_text(tiny_classifier, "lora", "classification",
                                                      task_data("classification"), 12, 0.005)), _paths(tmp_path))
    assert summary["labels"] == ["negative", "positive"]
    assert 0 <= summary["accuracy"] <= 1 and 0 <= summary["macro_f1"] <= 1
    config = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert config["eval_loss"] is not None


def test_named_chat_template():
    assert "<|im_start|>" in techniques.chat_template("chatml") and "{% generation %}" in techniques.chat_template("chatml")
    assert techniques.chat_template("{{ messages }}") == "{{ messages }}" and techniques.chat_template(None) is None
