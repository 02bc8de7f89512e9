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


def check_ran_in_image_then_fetch(env: dict[str, str], cloud: str, job: str, ran: dict, job_image, spec: str,
                                  dest) -> None:
    """The end of every image-based emulator test: the emulator ran the registry's image (same image id) as
    the image's default user, root, with no --user, as the provider does; `fetch` verifies the outputs; and
    a relaunch with nothing changed builds and pushes nothing."""
    assert ran["image"] == job_image.ref and ran["image_id"] == job_image.image_id, ran
    assert ran["user"] in ("root", "0", "0:0"), ran
    assert "verified" in ftlaunch(env, "fetch", job, "--dest", str(dest)).stdout
    assert json.loads((dest / "summary.json").read_text())["steps"] == 6
    again = ftlaunch(env, "--cloud", cloud, "--detach", spec)
    assert "nothing built" in again.stderr and "pushed" not in again.stderr, again.stderr
