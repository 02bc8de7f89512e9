"""Every supported technique x task pair of `ftlaunch techniques` trains on a tiny model: the loss goes
down (the reward goes up for rl), the trainable parameter count is the technique's, the outputs verify
against manifest.json, and the model rebuilt from weights/ gives the trained model's outputs."""

from __future__ import annotations

import json

import pytest
import taskdata

from ftlaunch.core import manifest, spec, techniques
from ftlaunch.containers.trainer import contract, loading, run

pytestmark = pytest.mark.slow

PAIRS = [(t, k) for t in techniques.Technique for k in techniques.Task
         if techniques.unsupported_reason(t, k) is None]

# learning rates that move a tiny model within a few steps
LR = {"full": 0.003, "lora": 0.02, "dora": 0.02, "qlora": 0.02, "ia3": 0.05, "prefix": 0.05, "prompt": 0.1,
      "ptuning": 0.03, "adapter": 0.02}
STEPS = {"rl": 12, "classification": 12}
SCALE = {"classification": 0.25, "rl": 3.0}  # a fresh head on a separable toy set diverges at the causal rates


def expected_trainable(technique: str, hidden: int = 64, layers: int = 2, kv: int = 32, ffn: int = 128) -> int | None:
    """Trainable parameters of each technique on the tiny Llama (causal tasks), from its shapes."""
    linear = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden), (hidden, ffn), (hidden, ffn),
              (ffn, hidden)]  # q k v o gate up down: (in, out)
    r, virtual = 16, 20
    return {
        "lora": layers * sum(r * (i + o) for i, o in linear),
        "qlora": layers * sum(r * (i + o) for i, o in linear),
        "dora": layers * sum(r * (i + o) + o for i, o in linear),
        "ia3": layers * (kv + kv + ffn),
        "prompt": virtual * hidden,
        "prefix": virtual * layers * 2 * kv,
        "ptuning": virtual * hidden + (hidden * 128 + 128) + (128 * 128 + 128) + (128 * hidden + hidden),
        "adapter": layers * ((hidden * 4 + 4) + (4 * hidden + hidden)),
    }.get(technique)


@pytest.mark.parametrize("technique,task", PAIRS, ids=[f"{t.value}-{k.value}" for t, k in PAIRS])
def test_pair_trains_and_reloads(technique, task, tiny_lm, tiny_classifier, task_data, tmp_path):
    technique, task = technique.value, task.value
    model = tiny_classifier if task == "classification" else tiny_lm
    s = spec.loads(taskdata.spec_text(model, technique, task, task_data(task), STEPS.get(task, 10),
                                       LR[technique] * SCALE.get(task, 1.0), batch=16 if task == "rl" else 8))
    out = tmp_path / "out"
    summary = run.train(s, contract.Paths(str(out), str(tmp_path / "ckpt"), None, "local"))

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    if task == "rl":
        rewards = [r["reward"] for r in rows if "reward" in r]
        half = len(rewards) // 2
        assert sum(rewards[half:]) / (len(rewards) - half) > sum(rewards[:half]) / half, rewards
    else:
        losses = [r["loss"] for r in rows if "loss" in r]
        assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses

    trainable, total = summary["trainable_params"], summary["total_params"]
    if technique == "full":
        assert trainable == total
    else:
        assert trainable < 0.5 * total
        want = expected_trainable(technique)
        if task in ("sft", "cpt", "dpo", "rl"):
            assert trainable == want, (trainable, want)
        elif technique in ("prompt", "adapter") and task == "reward":
            assert trainable == want + 64 * 1  # plus the score head (hidden x 1, no bias)

    listed = manifest.verify(out)["files"]
    assert {"summary.json", "metrics.jsonl"} <= set(listed)
    weights = [f for f in listed if f.startswith("weights/")]
    assert any(f.endswith(".safetensors") for f in weights) and "weights/tokenizer.json" in weights
    assert all(r.keys() >= {"step", "epoch", "memory_bytes"} for r in rows)
    for key in ("peak_memory_bytes", "wall_time_s", "train_runtime_s", "tokens_seen", "steps"):
        assert summary.get(key) is not None, key
    _reload_matches(s, out / "weights", run.last_model, atol=1e-4)


def _reload_matches(s, weights, trained, atol):
    import torch

    reloaded = loading.load_trained(s, str(weights))
    trained.eval()
    reloaded.eval()
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])
    with torch.no_grad():
        a = trained(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        b = reloaded(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert a.shape == b.shape
    assert torch.allclose(a.float(), b.float(), atol=atol, rtol=1e-3), (a - b).abs().max()
