"""Provider fixes of issue 13, each through the provider's real SDK: boto3 clients whose answers come from
botocore's Stubber (checked against the service model), or the rendered request."""

from __future__ import annotations

import datetime

import pytest

from ftlaunch.backends import get
from ftlaunch.backends.base import JobHandle, State

boto3 = pytest.importorskip("boto3")
from botocore.stub import Stubber  # noqa: E402

JOB = "tuned-20260101-000000-abcd"
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def sagemaker_status(answer: dict, extra: dict):
    client = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    described = {"TrainingJobName": JOB, "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:1:training-job/{JOB}",
                 "ModelArtifacts": {"S3ModelArtifacts": f"s3://b/jobs/{JOB}/output/model.tar.gz"},
                 "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "i"},
                 "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
                 "StoppingCondition": {"MaxRuntimeInSeconds": 3600}, "CreationTime": NOW, **answer}
    with Stubber(client) as stub:
        stub.add_response("describe_training_job", described, {"TrainingJobName": JOB})
        backend = get("sagemaker", clients={"sagemaker": client})
        handle = JobHandle(backend="sagemaker", job_name=JOB, provider_id=described["TrainingJobArn"],
                           output_uri=f"s3://b/jobs/{JOB}/output", extra={"region": "us-east-1", **extra})
        return backend.status(handle)


def test_sagemaker_managed_spot_cost_is_not_discounted_twice():
    # 1 h trained, 0.3 h billable (70% spot savings): billed at the on-demand price, $10/h -> $3
    spot = {"TrainingJobStatus": "Completed", "SecondaryStatus": "Completed", "EnableManagedSpotTraining": True,
            "TrainingTimeInSeconds": 3600, "BillableTimeInSeconds": 1080}
    status = sagemaker_status(spot, {"price_per_hour": 3.0, "on_demand_price_per_hour": 10.0})
    assert status.state is State.SUCCEEDED and status.actual_cost == pytest.approx(3.0)
    # a record made before the on-demand price was kept: training time at the spot price, not billable x spot
    assert sagemaker_status(spot, {"price_per_hour": 3.0}).actual_cost == pytest.approx(3.0)
    on_demand = {"TrainingJobStatus": "Completed", "SecondaryStatus": "Completed", "BillableTimeInSeconds": 1800}
    assert sagemaker_status(on_demand, {"price_per_hour": 10.0}).actual_cost == pytest.approx(5.0)


@pytest.mark.parametrize("state", ["Deleting", "Deleted"])
def test_sagemaker_a_deleted_job_is_not_running(state):
    status = sagemaker_status({"TrainingJobStatus": state, "SecondaryStatus": "Completed"}, {"price_per_hour": 1.0})
    assert status.state is State.CANCELLED and status.state.done and "deleted" in status.reason


@pytest.mark.parametrize("machine, disk", [
    ("a3-ultragpu-8g", "hyperdisk-balanced"), ("a4-highgpu-8g", "hyperdisk-balanced"),
    ("a4x-highgpu-4g", "hyperdisk-balanced"), ("a3-highgpu-8g", "pd-ssd"), ("a2-highgpu-1g", "pd-ssd"),
    ("g2-standard-8", "pd-ssd")])
def test_vertex_boot_disk_per_machine_family(machine, disk):
    from ftlaunch.backends.vertex import render

    assert render.boot_disk_type(machine) == disk


def test_vertex_h200_request_renders_hyperdisk():
    """The rendered request, not only the helper: the H200 offer (a3-ultragpu) gets hyperdisk-balanced, an
    A100 offer pd-ssd. The H200 row's price is marked doubtful, so the planner never chooses it by itself;
    the offer is taken from the plan's own offer list and rendered as if chosen."""
    from golden_files import JOB_NAME, REPO, UNCONFIGURED

    from ftlaunch.planning import plan as plan_mod
    from ftlaunch.core import spec as spec_mod
    from ftlaunch.backends import get
    from ftlaunch.backends.vertex import settings

    for gpu, disk in (("h200", "hyperdisk-balanced"), ("a100", "pd-ssd")):
        spec = spec_mod.load(REPO / "examples/quickstart.yaml", ("resources.cloud=vertex", f"resources.gpu={gpu}"))
        plan = plan_mod.make(spec, name=JOB_NAME, require_fit=False)
        offer = next(o for o in plan.offers if o.fits)
        plan.offer, plan.cloud, plan.output_uri = offer, "vertex", ""
        plan.context = settings.resolve(plan.spec, plan.job_name, env=UNCONFIGURED)
        pools = get("vertex").render(plan).payload["jobSpec"]["workerPoolSpecs"]
        assert {p["diskSpec"]["bootDiskType"] for p in pools} == {disk}, pools[0]["machineSpec"]


def test_skypilot_asks_the_jobs_queue_for_failure_reason():
    """The API server answers only the fields asked for. A stand-in for the `sky` module binds each call to
    the real SDK's queue_v2 signature and answers as the server does, with the requested fields only."""
    import inspect
    import types

    sky_jobs = pytest.importorskip("sky.jobs")
    from sky.schemas.api import responses

    real = inspect.signature(sky_jobs.queue_v2)
    full = {"job_id": 7, "task_id": 0, "job_name": JOB, "status": "FAILED_SETUP", "job_duration": 60.0,
            "failure_reason": "setup failed: pip could not install flash-attn", "recovery_count": 0}
    asked: list = []

    def queue_v2(*args, **kwargs):
        bound = real.bind(*args, **kwargs)
        bound.apply_defaults()
        fields = bound.arguments["fields"]
        asked.append(fields)
        assert set(fields) <= set(responses.ManagedJobRecord.model_fields), "a field the server does not know"
        return [{k: v for k, v in full.items() if fields is None or k in fields}]

    sky = types.SimpleNamespace(jobs=types.SimpleNamespace(queue_v2=queue_v2), get=lambda answer: answer)
    backend = get("skypilot", sdk=sky)
    handle = JobHandle(backend="skypilot", job_name=JOB, provider_id="7", output_uri="s3://b/o", extra={})
    status = backend.status(handle)
    assert "failure_reason" in asked[-1]
    assert status.state is State.FAILED and status.reason == full["failure_reason"]
