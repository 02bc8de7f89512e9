"""`notify:` in the spec: a local process job, launched and polled through the real `ftlaunch` command,
calls the notify command once per state change the launcher sees, with the documented fields, and
never with a secret's value in its environment; a notify that fails is a warning, not a failed command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftlaunch.core import errors, spec
from ftlaunch.cli import notify

RECORDER = """\
import json, os, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(dict(os.environ)) + "\\n")
"""
SECRET_VALUE = "hf_notify_test_secret_value_123"


def ftlaunch(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "ftlaunch", *args], capture_output=True, text=True, timeout=300,
                          env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"ftlaunch {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def notify_spec(tiny_spec: Path, tmp_path: Path, command: list[str]) -> Path:
    path = tmp_path / "notify.yaml"
    path.write_text(tiny_spec.read_text() + "resources: {runtime: process}\nsecrets: [HF_TOKEN]\n"
                    f"notify:\n  command: {json.dumps(command)}\n")
    return path


def poll_until(env: dict[str, str], job: str, states: set[str], timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = json.loads(ftlaunch(env, "status", job, "--json").stdout)["state"]
        if state in states:
            return state
        ftlaunch(env, "ls")  # ls refreshes unfinished jobs too: a change it sees is told once as well
        time.sleep(0.5)
    raise AssertionError(f"{job} did not reach {states}:\n{ftlaunch(env, 'logs', job).stdout}")


@pytest.mark.slow
def test_notify_command_gets_one_call_per_state_change(tiny_spec, tmp_path, ftlaunch_home):
    calls_file = tmp_path / "calls.jsonl"
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER)
    spec_path = notify_spec(tiny_spec, tmp_path, [sys.executable, str(recorder), str(calls_file)])
    env = {**os.environ, "FTLAUNCH_HOME": str(ftlaunch_home), "TOKENIZERS_PARALLELISM": "false",
           "HF_TOKEN": SECRET_VALUE}

    job = json.loads(ftlaunch(env, "--cloud", "local", "--detach", "--json", str(spec_path)).stdout)["job"]
    assert poll_until(env, job, {"SUCCEEDED", "FAILED"}) == "SUCCEEDED"
    for _ in range(2):  # no change: no call
        ftlaunch(env, "status", job)
        ftlaunch(env, "ls")

    calls = [json.loads(line) for line in calls_file.read_text().splitlines()]
    events = [{k.removeprefix("FTLAUNCH_NOTIFY_").lower(): v for k, v in c.items() if k.startswith("FTLAUNCH_NOTIFY_")}
              for c in calls]
    assert events, "the notify command was never called"
    assert [e["state"] for e in events][-1] == "SUCCEEDED"
    previous = "PENDING"
    for event in events:  # a chain of changes, each told once
        assert set(event) == set(notify.FIELDS), event
        assert event["job"] == job and event["backend"] == "local"
        assert event["previous_state"] == previous != event["state"], events
        previous = event["state"]
    assert len(events) == len({e["state"] for e in events})
    assert events[-1]["output"] and float(events[-1]["predicted_cost"]) >= 0
    for call in calls:  # secrets by name only: no value of the launcher's environment beyond the base
        assert SECRET_VALUE not in json.dumps(call)
        assert set(call) - {f"FTLAUNCH_NOTIFY_{f.upper()}" for f in notify.FIELDS} <= set(notify.BASE_ENV)

    # a cancelled job: exactly one call says CANCELLED
    job2 = json.loads(ftlaunch(env, "--cloud", "local", "--detach", "--json", "--set",
                               "hyperparameters.max_steps=100000", str(spec_path)).stdout)["job"]
    poll_until(env, job2, {"RUNNING"})
    ftlaunch(env, "cancel", job2)
    ftlaunch(env, "status", job2)
    mine = [json.loads(line) for line in calls_file.read_text().splitlines()]
    mine = [c for c in mine if c["FTLAUNCH_NOTIFY_JOB"] == job2]
    assert [c["FTLAUNCH_NOTIFY_STATE"] for c in mine].count("CANCELLED") == 1, mine
    assert [c["FTLAUNCH_NOTIFY_STATE"] for c in mine][-1] == "CANCELLED"


def test_a_failing_notify_warns_and_never_fails_the_command(tmp_path):
    warnings: list[str] = []
    event = {"job": "j-1", "backend": "local", "state": "FAILED", "previous_state": "RUNNING", "reason": "oom",
             "cost": None, "predicted_cost": 0.5, "output": "/x"}
    notify.send({"command": [str(tmp_path / "missing-command")]}, event, warnings.append)
    notify.send({"command": [sys.executable, "-c", "import sys; sys.exit('boom')"]}, event, warnings.append)
    notify.send({"url": "http://127.0.0.1:9/hook?token=abc"}, event, warnings.append)  # nothing listens on 9
    notify.send({"url_from": "FTLAUNCH_TEST_UNSET_URL"}, event, warnings.append)
    assert len(warnings) == 4, warnings
    assert "was not found" in warnings[0] and "exited 1" in warnings[1] and "boom" in warnings[1]
    assert "could not be reached" in warnings[2] and "token=abc" not in warnings[2]  # the URL is never shown
    assert "FTLAUNCH_TEST_UNSET_URL" in warnings[3]


def test_notify_url_gets_the_event_as_json(tmp_path):
    import http.server
    import threading

    got: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        warnings: list[str] = []
        event = {"job": "j-2", "backend": "vertex", "state": "SUCCEEDED", "previous_state": "RUNNING",
                 "reason": None, "cost": 1.25, "predicted_cost": 1.5, "output": "gs://b/o"}
        os.environ["FTLAUNCH_TEST_HOOK_URL"] = f"http://127.0.0.1:{server.server_address[1]}/hook"
        try:
            notify.send({"url_from": "FTLAUNCH_TEST_HOOK_URL"}, event, warnings.append)
        finally:
            del os.environ["FTLAUNCH_TEST_HOOK_URL"]
    finally:
        server.shutdown()
    assert got == [event] and not warnings


@pytest.mark.parametrize("section, field", [
    ("notify: {}", "notify"),
    ("notify: {command: []}", "notify.command"),
    ("notify: {url: 'http://example.com/hook'}", "notify.url"),
    ("notify: {url_from: hooks.example.com}", "notify.url_from"),
    ("notify: {url: 'https://a.example/h', url_from: HOOK}", "notify"),
    ("notify: {command: [echo], shell: true}", "notify.shell"),
])
def test_notify_section_is_strict(section, field):
    with pytest.raises(errors.UserError) as info:
        spec.loads(f"name: a\nmodel: org/model\ndataset: {{path: org/data}}\n{section}\n")
    assert [p.field for p in info.value.problems] == [field]
    assert info.value.problems[0].where == "<spec>:4"


def test_notify_changes_neither_the_digest_nor_the_job_spec():
    from ftlaunch.backends import base

    plain = spec.loads("name: a\nmodel: org/model\ndataset: {path: org/data}\n")
    told = spec.loads("name: a\nmodel: org/model\ndataset: {path: org/data}\nnotify: {command: [echo]}\n")
    assert told.digest() == plain.digest()
    assert "notify" not in plain.to_json()
    assert base.job_spec(told.to_json(), {}) == base.job_spec(plain.to_json(), {})
