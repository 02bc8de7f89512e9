"""The local backend end to end: the real CLI launches the real trainer on a tiny model; status, logs,
fetch and cancel work from other processes, as they would from a second shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftlaunch.core import errors, jobs, manifest

pytestmark = pytest.mark.slow


def ftlaunch(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "ftlaunch", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))
    if check and proc.returncode != 0:
        raise AssertionError(f"ftlaunch {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for(job: str, states: set[str], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = json.loads(ftlaunch("status", job, "--json").stdout)
        if status["state"] in states:
            return status
        time.sleep(1)
    raise AssertionError(f"{job} did not reach {states}; last: {status}\n{ftlaunch('logs', job).stdout}")


def test_launch_status_logs_fetch(tiny_spec, tmp_path):
    submitted = json.loads(ftlaunch("--cloud", "local", "--runtime", "process", "--detach", "--json",
                                    str(tiny_spec)).stdout)
    job = submitted["job"]
    status = wait_for(job, {"SUCCEEDED", "FAILED"})
    log = ftlaunch("logs", job).stdout
    assert status["state"] == "SUCCEEDED", log
    assert "outputs complete" in log and "step    6/6" in log

    dest = tmp_path / "fetched"
    out = ftlaunch("fetch", job, "--dest", str(dest)).stdout
    assert "verified" in out
    for name in ("metrics.jsonl", "summary.json", "manifest.json", "weights/adapter_model.safetensors"):
        assert (dest / name).exists(), name
    summary = json.loads((dest / "summary.json").read_text())
    assert summary["steps"] == 6 and 0 < summary["trainable_params"] < summary["total_params"]

    # a changed file is caught
    (dest / "summary.json").write_text("{}")
    with pytest.raises(errors.UserError) as info:
        manifest.verify(dest)
    assert "summary.json differs" in info.value.render()

    listed = json.loads(ftlaunch("ls", "--json").stdout)
    assert listed[0]["id"] == job and listed[0]["state"] == "SUCCEEDED"
    assert listed[0]["spec"]["name"] == "tiny-sft"


def test_cancel_stops_the_whole_process_group(tiny_spec):
    job = json.loads(ftlaunch("--runtime", "process", "--detach", "--json", "--set",
                              "hyperparameters.max_steps=100000", str(tiny_spec)).stdout)["job"]
    wait_for(job, {"RUNNING"})
    deadline = time.monotonic() + 120
    while "step" not in ftlaunch("logs", job).stdout and time.monotonic() < deadline:
        time.sleep(0.5)
    record = jobs.JobStore().get(job)
    supervisor = json.loads((Path(record.provider_id) / "supervisor.json").read_text())
    assert "CANCELLED" in ftlaunch("cancel", job).stdout
    with pytest.raises(ProcessLookupError):
        os.killpg(supervisor["pid"], 0)
    assert json.loads(ftlaunch("status", job, "--json").stdout)["state"] == "CANCELLED"
    ftlaunch("cancel", job)  # cancelling an ended job is silent


def test_failed_job_reports_the_reason(tiny_spec, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    job = json.loads(ftlaunch("--runtime", "process", "--detach", "--json", "--skip-preflight", "--set",
                              f"dataset.path={empty}",
                              str(tiny_spec)).stdout)["job"]
    status = wait_for(job, {"SUCCEEDED", "FAILED"})
    assert status["state"] == "FAILED"
    assert "is empty" in status["reason"]
    fetched = ftlaunch("fetch", job, check=False)
    assert fetched.returncode == 2 and "no complete outputs" in fetched.stderr


def test_a_failed_jobs_reason_is_its_last_error_and_the_logs_path(tiny_spec, tmp_path):
    """A dataset the job cannot read (the pre-flight skipped): the followed launch exits 1, and the launch,
    `status` and `show` give the trainer's one-line error and where the full log is, no traceback lines."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\nnot json at all\n')
    launched = ftlaunch("--cloud", "local", "--runtime", "process", "--skip-preflight", "--set",
                        f"dataset.path={bad}", str(tiny_spec), check=False, timeout=240)
    assert launched.returncode == 1, launched.stdout + launched.stderr
    record = jobs.JobStore().latest()
    status = json.loads(ftlaunch("status", record.id, "--json").stdout)
    log = Path(record.handle.extra["log_file"])
    assert status["state"] == "FAILED"
    # the trainer's UserError line (file:row), not the datasets library's line above it
    assert status["reason"].startswith(f"{bad}:2: not valid JSON"), status["reason"]
    assert status["reason"].endswith(f"(full log: {log})") and " | " not in status["reason"]
    assert "Traceback" not in status["reason"] and "File \"" not in status["reason"]
    for shown in (launched.stdout, ftlaunch("status", record.id).stdout, ftlaunch("show", record.id).stdout):
        assert f"{bad}:2: not valid JSON" in shown and str(log) in shown, shown
