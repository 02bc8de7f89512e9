"""Failover (issue 16): a launch whose chosen offer is refused for capacity or quota lands on the plan's next
offer, through the real SDKs against two emulators (Vertex AI and SageMaker, with `--cloud auto`: Azure ML and
SkyPilot are not configured here, so neither the choice nor a failover may land there). A user's mistake on
the first offer stops at once, with its fix. Host-process jobs (HOST_IMAGE): the image path is covered per
cloud in test_<cloud>.py."""

from __future__ import annotations

import json
import os
import sys

import pytest
from cli_run import HOST_IMAGE, ftlaunch, wait_for

from emulators import common

QUOTA = ("The following quota metrics exceed quota limits: "
         "aiplatform.googleapis.com/custom_model_training_nvidia_a100_gpus")


@pytest.fixture(scope="module")
def clouds(tmp_path_factory):
    from emulators.sagemaker import SageMakerEmulator
    from emulators.vertex import VertexEmulator

    vertex = VertexEmulator(tmp_path_factory.mktemp("vertex"))
    sagemaker = SageMakerEmulator(tmp_path_factory.mktemp("sagemaker"))
    yield vertex, sagemaker
    vertex.stop()
    sagemaker.stop()


def creating(request) -> bool:
    return request.method == "POST" and request.path.split("?")[0].endswith("/customJobs")


def vertex_error(code: int, status: str, message: str) -> common.Reply:
    return code, {"Content-Type": "application/json"}, json.dumps(
        {"error": {"code": code, "message": message, "status": status}}).encode()


def env_for(clouds, home) -> dict[str, str]:
    vertex, sagemaker = clouds
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("FTLAUNCH_", "AZURE", "AWS_"))}
    return {**keep, **vertex.env(), **sagemaker.env(), "FTLAUNCH_HOME": str(home), "TOKENIZERS_PARALLELISM": "false"}


def test_dry_run_shows_the_failover_order_within_configured_clouds(clouds, tiny_spec, ftlaunch_home):
    env = env_for(clouds, ftlaunch_home)
    out = json.loads(ftlaunch(env, "--cloud", "auto", "--gpu", "a100", "--dry-run", "--json", *HOST_IMAGE,
                              str(tiny_spec)).stdout)
    assert set(out["not_configured"]) == {"azureml", "skypilot"}
    assert out["plan"]["cloud"] == "vertex"  # the cheapest A100 offer of the configured clouds
    order = out["failover"]
    assert order and {o["target"] for o in order} <= {"vertex", "sagemaker"}
    assert order[0]["target"] == "sagemaker"
    costs = [o["total_usd"][0] for o in order]
    assert costs == sorted(costs)
    text = ftlaunch(env, "--cloud", "auto", "--gpu", "a100", "--dry-run", *HOST_IMAGE, str(tiny_spec)).stdout
    assert "failover, if the chosen offer is refused for capacity or quota:" in text
    assert "1. sagemaker ml.p4d.24xlarge" in text
    assert "--no-failover" not in text
    none = json.loads(ftlaunch(env, "--cloud", "auto", "--gpu", "a100", "--dry-run", "--json", "--no-failover",
                               *HOST_IMAGE, str(tiny_spec)).stdout)
    assert none["failover"] == []
    # a list of clouds: auto among those only, the plan and its failover order alike
    listed = json.loads(ftlaunch(env, "--cloud", "sagemaker,azureml", "--gpu", "a100", "--dry-run", "--json",
                                 *HOST_IMAGE, str(tiny_spec)).stdout)
    assert listed["plan"]["cloud"] == "sagemaker" and listed["not_configured"] == {"azureml": listed["not_configured"]["azureml"]}
    assert {o["target"] for o in listed["failover"]} <= {"sagemaker"}
    assert {o["cloud"] for o in listed["plan"]["offers"]} == {"sagemaker"}
    wrong = ftlaunch(env, "--cloud", "vertex,gcp", "--dry-run", str(tiny_spec), check=False)
    assert wrong.returncode == 2 and "resources.clouds" in wrong.stderr and "'gcp'" in wrong.stderr


