"""Azure ML: a job that Azure ML canceled because it reached limits.timeout is reported as "time limit
reached" (FAILED), not as cancelled by the user; through the Azure ML SDK against the emulator."""

from __future__ import annotations

import datetime
import json

import pytest

from cli_run import ftlaunch, wait_for
from test_azureml import azureml, cli_env  # noqa: F401 - the emulator fixture

from ftlaunch.backends.azureml import backend as azure_backend


def test_hit_time_limit_needs_the_whole_timeout():
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    after = lambda s: start + datetime.timedelta(seconds=s)  # noqa: E731
    assert azure_backend.hit_time_limit(3600, start, after(3600))
    assert azure_backend.hit_time_limit(3600, start, after(3590))
    assert not azure_backend.hit_time_limit(3600, start, after(1200))
    assert not azure_backend.hit_time_limit(None, start, after(3600))
    assert not azure_backend.hit_time_limit(3600, None, after(3600))


@pytest.mark.slow
def test_a_job_canceled_at_its_time_limit_is_not_a_user_cancel(azureml, tiny_spec, ftlaunch_home):  # noqa: F811
    env = cli_env(azureml, ftlaunch_home)
    # a prebuilt image: the emulator runs the trainer from this checkout, no container engine needed
    job = json.loads(ftlaunch(env, "--cloud", "azureml", "--image", "ftlaunchtest.azurecr.io/ftlaunch-trainer:prebuilt",
                              "--detach", "--json", "--set", "hyperparameters.max_steps=100000", "--set",
                              "resources.max_runtime=2h",
                              str(tiny_spec)).stdout)["job"]
    assert azureml.jobs[job]["properties"]["limits"]["timeout"] == "PT2H"  # the SDK sends 7200 s as ISO 8601
    wait_for(env, job, {"RUNNING"})
    ftlaunch(env, "cancel", job)
    status = wait_for(env, job, {"CANCELLED", "FAILED", "SUCCEEDED"}, timeout=60)
    assert status["state"] == "CANCELLED" and "time limit" not in (status["reason"] or ""), status
    # what Azure ML records when the service cancels the job at limits.timeout: Canceled, having run 2 h
    started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)
    azureml.runs[job]["startTimeUtc"] = started.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    status = json.loads(ftlaunch(env, "status", job, "--json").stdout)
    assert status["state"] == "FAILED" and status["reason"].startswith("time limit reached"), status
