"""The job commands' choice of job: an empty id is refused (never "the latest"), an ambiguous prefix lists
its matches, `cancel` alone stops the latest running job; and the exit code of a followed launch."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftlaunch import cli
from ftlaunch.core import jobs, spec
from ftlaunch.backends.base import JobHandle, JobStatus, State
from ftlaunch.backends.local import supervise

SPEC = spec.loads("name: demo\nmodel: org/model\ndataset:\n  path: d.jsonl\n")


def run(*args: str):
    return CliRunner().invoke(cli.main_group, list(args), catch_exceptions=False)


def record(tmp_path: Path, name: str, state: str = "RUNNING") -> Path:
    """Records a local job named `name` with its own (empty) job folder; returns the folder."""
    job_dir = tmp_path / "jobs" / name
    job_dir.mkdir(parents=True)
    handle = JobHandle(backend="local", job_name=name, provider_id=str(job_dir), output_uri=str(job_dir / "out"),
                       extra={"log_file": str(job_dir / "job.log"), "runtime": "process"})
    store = jobs.JobStore()
    store.add(handle=handle, spec=SPEC, image=None, state=state, predicted_cost=0.0)
    store.close()
    time.sleep(0.01)  # distinct created_at, so "latest" is well defined
    return job_dir


def ended(job_dir: Path, code: int = 0) -> None:
    (job_dir / "supervisor.json").write_text(json.dumps({"pid": 1, "start_ticks": 0}))
    (job_dir / "exit.json").write_text(json.dumps({"exit_code": code, "reason": None}))


def running(job_dir: Path) -> subprocess.Popen:
    """A real process standing in for the job's supervisor, in its own process group as launch makes it."""
    proc = subprocess.Popen(["sleep", "120"], start_new_session=True)
    (job_dir / "supervisor.json").write_text(json.dumps({"pid": proc.pid,
                                                         "start_ticks": supervise.start_ticks(proc.pid)}))
    return proc


@pytest.mark.parametrize("command", ["cancel", "fetch", "logs", "status", "show"])
@pytest.mark.parametrize("job_id", ["", "  "])
def test_an_empty_job_id_is_refused(tmp_path, command, job_id):
    proc = running(record(tmp_path, "demo-20260101-000000-aaaa"))
    try:
        result = run(command, job_id)
        assert result.exit_code == 2, result.output
        assert "the job id is empty" in result.output and "fix:" in result.output
        assert proc.poll() is None  # the latest job was not cancelled
    finally:
        proc.kill()
        proc.wait()


def test_an_ambiguous_prefix_lists_the_matches(tmp_path):
    for name in ("demo-20260101-000000-aaaa", "demo-20260101-000001-bbbb"):
        ended(record(tmp_path, name))
    result = run("status", "demo-2026")
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "matches 2 jobs: demo-20260101-000001-bbbb, demo-20260101-000000-aaaa" in said


def test_cancel_alone_stops_the_latest_running_job_and_says_which(tmp_path):
    alive = record(tmp_path, "demo-20260101-000000-live")
    proc = running(alive)
    other = record(tmp_path, "demo-20260101-000001-done")  # newer, recorded RUNNING, but it has ended
    ended(other, code=0)
    try:
        result = run("cancel")
        assert result.exit_code == 0, result.output
        assert "cancelling the latest running job, demo-20260101-000000-live" in result.output
        assert "demo-20260101-000000-live: CANCELLED" in result.output
        assert proc.wait(timeout=30) == -15  # SIGTERM to its process group
        assert jobs.JobStore().get("demo-20260101-000001-done").state == "SUCCEEDED"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = run("cancel")
    assert result.exit_code == 2 and "no running job to cancel" in result.output


@pytest.mark.parametrize("status, code", [
    (JobStatus(State.SUCCEEDED, exit_code=0), 0),
    (JobStatus(State.FAILED, "boom", exit_code=1), 1),
    (JobStatus(State.FAILED, "the provider failed it"), 1),
    (JobStatus(State.CANCELLED, exit_code=75), 3),
    (JobStatus(State.FAILED, "exceeded max_runtime", exit_code=75), 75),
])
def test_outcome_codes(status, code):
    assert cli.outcome_code(status) == code


def test_cancel_of_a_job_id_still_works(tmp_path):
    job_dir = record(tmp_path, "demo-20260101-000000-aaaa")
    proc = running(job_dir)
    try:
        result = run("cancel", "demo-20260101-000000")
        assert result.exit_code == 0 and "CANCELLED" in result.output
        assert proc.wait(timeout=30) == -15
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, 9)
            proc.wait()


def last_polled(seconds_ago: float, job_id: str) -> None:
    """Ages a record, as if it was last polled `seconds_ago` (the store sets updated_at itself)."""
    store = jobs.JobStore()
    with store._tx() as db:
        db.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (time.time() - seconds_ago, job_id))
    store.close()


def test_ls_refreshes_an_unfinished_job_and_caches_it(tmp_path):
    """A job recorded RUNNING that has ended is listed as it ended, without `status JOB` first; a job polled
    moments ago is shown from its record (the cache) without polling again."""
    job_dir = record(tmp_path, "demo-20260101-000000-aaaa")
    ended(job_dir, code=0)
    last_polled(60, "demo-20260101-000000-aaaa")
    result = run("ls")
    assert result.exit_code == 0 and "demo-20260101-000000-aaaa  local    SUCCEEDED" in result.output, result.output
    assert jobs.JobStore().get("demo-20260101-000000-aaaa").state == "SUCCEEDED"

    fresh = record(tmp_path, "demo-20260101-000001-bbbb")  # just recorded: within REFRESH_FRESH_S
    ended(fresh, code=1)
    assert "demo-20260101-000001-bbbb  local    RUNNING" in run("ls").output


def test_ls_waits_a_bounded_time_for_a_backend_that_hangs(tmp_path, monkeypatch):
    from ftlaunch import backends

    record(tmp_path, "demo-20260101-000000-aaaa")
    last_polled(60, "demo-20260101-000000-aaaa")

    class Hanging:  # a cloud that does not answer (no network): stands in for the provider, not for ls
        def status(self, handle):
            time.sleep(30)

    monkeypatch.setattr(backends, "get", lambda name, **kwargs: Hanging())
    start = time.monotonic()
    result = run("ls")
    assert time.monotonic() - start < cli.REFRESH_BUDGET_S + 3
    assert "demo-20260101-000000-aaaa  local    RUNNING" in result.output, result.output
