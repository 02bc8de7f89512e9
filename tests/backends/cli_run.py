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


def check_relaunch_uploads_nothing(env: dict[str, str], cloud: str, spec, data, inputs) -> None:
    """Content-addressed uploads, through the CLI and the provider's SDK against its emulator: a second launch
    of the same spec uploads no input again (every object under <prefix>/inputs/ is the same object, and the
    launch says it reuses each), and one changed byte in the dataset uploads exactly one new object, under a
    new digest. `inputs()` lists {object name: what changes when it is written again} under the inputs prefix."""
    def launch() -> subprocess.CompletedProcess:
        proc = ftlaunch(env, "--cloud", cloud, "--detach", "--json", *HOST_IMAGE, "--set",
                        "hyperparameters.max_steps=100000", str(spec))
        ftlaunch(env, "cancel", json.loads(proc.stdout)["job"])  # only the uploads matter here
        return proc

    launch()
    first = inputs()
    assert any(name.endswith(f"/{data.name}") for name in first), first
    assert all("/inputs/sha256-" in name for name in first), first

    again = launch()
    assert inputs() == first  # no object written again, none added
    reused = [line for line in again.stderr.splitlines() if line.startswith("reusing ")]
    assert len(reused) == len(first) and all(line.endswith("(same bytes, uploaded before)") for line in reused), \
        again.stderr

    text = data.read_text()
    at = text.index("spring")  # one byte inside a value, same size, still a valid row
    data.write_text(text[:at] + "S" + text[at + 1:])
    changed = launch()
    now = inputs()
    added = set(now) - set(first)
    assert len(added) == 1 and added.pop().endswith(f"/{data.name}"), (first, now)
    assert {k: v for k, v in now.items() if k in first} == first  # the model and the old data stay as they were
    assert len([line for line in changed.stderr.splitlines() if line.startswith("reusing ")]) == len(first) - 1


RESUME_STEPS = 40  # long enough to cancel mid-run on these CPUs, a checkpoint every 4 steps


def make_resumable(spec_path, steps: int = RESUME_STEPS) -> None:
    """The tiny spec made long enough to cancel mid-run, saving a checkpoint every 4 steps, with no eval split."""
    text = spec_path.read_text().replace("max_steps: 6", f"max_steps: {steps}\n  save_steps: 4")
    spec_path.write_text(text.replace("eval_split: 0.25", "eval_split: 0"))


def cancel_resume_and_fetch(env: dict[str, str], job: str, first_checkpoint, saved_steps, dest,
                            steps: int = RESUME_STEPS) -> tuple[int, list[dict]]:
    """Waits for `first_checkpoint()` (a complete checkpoint exists), cancels the job, takes the newest complete
    step from `saved_steps()` (where the cloud keeps them), runs `ftlaunch resume`, and checks that the new
    attempt says it resumed from that step, finishes at `steps`, and fetches verified outputs that say so.
    Returns the step and the job's attempts."""
    deadline = time.monotonic() + 240
    while not first_checkpoint():
        assert time.monotonic() < deadline, ftlaunch(env, "logs", job).stdout
        time.sleep(0.5)
    ftlaunch(env, "cancel", job)
    assert wait_for(env, job, {"CANCELLED", "FAILED", "SUCCEEDED"})["state"] == "CANCELLED"
    saved = max(saved_steps())
    assert saved < steps, "the job finished before it was cancelled: give it more steps"
    ftlaunch(env, "resume", job, "--detach")
    status = wait_for(env, job, {"SUCCEEDED", "FAILED", "CANCELLED"}, timeout=300)
    log = ftlaunch(env, "logs", job).stdout
    assert status["state"] == "SUCCEEDED", log
    assert f"(step {saved})" in log  # the new attempt's own log: "resuming from .../checkpoint-N (step N)"
    assert "verified" in ftlaunch(env, "fetch", job, "--dest", str(dest)).stdout
    summary = json.loads((dest / "summary.json").read_text())
    assert summary["steps"] == steps and summary["resumed_from_step"] == saved
    return saved, json.loads(ftlaunch(env, "show", job).stdout)["attempts"]
