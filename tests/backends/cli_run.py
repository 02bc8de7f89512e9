"""Running the real `ftlaunch` command in a subprocess, as a user in a second shell would, for the
cloud backend tests: one call, and waiting for a job to reach a state."""

from __future__ import annotations

import json
import subprocess
import sys
import time

# Host-process emulator runs ignore the image: naming one makes a launch use it as given (nothing built or pushed).
HOST_IMAGE = ("--image", "127.0.0.1:9/ftlaunch-trainer:host-process")


def ftlaunch(env: dict[str, str], *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "ftlaunch", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"ftlaunch {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for(env: dict[str, str], job: str, states: set[str], timeout: float = 150) -> dict:
    """Polls `ftlaunch status JOB --json` until the job is in one of `states`; fails with its log otherwise."""
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = json.loads(ftlaunch(env, "status", job, "--json").stdout)
        if status["state"] in states:
            return status
        time.sleep(1)
    raise AssertionError(f"{job} did not reach {states}; last: {status}\n{ftlaunch(env, 'logs', job).stdout}")
