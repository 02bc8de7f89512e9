"""Checkpoints that survive: SIGKILL mid-run then relaunch resumes from the newest complete checkpoint and
ends at the planned step; a half-written checkpoint is never loaded; SIGTERM saves one and exits 75."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftlaunch import manifest, spec
from ftlaunch.containers.trainer import checkpoints

STEPS = 80


def _spec_file(tmp_path: Path, model: Path, data: Path, steps: int = STEPS) -> Path:
    s = spec.loads(f"""\
name: ck
model: {model}
technique: lora
task: sft
dataset: {{path: {data}, eval_split: 0.0}}
hyperparameters: {{max_steps: {steps}, batch_size: 2, learning_rate: 0.01, max_length: 128, save_steps: 5}}
""")
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(s.to_json()))
    return path


def _start(spec_path: Path, tmp_path: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, FTLAUNCH_OUTPUT_DIR=str(tmp_path / "out"), FTLAUNCH_CHECKPOINT_DIR=str(tmp_path / "ckpt"),
               TOKENIZERS_PARALLELISM="false")
    return subprocess.Popen([sys.executable, "-m", "ftlaunch.containers.trainer", "--spec", str(spec_path)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


def _wait_for_checkpoint(proc: subprocess.Popen, root: Path, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = checkpoints.latest(root)
        if found is not None:
            return found
        assert proc.poll() is None, "the trainer ended before its first checkpoint"
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
def test_sigkill_then_relaunch_resumes_and_ignores_half_written(tmp_path, tiny_lm, alpaca_file):
    spec_path = _spec_file(tmp_path, tiny_lm, alpaca_file)
    ckpt = tmp_path / "ckpt"
    proc = _start(spec_path, tmp_path, tmp_path / "run1.log")
    _wait_for_checkpoint(proc, ckpt)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    newest = checkpoints.latest(ckpt)
    step = checkpoints.step_of(newest)
    assert 5 <= step < STEPS

    # a checkpoint whose copy was cut (no completion marker), and a staging folder, from a later step
    fake = ckpt / f"checkpoint-{STEPS - 1}"
    fake.mkdir()
    (fake / "adapter_model.safetensors").write_bytes(b"half")
    (ckpt / checkpoints.STAGING / f"checkpoint-{STEPS - 2}").mkdir(parents=True)

    proc = _start(spec_path, tmp_path, tmp_path / "run2.log")
    assert proc.wait(timeout=300) == 0, (tmp_path / "run2.log").read_text()[-3000:]
    log = (tmp_path / "run2.log").read_text()
    resumed = checkpoints.step_of(Path(log.split("resuming from ")[1].split(" ")[0]))
    assert resumed >= step and resumed < STEPS - 1  # never the half-written one
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == STEPS and summary["resumed_from_step"] == resumed
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1] == STEPS and logged == sorted(logged)
    manifest.verify(out)
    assert not (ckpt / checkpoints.STAGING).exists() or not any((ckpt / checkpoints.STAGING).iterdir())


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_75(tmp_path, tiny_lm, alpaca_file):
    spec_path = _spec_file(tmp_path, tiny_lm, alpaca_file, steps=100000)
    proc = _start(spec_path, tmp_path, tmp_path / "run.log")
    first = _wait_for_checkpoint(proc, tmp_path / "ckpt")
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == checkpoints.EXIT_PREEMPTED == 75
    last = checkpoints.latest(tmp_path / "ckpt")
    assert checkpoints.step_of(last) > checkpoints.step_of(first)
    assert "stopped by SIGTERM" in (tmp_path / "run.log").read_text()
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_latest_needs_the_marker_and_publish_prunes(tmp_path):
    for step in (3, 6, 9):
        staged = tmp_path / checkpoints.STAGING / f"checkpoint-{step}"
        staged.mkdir(parents=True)
        (staged / "model.safetensors").write_text("x")
        checkpoints.publish(staged, tmp_path / f"checkpoint-{step}", step)
    (tmp_path / "checkpoint-12").mkdir()  # no marker: a cut copy
    assert [p.name for p in checkpoints.complete(tmp_path)] == ["checkpoint-6", "checkpoint-9"]
    assert checkpoints.latest(tmp_path).name == "checkpoint-9"
    assert checkpoints.latest(tmp_path / "absent") is None