@pytest.mark.slow
def test_a_quota_refusal_fails_over_to_the_next_offer_which_runs(clouds, tiny_spec, tmp_path, ftlaunch_home):
    vertex, sagemaker = clouds
    env = env_for(clouds, ftlaunch_home)
    vertex.proxy.faults[:] = [common.Fault(creating, vertex_error(429, "RESOURCE_EXHAUSTED", QUOTA), times=10)]
    created_before = len(sagemaker.proxy.calls("CreateTrainingJob"))
    heard = tmp_path / "notified.jsonl"
    code = ("import json, os; open(os.environ['FTLAUNCH_NOTIFY_JOB'] and %r, 'a').write(json.dumps("
            "{k: v for k, v in os.environ.items() if k.startswith('FTLAUNCH_NOTIFY_')}) + '\\n')" % str(heard))
    tiny_spec.write_text(tiny_spec.read_text() + f"notify:\n  command: [{sys.executable}, -c, {json.dumps(code)}]\n")
    launched = ftlaunch(env, "--cloud", "auto", "--gpu", "a100", "--detach", "--json", *HOST_IMAGE, str(tiny_spec))
    job = json.loads(launched.stdout)["job"]
    assert json.loads(launched.stdout)["backend"] == "sagemaker"
    # refused once, not retried (waiting does not bring quota), and nothing was created on Vertex
    assert sum(1 for r, status in vertex.proxy.requests if creating(r)) == 1
    assert not [j for j in vertex.jobs.values() if j["displayName"] == job]
    assert len(sagemaker.proxy.calls("CreateTrainingJob")) == created_before + 1

    [event] = [json.loads(line) for line in heard.read_text().splitlines()]  # notify: told of the failover
    assert event["FTLAUNCH_NOTIFY_STATE"] == "FAILOVER" and event["FTLAUNCH_NOTIFY_BACKEND"] == "vertex"
    assert "custom_model_training_nvidia_a100_gpus" in event["FTLAUNCH_NOTIFY_REASON"]
    status = wait_for(env, job, {"SUCCEEDED", "FAILED"})
    assert status["state"] == "SUCCEEDED", ftlaunch(env, "logs", job).stdout
    dest = tmp_path / "fetched"
    assert "verified" in ftlaunch(env, "fetch", job, "--dest", str(dest)).stdout
    assert json.loads((dest / "summary.json").read_text())["steps"] == 6

    shown = json.loads(ftlaunch(env, "show", job).stdout)
    first, second = shown["attempts"]
    assert first["backend"] == "vertex" and "custom_model_training_nvidia_a100_gpus" in first["refused"]
    assert second["backend"] == "sagemaker" and second["provider_id"].endswith(f"training-job/{job}")
    assert shown["backend"] == "sagemaker"


def test_a_users_mistake_on_the_first_offer_stops_without_failover(clouds, tiny_spec, ftlaunch_home):
    vertex, sagemaker = clouds
    env = env_for(clouds, ftlaunch_home)
    vertex.proxy.faults[:] = [common.Fault(creating, vertex_error(
        403, "PERMISSION_DENIED", "Permission 'aiplatform.customJobs.create' denied"), times=1)]
    created_before = len(sagemaker.proxy.calls("CreateTrainingJob"))
    proc = ftlaunch(env, "--cloud", "auto", "--gpu", "a100", "--detach", *HOST_IMAGE, str(tiny_spec), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "403" in proc.stderr and "docs/clouds.md" in proc.stderr  # the fix: the roles the caller needs
    assert "failing over" not in proc.stderr
    assert len(sagemaker.proxy.calls("CreateTrainingJob")) == created_before
    assert ftlaunch(env, "ls").stdout.count("sagemaker") == 0  # nothing was recorded as launched elsewhere


@pytest.mark.slow
def test_a_followed_job_that_fails_for_want_of_gpus_fails_over_and_exits_0(clouds, tiny_spec, ftlaunch_home):
    vertex, sagemaker = clouds
    env = env_for(clouds, ftlaunch_home)
    vertex.proxy.faults.clear()
    vertex.stockouts = 1
    proc = ftlaunch(env, "--cloud", "auto", "--gpu", "a100", *HOST_IMAGE, str(tiny_spec), check=False, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "failing over to sagemaker" in proc.stderr and "SUCCEEDED" in proc.stdout
    job = next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("submitted "))
    shown = json.loads(ftlaunch(env, "show", job).stdout)
    first, second = shown["attempts"]
    assert first["backend"] == "vertex" and "does not have enough resources" in first["refused"]
    assert second["backend"] == "sagemaker" and "refused" not in second
    assert shown["backend"] == "sagemaker" and shown["state"] == "SUCCEEDED"
