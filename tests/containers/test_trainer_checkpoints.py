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

from ftlaunch.core import manifest, spec
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


def test_latest_needs_the_marker_and_every_listed_file_and_publish_prunes(tmp_path):
    for step in (3, 6, 9):
        staged = tmp_path / checkpoints.STAGING / f"checkpoint-{step}"
        staged.mkdir(parents=True)
        (staged / "model.safetensors").write_text("x")
        files = checkpoints.move_staged(staged, tmp_path / f"checkpoint-{step}")
        assert files == {"model.safetensors": 1}
        checkpoints.publish(tmp_path / f"checkpoint-{step}", step, files)
    (tmp_path / "checkpoint-12").mkdir()  # no marker: a cut copy
    assert [p.name for p in checkpoints.complete(tmp_path)] == ["checkpoint-6", "checkpoint-9"]
    assert checkpoints.latest(tmp_path).name == "checkpoint-9"
    assert checkpoints.latest(tmp_path / "absent") is None
    # a marker listing another host's shard that never arrived, or a file cut short: not complete
    (tmp_path / "checkpoint-12" / "model.safetensors").write_text("x")
    checkpoints.publish(tmp_path / "checkpoint-12", 12, {"model.safetensors": 1, "rng_state_1.pth": 10})
    assert checkpoints.latest(tmp_path).name == "checkpoint-9"
    (tmp_path / "checkpoint-12" / "rng_state_1.pth").write_text("short")
    assert checkpoints.latest(tmp_path).name == "checkpoint-9"
    (tmp_path / "checkpoint-12" / "rng_state_1.pth").write_text("0123456789")
    assert checkpoints.latest(tmp_path).name == "checkpoint-12"
    assert checkpoints.resume_point(tmp_path).name == "checkpoint-12"  # one process: no one to agree with


def _kill_tree(pid: int) -> None:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _marked(root: Path) -> set[int]:
    return {checkpoints.step_of(p) for p in root.glob(f"{checkpoints.PREFIX}*") if (p / checkpoints.MARKER).exists()}


@pytest.mark.slow
def test_two_hosts_with_their_own_checkpoint_disks_resume_from_the_same_complete_step(tmp_path, tiny_lm, alpaca_file):
    """Two "hosts" (torchrun nodes on SkyPilot's variables, one process each), each with its own checkpoint disk
    as on SageMaker and SkyPilot: a step counts only once every host's files of it are in the bucket, and both
    ranks resume from the same step."""
    import shutil
    import socket

    from ftlaunch.containers.trainer import distributed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hosts = [tmp_path / "host0", tmp_path / "host1"]

    def start(rank: int, spec_path: Path, log: Path) -> subprocess.Popen:
        env = dict(os.environ, SKYPILOT_NODE_IPS="127.0.0.1\n127.0.0.1", SKYPILOT_NODE_RANK=str(rank),
                   MASTER_PORT=str(port), FTLAUNCH_NPROC_PER_NODE="1", OMP_NUM_THREADS="1",
                   TOKENIZERS_PARALLELISM="false", FTLAUNCH_OUTPUT_DIR=str(hosts[rank] / "out"),
                   FTLAUNCH_CHECKPOINT_DIR=str(hosts[rank] / "ckpt"))
        command = distributed.torchrun_command(distributed.rendezvous(env), str(spec_path), python=sys.executable)
        return subprocess.Popen(command, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                start_new_session=True)

    procs = [start(r, _spec_file(tmp_path, tiny_lm, alpaca_file, steps=100000), tmp_path / f"first{r}.log")
             for r in (0, 1)]
    deadline = time.monotonic() + 240
    while len(_marked(hosts[0] / "ckpt") & _marked(hosts[1] / "ckpt")) < 2:
        assert time.monotonic() < deadline, (tmp_path / "first0.log").read_text()[-3000:]
        assert all(p.poll() is None for p in procs), (tmp_path / "first0.log").read_text()[-3000:]
        time.sleep(0.05)
    for p in procs:  # the hosts die: torchrun and its workers (which torchrun starts in sessions of their own)
        _kill_tree(p.pid)
        p.wait(timeout=30)

    # each disk alone holds nothing complete: host 0 lacks host 1's RNG state of every step, and the reverse
    assert checkpoints.latest(hosts[0] / "ckpt") is None and checkpoints.latest(hosts[1] / "ckpt") is None
    # both hosts sync to one bucket, but host 1's copy of the newest common step is cut
    newest = max(_marked(hosts[0] / "ckpt") & _marked(hosts[1] / "ckpt"))
    bucket = tmp_path / "bucket"
    shutil.copytree(hosts[0] / "ckpt", bucket)
    shutil.copytree(hosts[1] / "ckpt", bucket, dirs_exist_ok=True,
                    ignore=lambda folder, names: [n for n in names if n == f"{checkpoints.PREFIX}{newest}"])
    expected = checkpoints.step_of(checkpoints.latest(bucket))
    assert 0 < expected < newest
    for host in hosts:  # the next attempt starts from the bucket on fresh disks
        shutil.rmtree(host / "ckpt")
        shutil.copytree(bucket, host / "ckpt")

    again = tmp_path / "again"
    again.mkdir()
    spec_path = _spec_file(again, tiny_lm, alpaca_file, steps=expected + 3)
    procs = [start(r, spec_path, tmp_path / f"second{r}.log") for r in (0, 1)]
    for r, p in enumerate(procs):
        assert p.wait(timeout=300) == 0, (tmp_path / f"second{r}.log").read_text()[-3000:]
    assert f"checkpoint-{expected} (step {expected})" in (tmp_path / "second0.log").read_text()
    assert f"rank 1: resuming from step {expected}" in (tmp_path / "second1.log").read_text()
    summary = json.loads((hosts[0] / "out" / "summary.json").read_text())
    assert summary["steps"] == expected + 3 and summary["resumed_from_step"] == expected
