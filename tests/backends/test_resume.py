"""`ftlaunch resume JOB` on the local process runtime, through the real CLI in subprocesses: a job cancelled
mid-training resumes as a new attempt from its newest complete checkpoint and finishes at the planned
step count; `show` lists both attempts with their steps; job databases made before attempts existed open."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from ftlaunch.core import jobs
from cli_run import ftlaunch, wait_for

pytestmark = pytest.mark.slow

MAX_STEPS = 40


def python_env() -> dict[str, str]:
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false"}


def test_a_cancelled_job_resumes_from_its_checkpoint_and_finishes(tiny_spec, tmp_path):
    env = python_env()
    spec = tiny_spec.read_text().replace("max_steps: 6", f"max_steps: {MAX_STEPS}\n  save_steps: 4")
    tiny_spec.write_text(spec.replace("eval_split: 0.25", "eval_split: 0"))
    out = json.loads(ftlaunch(env, "--cloud", "local", "--runtime", "process", "--detach", "--json",
                              str(tiny_spec)).stdout)
    job = out["job"]
    record = json.loads(ftlaunch(env, "show", job).stdout)
    checkpoints = Path(record["handle"]["provider_id"]) / "checkpoints"
    deadline = time.monotonic() + 240
    while not list(checkpoints.glob("checkpoint-*/COMPLETE")):
        assert time.monotonic() < deadline, ftlaunch(env, "logs", job).stdout
        time.sleep(0.5)
    ftlaunch(env, "cancel", job)
    assert wait_for(env, job, {"CANCELLED"})["state"] == "CANCELLED"
    saved = max(int(p.parent.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*/COMPLETE"))
    assert saved < MAX_STEPS, "the job finished before it was cancelled: give it more steps"

    fetched = tmp_path / "ckpt"
    assert "newest complete checkpoint" in ftlaunch(env, "fetch", job, "--checkpoint", "--dest", str(fetched)).stdout
    assert [p.name for p in fetched.iterdir()] == [f"checkpoint-{saved}"]
    assert (fetched / f"checkpoint-{saved}" / "COMPLETE").is_file()
    assert json.loads((fetched / f"checkpoint-{saved}" / "trainer_state.json").read_text())["global_step"] == saved

    ftlaunch(env, "resume", job, "--detach")
    assert wait_for(env, job, {"SUCCEEDED", "FAILED", "CANCELLED"}, timeout=300)["state"] == "SUCCEEDED", \
        ftlaunch(env, "logs", job).stdout

    shown = json.loads(ftlaunch(env, "show", job).stdout)
    first, second = shown["attempts"]
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert first["last_step"] is not None and first["last_step"] < MAX_STEPS
    assert second["first_step"] == saved + 1  # after the checkpoint, not from step 1
    assert second["last_step"] == MAX_STEPS
    assert f"(step {saved})" in ftlaunch(env, "logs", job).stdout  # "resuming from .../checkpoint-N (step N)"
    metrics = [json.loads(l) for l in (Path(shown["output_uri"]) / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in metrics if "loss" in m]
    assert steps == sorted(set(steps)) and steps[-1] == MAX_STEPS  # no step logged twice after the trim


def test_resume_refuses_an_unknown_job(tmp_path):
    env = python_env()
    for args in (("resume", "no-such-job"), ("--resume", "no-such-job")):  # the command and the launch form
        proc = ftlaunch(env, *args, check=False)
        assert proc.returncode == 2 and "no job 'no-such-job'" in proc.stderr + proc.stdout


def test_a_database_from_before_attempts_is_migrated(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(jobs.SCHEMA.replace("    attempts_json   TEXT,                  -- [{\"attempt\": N, "
                                         "\"started_at\": T, \"provider_id\": ...}], oldest first\n", ""))
    assert "attempts_json" not in {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
    db.execute("INSERT INTO jobs (id, backend, provider_id, spec_name, spec_hash, spec_json, output_uri, state, "
               "handle_json, created_at, updated_at) VALUES ('old-1', 'local', 'p1', 's', 'h', '{}', 'o', "
               "'CANCELLED', '{}', 1.0, 2.0)")
    db.commit()
    db.close()
    store = jobs.JobStore(path)
    try:
        record = store.get("old-1")
        assert record.attempts == [{"attempt": 1, "started_at": 1.0, "provider_id": "p1"}]
        assert record.to_json()["attempts"][0]["provider_id"] == "p1"
    finally:
        store.close()
