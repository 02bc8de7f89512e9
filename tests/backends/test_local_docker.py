"""The local backend's Docker runtime: the real CLI builds the real job image FROM the stand-in PyTorch base,
runs the tiny fine-tune in it, and status, logs, fetch and cancel work from other processes; a relaunch
with nothing changed builds nothing. Also: the runtime decision at plan time, and the `docker run`
argv (GPU flags, secrets by name) as pure rendering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftlaunch.core import jobs, spec
from ftlaunch.planning import plan
from ftlaunch.backends.local import docker as local_docker
from ftlaunch.backends.local import render
from ftlaunch.containers import engine as engine_mod


def ftlaunch(*args: str, env: dict | None = None, check: bool = True, timeout: float = 600):
    proc = subprocess.run([sys.executable, "-m", "ftlaunch", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"ftlaunch {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for(job: str, states: set[str], env: dict, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    status = {}
    while time.monotonic() < deadline:
        status = json.loads(ftlaunch("status", job, "--json", env=env).stdout)
        if status["state"] in states:
            return status
        time.sleep(1)
    raise AssertionError(f"{job} did not reach {states}; last: {status}\n{ftlaunch('logs', job, env=env).stdout}")


def job_dir(job: str) -> Path:
    return jobs.home() / "jobs" / job


# ---------------------------------------------------------------------------- with a real engine

@pytest.mark.slow
def test_launch_in_docker_fetch_and_relaunch_builds_nothing(tiny_spec, tmp_path, docker_env):  # noqa: F811
    first = ftlaunch("--cloud", "local", "--runtime", "docker", str(tiny_spec), env=docker_env)
    assert "SUCCEEDED" in first.stdout, first.stdout + first.stderr
    assert "in docker" in first.stdout  # the plan's one line on the runtime
    job = json.loads(ftlaunch("ls", "--json", env=docker_env).stdout)[0]["id"]
    built = json.loads((job_dir(job) / "image.json").read_text())
    logs = ftlaunch("logs", job, env=docker_env).stdout
    assert "outputs complete in /opt/ftlaunch/output" in logs and "step    6/6" in logs

    dest = tmp_path / "fetched"
    assert "verified" in ftlaunch("fetch", job, "--dest", str(dest), env=docker_env).stdout
    for name in ("metrics.jsonl", "summary.json", "manifest.json", "weights/adapter_model.safetensors"):
        assert (dest / name).exists(), name
    summary = json.loads((dest / "summary.json").read_text())
    assert summary["steps"] == 6
    # outputs on the host belong to the launching user (the container ran as their uid)
    assert (dest / "summary.json").stat().st_uid == os.getuid()
    record = jobs.JobStore().get(job)
    assert record.image == built["image"]

    # the same spec again, nothing changed: the tag exists, so no image is built
    again = json.loads(ftlaunch("--cloud", "local", "--runtime", "docker", "--detach", "--json", str(tiny_spec),
                                env=docker_env).stdout)["job"]
    second = json.loads((job_dir(again) / "image.json").read_text())
    assert second == {**built, "built": False, "found": "local"}, (built, second)
    assert wait_for(again, {"SUCCEEDED", "FAILED"}, docker_env)["state"] == "SUCCEEDED"


@pytest.mark.slow
def test_cancel_is_docker_stop(tiny_spec, docker_env):  # noqa: F811
    job = json.loads(ftlaunch("--cloud", "local", "--runtime", "docker", "--detach", "--json",
                              "--set", "hyperparameters.max_steps=100000", str(tiny_spec), env=docker_env).stdout)["job"]
    wait_for(job, {"RUNNING"}, docker_env)
    deadline = time.monotonic() + 120
    while "step" not in ftlaunch("logs", job, env=docker_env).stdout and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "CANCELLED" in ftlaunch("cancel", job, env=docker_env).stdout
    engine = engine_mod.Engine(name="docker", binary="docker", env={**os.environ, **docker_env})
    state = engine.container_state(local_docker.container_name(job))
    assert state["Status"] == "exited"
    assert json.loads(ftlaunch("status", job, "--json", env=docker_env).stdout)["state"] == "CANCELLED"
    ftlaunch("cancel", job, env=docker_env)  # cancelling an ended job is silent


@pytest.mark.slow
def test_a_cancelled_container_job_resumes_from_its_checkpoint(tiny_spec, docker_env):  # noqa: F811
    steps = 40
    text = tiny_spec.read_text().replace("max_steps: 6", f"max_steps: {steps}\n  save_steps: 4")
    tiny_spec.write_text(text.replace("eval_split: 0.25", "eval_split: 0"))
    job = json.loads(ftlaunch("--cloud", "local", "--runtime", "docker", "--detach", "--json", str(tiny_spec),
                              env=docker_env).stdout)["job"]
    checkpoints = job_dir(job) / "checkpoints"
    deadline = time.monotonic() + 240
    while not list(checkpoints.glob("checkpoint-*/COMPLETE")):
        assert time.monotonic() < deadline, ftlaunch("logs", job, env=docker_env).stdout
        time.sleep(0.5)
    ftlaunch("cancel", job, env=docker_env)
    assert wait_for(job, {"CANCELLED"}, docker_env)["state"] == "CANCELLED"
    saved = max(int(p.parent.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*/COMPLETE"))
    assert saved < steps, "the job finished before it was cancelled: give it more steps"

    ftlaunch("resume", job, "--detach", env=docker_env)
    status = wait_for(job, {"SUCCEEDED", "FAILED", "CANCELLED"}, docker_env)
    assert status["state"] == "SUCCEEDED", ftlaunch("logs", job, env=docker_env).stdout
    assert f"(step {saved})" in ftlaunch("logs", job, env=docker_env).stdout  # the new container resumed
    first, second = json.loads(ftlaunch("show", job, env=docker_env).stdout)["attempts"]
    assert first["last_step"] is not None and first["last_step"] < steps
    assert second["first_step"] == saved + 1 and second["last_step"] == steps
    engine = engine_mod.Engine(name="docker", binary="docker", env={**os.environ, **docker_env})
    assert engine.container_state(local_docker.container_name(job) + "-attempt-1")["Status"] == "exited"


@pytest.mark.slow
def test_max_runtime_stops_the_container(tiny_spec, docker_env):  # noqa: F811
    job = json.loads(ftlaunch("--cloud", "local", "--runtime", "docker", "--detach", "--json",
                              "--set", "hyperparameters.max_steps=100000", "--set", "resources.max_runtime=8",
                              str(tiny_spec), env=docker_env).stdout)["job"]
    status = wait_for(job, {"SUCCEEDED", "FAILED", "CANCELLED"}, docker_env, timeout=120)
    assert status["state"] == "FAILED" and "exceeded max_runtime of 8 s" in status["reason"]


# ---------------------------------------------------------------------------- the runtime decision

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock", "CONTAINER_HOST": "unix:///nonexistent/podman.sock",
             "FTLAUNCH_ENGINE": "docker"}


def test_auto_without_an_engine_runs_as_a_process_and_says_so(tiny_spec):
    out = json.loads(ftlaunch("--cloud", "local", "--dry-run", "--json", str(tiny_spec), env=NO_ENGINE).stdout)
    assert out["request"]["payload"]["runtime"] == "process"
    why = out["plan"]["why"]
    assert "as a process" in why and "--runtime docker" in why and "\n" not in why


def test_runtime_docker_without_an_engine_is_a_clear_error(tiny_spec):
    out = ftlaunch("--cloud", "local", "--runtime", "docker", "--dry-run", str(tiny_spec), env=NO_ENGINE, check=False)
    assert out.returncode == 2
    assert "--runtime docker" in out.stderr and "--runtime process" in out.stderr and "Traceback" not in out.stderr


def test_runtime_process_never_asks_for_an_engine(tiny_spec, monkeypatch):
    monkeypatch.setattr(engine_mod, "detect", lambda *a, **k: pytest.fail("detect() was called"))
    s = spec.load(tiny_spec, ["resources.runtime=process"])
    p = plan.make(s)
    assert p.context["runtime"] == "process" and p.image is None


# ---------------------------------------------------------------------------- render (pure)

def docker_plan(tiny_spec, monkeypatch, overrides=(), engine_name="docker", gpus_here=0, env=None):
    fake = engine_mod.Engine(name=engine_name, binary=f"/usr/bin/{engine_name}", version="27.0")
    monkeypatch.setattr(engine_mod, "detect", lambda *a, **k: fake)
    monkeypatch.setattr(local_docker, "count_gpus", lambda env: gpus_here)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    return plan.make(spec.load(tiny_spec, ["resources.runtime=auto", *overrides]))


def test_render_is_the_docker_run_argv(tiny_spec, monkeypatch):
    p = docker_plan(tiny_spec, monkeypatch, ["secrets=[HF_TOKEN]"])
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_never_rendered")
    request = render.render(p)
    payload = request.payload
    argv = payload["argv"]
    assert payload["runtime"] == "docker" and p.image == payload["image"] == argv[-3]
    assert argv[:2] == ["/usr/bin/docker", "run"] and argv[-2:] == ["--spec", local_docker.SPEC_FILE]
    pairs = list(zip(argv, argv[1:]))
    assert ("--shm-size", local_docker.SHM_SIZE) in pairs and ("--network", "host") in pairs
    assert ("--user", f"{os.getuid()}:{os.getgid()}") in pairs
    assert ("--volume", f"{p.output_uri}:{local_docker.OUTPUT_DIR}") in pairs
    assert ("--env", "FTLAUNCH_OUTPUT_DIR=/opt/ftlaunch/output") in pairs
    assert ("--env", "HF_TOKEN") in pairs  # by name: docker reads the value from the launcher's environment
    assert "hf_secret_value_never_rendered" not in json.dumps(request.to_json())
    assert request.secrets == ["HF_TOKEN"] and payload["secret_env"] == ["HF_TOKEN"]
    model = p.spec.model
    assert ("--volume", f"{model}:{model}:ro") in pairs  # local inputs at the same path, read-only
    assert "--gpus" not in argv  # no GPU on this machine
    assert render.render(p).to_json() == request.to_json()  # pure: same plan, same request


def test_gpu_flags(tiny_spec, monkeypatch):
    argv = render.render(docker_plan(tiny_spec, monkeypatch, gpus_here=8)).payload["argv"]
    assert argv[argv.index("--gpus") + 1] == "1"
    argv = render.render(docker_plan(tiny_spec, monkeypatch, ["resources.gpus=8"], gpus_here=8)).payload["argv"]
    assert argv[argv.index("--gpus") + 1] == "all"
    argv = render.render(docker_plan(tiny_spec, monkeypatch, engine_name="podman", gpus_here=2)).payload["argv"]
    assert argv[argv.index("--device") + 1] == "nvidia.com/gpu=all" and "--gpus" not in argv
    assert local_docker.gpu_flags("docker", 0, 4) == []


def test_network_and_base_come_from_the_environment(tiny_spec, monkeypatch):
    p = docker_plan(tiny_spec, monkeypatch, env={"FTLAUNCH_DOCKER_NETWORK": "none",
                                                 "FTLAUNCH_BASE_IMAGE": "sagemaker"})
    argv = render.render(p).payload["argv"]
    assert argv[argv.index("--network") + 1] == "none"
    assert p.context["build"]["base_image"].endswith("-sagemaker")
