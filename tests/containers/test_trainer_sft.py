"""The trainer on a tiny model: SFT with full and LoRA trains, and writes outputs that verify."""

from __future__ import annotations

import json

import pytest

from ftlaunch.core import manifest, spec
from ftlaunch.containers.trainer import contract, run

pytestmark = pytest.mark.slow


def make_spec(model, data, technique: str, steps: int = 40, **extra) -> spec.Spec:
    text = f"""\
name: t
model: {model}
technique: {technique}
task: sft
dataset: {{path: {data}, eval_split: 0.25}}
hyperparameters: {{max_steps: {steps}, batch_size: 8, learning_rate: {0.003 if technique == "full" else 0.03}, max_length: 128}}
"""
    return spec.loads(text, overrides=tuple(f"{k}={v}" for k, v in extra.items()))


@pytest.mark.parametrize("technique", ["full", "lora"])
def test_sft_trains_and_writes_verified_outputs(tiny_lm, alpaca_file, tmp_path, technique):
    out = tmp_path / "out"
    paths = contract.Paths(output_dir=str(out), checkpoint_dir=str(tmp_path / "ckpt"), data_dir=None,
                           provider="local")
    summary = run.train(make_spec(tiny_lm, alpaca_file, technique), paths)

    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) >= 40
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5
    assert all({"step", "epoch", "memory_bytes"} <= r.keys() for r in rows)
    assert any("tokens_per_s" in r for r in rows) and any("learning_rate" in r for r in rows)

    for key in ("trainable_params", "total_params", "train_runtime_s", "peak_memory_bytes",
                "final_train_loss", "eval_loss"):
        assert summary[key] is not None, key
    if technique == "full":
        assert summary["trainable_params"] == summary["total_params"]
        assert (out / "weights" / "model.safetensors").exists()
    else:
        assert summary["trainable_params"] < 0.5 * summary["total_params"]
        assert (out / "weights" / "adapter_model.safetensors").exists()
    assert (out / "weights" / "tokenizer.json").exists()
    listed = manifest.verify(out)["files"]
    assert "summary.json" in listed and "metrics.jsonl" in listed


def test_user_error_in_data_exits_2_without_traceback(tiny_lm, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n')
    s = make_spec(tiny_lm, bad, "lora", steps=1)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(s.to_json()))
    monkeypatch.setenv("FTLAUNCH_OUTPUT_DIR", str(tmp_path / "out"))
    assert run.main(["--spec", str(path)]) == 2
    err = capsys.readouterr().err
    assert "cannot tell the dataset's format" in err and "dataset.columns" in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_one_eval_record_and_line_per_step(tiny_lm, alpaca_file, tmp_path, capsys):
    """eval_steps evaluates the last step in the loop; the final evaluation reuses it, so metrics.jsonl has
    one eval record per evaluated step and the run prints each eval line once."""
    out = tmp_path / "out"
    paths = contract.Paths(output_dir=str(out), checkpoint_dir=str(tmp_path / "ckpt"), data_dir=None,
                           provider="local")
    summary = run.train(make_spec(tiny_lm, alpaca_file, "lora", steps=6, **{"hyperparameters.eval_steps": 3}),
                        paths)
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["step"] for r in rows if "eval_loss" in r]
    assert evals == [3, 6], evals
    assert summary["eval_loss"] == next(r["eval_loss"] for r in rows if r["step"] == 6 and "eval_loss" in r)
    printed = capsys.readouterr().out.splitlines()
    assert sum(1 for l in printed if l.startswith("step    6  eval_loss")) == 1, printed
    # steps 3 and 6, then the summary with perplexity: no line repeated
    assert len([l for l in printed if "eval_loss" in l]) == 3, printed
