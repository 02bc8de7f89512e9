"""The local process runtime under faults: the supervisor killed, the trainer killed by a signal, the
trainer's environment, a followed launch of a failing job, and 20 launches at once with `ls` polling.

The supervisor and the submit path are the real ones; where a whole trainer is not needed to show the
point, the job's command is a small Python program, so these tests take seconds, not minutes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftlaunch.backends.base import JobRequest, State
from ftlaunch.backends.local import backend as local_backend
from ftlaunch.backends.local import supervise

pytestmark = pytest.mark.slow


def submit(tmp_path: Path, program: str, secrets: list[str] | None = None, max_runtime_s: float | None = None):
    """Submits a local job whose command is `python -c program`, through LocalBackend.submit."""
    job_dir = tmp_path / "job"
    request = JobRequest(backend="local", job_name="fault", secrets=secrets or [], payload={
        "runtime": "process", "job_dir": str(job_dir), "spec_file": str(job_dir / "spec.json"), "spec": {},
        "argv": [sys.executable, "-c", program],
        "env": {"FTLAUNCH_OUTPUT_DIR": str(tmp_path / "out"), "FTLAUNCH_JOB_NAME": "fault", "PYTHONUNBUFFERED": "1"},
        "log_file": str(job_dir / "job.log"), "max_runtime_s": max_runtime_s})
    backend = local_backend.LocalBackend(grace_s=10)
    return backend, backend.submit(request), job_dir


def wait(predicate, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    return supervise.start_ticks(pid) is None or local_backend._proc_state(pid) == "Z"


def ended(backend, handle) -> bool:
    return backend.status(handle).state.done


def test_killing_the_supervisor_stops_the_trainer(tmp_path):
    program = "import time\nprint('training', flush=True)\nwhile True: time.sleep(0.1)"
    backend, handle, job_dir = submit(tmp_path, program)
    wait(lambda: (job_dir / "trainer.json").exists() and "training" in (job_dir / "job.log").read_text(),
         what="the trainer to start")
    supervisor = json.loads((job_dir / "supervisor.json").read_text())["pid"]
    trainer = json.loads((job_dir / "trainer.json").read_text())["pid"]
    os.kill(supervisor, signal.SIGKILL)
    wait(lambda: gone(trainer), timeout=15, what="the trainer to die with its supervisor")
    status = backend.status(handle)
    assert status.state is State.FAILED
    assert "supervisor ended without recording" in status.reason and "last output: training" in status.reason


def test_a_trainer_outliving_its_supervisor_is_running_until_cancel_stops_it(tmp_path):
    # a trainer that ignores the parent-death signal (as a stuck one might): never FAILED while it runs
    program = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('training', flush=True)\n"
               "while True: time.sleep(0.1)")
    backend, handle, job_dir = submit(tmp_path, program)
    wait(lambda: (job_dir / "trainer.json").exists() and "training" in (job_dir / "job.log").read_text(),
         what="the trainer to start")
    os.kill(json.loads((job_dir / "supervisor.json").read_text())["pid"], signal.SIGKILL)
    trainer = json.loads((job_dir / "trainer.json").read_text())["pid"]
    time.sleep(0.5)
    status = backend.status(handle)
    assert status.state is State.RUNNING and "supervisor died" in status.reason
    backend.grace_s = 2
    backend.cancel(handle)  # SIGTERM is ignored; SIGKILL after the grace period
    wait(lambda: gone(trainer), timeout=10, what="cancel to stop the orphaned trainer")
    assert backend.status(handle).state is State.CANCELLED


@pytest.mark.parametrize("sig, words", [
    (signal.SIGSEGV, "segmentation fault (SIGSEGV)"),
    (signal.SIGKILL, "killed by SIGKILL"),
    (signal.SIGABRT, "aborted (SIGABRT)"),
])
def test_a_trainer_killed_by_a_signal_names_it(tmp_path, sig, words):
    program = f"import os\nprint('loading shard 3 of 4', flush=True)\nos.kill(os.getpid(), {int(sig)})"
    backend, handle, job_dir = submit(tmp_path, program)
    wait(lambda: ended(backend, handle), what="the job to end")
    status = backend.status(handle)
    assert status.state is State.FAILED and status.exit_code == -int(sig)
    assert status.reason.startswith(words) and "last output: loading shard 3 of 4" in status.reason
    if sig == signal.SIGKILL:
        assert "out of memory" in status.reason


def test_signal_reason_uses_the_oom_count():
    assert supervise.signal_reason(signal.SIGKILL, 3, 2).startswith("killed by SIGKILL: out of memory")
    assert supervise.signal_reason(signal.SIGKILL, 2, 2) == "killed by SIGKILL (out of memory?)"
    assert supervise.signal_reason(signal.SIGKILL, None, None) == "killed by SIGKILL (out of memory?)"


def test_a_failing_trainer_reason_is_its_error_line(tmp_path):
    program = "raise ValueError('row 7: label is empty')"
    backend, handle, _ = submit(tmp_path, program)
    wait(lambda: ended(backend, handle), what="the job to end")
    reason = backend.status(handle).reason
    assert reason == f"ValueError: row 7: label is empty (full log: {handle.extra['log_file']})", reason


def test_the_trainer_gets_an_allow_list_and_the_named_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf-secret-value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    monkeypatch.setenv("UNRELATED_SETTING", "x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("MY_API_KEY", "named-secret")
    out = tmp_path / "env.json"
    program = f"import json, os\nopen({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    backend, handle, _ = submit(tmp_path, program, secrets=["MY_API_KEY"])
    wait(lambda: ended(backend, handle), what="the job to end")
    env = json.loads(out.read_text())
    assert env["MY_API_KEY"] == "named-secret"
    for name in ("HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "UNRELATED_SETTING"):
        assert name not in env, name
    assert env["HF_HUB_OFFLINE"] == "1" and env["CUDA_VISIBLE_DEVICES"] == "" and env["LC_ALL"] == "C.UTF-8"
    assert env["PATH"] == os.environ["PATH"] and env["FTLAUNCH_JOB_NAME"] == "fault"
    assert "hf-secret-value" not in json.dumps(env) and "aws-secret-value" not in json.dumps(env)


def ftlaunch(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftlaunch", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=dict(os.environ))


def test_a_followed_launch_exits_with_the_jobs_outcome(tmp_path):
    (tmp_path / "spec.yaml").write_text(
        "name: fails\nmodel: org/model\ndataset:\n  path: d.jsonl\nresources:\n  max_runtime: 1\n")
    (tmp_path / "d.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    # the job is stopped by max_runtime before it trains: the trainer exits 75 (resumable)
    proc = ftlaunch("--cloud", "local", "--runtime", "process", "spec.yaml", cwd=tmp_path)
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert "FAILED" in proc.stdout and "exceeded max_runtime" in proc.stdout

    # the trainer fails (no such model here, and no network): exit 1, with its reason
    (tmp_path / "crash.yaml").write_text("name: crash\nmodel: org/no-such-model\ndataset:\n  path: d.jsonl\n")
    proc = ftlaunch("--cloud", "local", "--runtime", "process", "crash.yaml", cwd=tmp_path, timeout=240)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED" in proc.stdout and "org/no-such-model" in proc.stdout


def test_twenty_concurrent_launches_keep_twenty_records(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    (tmp_path / "spec.yaml").write_text(
        "name: many\nmodel: org/model\ndataset:\n  path: d.jsonl\nresources:\n  max_runtime: 1\n")
    launches = [subprocess.Popen([sys.executable, "-m", "ftlaunch", "--cloud", "local", "--runtime", "process",
                                  "--detach", "--json", "--set", f"name=many{i:02d}", "spec.yaml"],
                                 cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in range(20)]
    polls = 0
    while any(p.poll() is None for p in launches):
        listed = ftlaunch("ls", "--json", "-n", "100", cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert len(json.loads(listed.stdout)) <= 20
        polls += 1
    outs = [p.communicate(timeout=60) for p in launches]
    assert all(p.returncode == 0 for p in launches), [o[1] for o in outs]
    names = {json.loads(out)["job"] for out, _ in outs}
    assert len(names) == 20 and polls >= 1
    records = json.loads(ftlaunch("ls", "--json", "-n", "100", cwd=tmp_path).stdout)
    assert {r["id"] for r in records} == names
    assert all(r["spec"]["name"] == r["id"].rsplit("-", 3)[0] for r in records)
    # every job ends on its own (max_runtime) and leaves no process behind
    deadline = time.monotonic() + 45
    for name in sorted(names):
        while True:
            state = json.loads(ftlaunch("status", name, "--json", cwd=tmp_path).stdout)
            if state["state"] in ("FAILED", "SUCCEEDED") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert state["state"] == "FAILED" and "max_runtime" in state["reason"], state


def test_a_container_gets_only_the_job_variables_and_the_secret_names(tiny_spec, monkeypatch):
    from ftlaunch.planning import plan
    from ftlaunch.core import spec
    from ftlaunch.backends.local import docker as local_docker
    from ftlaunch.backends.local import render
    from ftlaunch.containers import engine as engine_mod

    fake = engine_mod.Engine(name="docker", binary="/usr/bin/docker", version="27.0")  # render only: no engine runs
    monkeypatch.setattr(engine_mod, "detect", lambda *a, **k: fake)
    monkeypatch.setattr(local_docker, "count_gpus", lambda env: 0)
    monkeypatch.setenv("HF_TOKEN", "hf-secret-value")
    monkeypatch.setenv("MY_API_KEY", "named")
    p = plan.make(spec.load(tiny_spec, ["resources.runtime=auto", "secrets=[MY_API_KEY]"]))
    payload = render.render(p).payload
    argv = payload["argv"]
    passed = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--env"]
    allowed = {f"{k}={v}" for k, v in payload["env"].items()} | {"MY_API_KEY"}
    assert passed and set(passed) <= allowed
    assert all(k.startswith(("FTLAUNCH_", "PYTHON", "TOKENIZERS_")) or k == "HOME" for k in payload["env"])
    assert "hf-secret-value" not in json.dumps(payload) and "named" not in argv
