"""The SageMaker backend through boto3 against moto (S3, IAM, SageMaker, CloudWatch Logs), with the
emulator side running the real trainer under SageMaker's /opt/ml contract (emulators/sagemaker.py).

Rendered requests are pinned by golden files and validated against botocore's SageMaker service model.
In the image: test_launch_runs_the_image_from_the_registry (the job image built once per session, pushed to
the 127.0.0.1 registry, pulled and run by the emulator as SageMaker runs it). On the host, for speed, with
`--image` naming a prebuilt reference so the launch builds nothing: the failure, cancel and retry tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import golden_files
from cli_run import (HOST_IMAGE, cancel_resume_and_fetch, check_ran_in_image_then_fetch, check_relaunch_uploads_nothing,
                     ftlaunch, make_resumable, wait_for)
import pytest

from ftlaunch.core import errors
from ftlaunch.backends import base, get
from ftlaunch.backends.base import State

from emulators import common

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- render: golden files and botocore's schema


def validate_create_training_job(payload: dict) -> None:
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("sagemaker")
    report = ParamValidator().validate(payload, model.operation_model("CreateTrainingJob").input_shape)
    assert not report.has_errors(), report.generate_report()


@pytest.mark.parametrize("golden, overrides", [
    ("sagemaker-quickstart.json", ()),
    ("sagemaker-spot-2-nodes.json", ("resources.spot=true", "resources.nodes=2", "resources.max_cost=50",
                                     "secrets=[HF_TOKEN]")),
])
def test_render_matches_golden_and_botocore_schema(golden, overrides):
    request = golden_files.render_example("sagemaker", overrides)
    golden_files.check(golden, request)
    validate_create_training_job(request.payload)
    p = request.payload
    assert p["AlgorithmSpecification"]["ContainerArguments"] == ["--spec", "/opt/ml/input/data/spec/spec.json"]
    assert p["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert {c["ChannelName"] for c in p["InputDataConfig"]} == {"spec", "train", "eval", "model"}
    job_spec = json.loads(request.uploads[0]["content"])
    assert job_spec["dataset"]["path"] == "/opt/ml/input/data/train/city-extraction-train.jsonl"
    if "resources.spot=true" in overrides:
        stop = p["StoppingCondition"]
        assert p["EnableManagedSpotTraining"] and stop["MaxWaitTimeInSeconds"] >= stop["MaxRuntimeInSeconds"]
        assert p["ResourceConfig"]["InstanceCount"] == 2
        assert stop["MaxRuntimeInSeconds"] < 86400  # max_cost became the runtime cap
        # secrets by reference: a name and a Secrets Manager id, never a value
        assert json.loads(p["Environment"]["FTLAUNCH_SECRETS"]) == {"HF_TOKEN": "HF_TOKEN"}
        assert request.secrets == ["HF_TOKEN"]


def test_submit_refuses_placeholders_without_network():
    request = golden_files.render_example("sagemaker")
    with pytest.raises(errors.UserError) as info:
        get("sagemaker").submit(request)
    text = info.value.render()
    for var in ("FTLAUNCH_SAGEMAKER_ROLE", "FTLAUNCH_S3_BUCKET", "FTLAUNCH_ECR_REGISTRY"):
        assert var in text


def test_dry_run_cli_prints_request_and_cost_table(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FTLAUNCH_S", "FTLAUNCH_E", "AWS_"))}
    env["FTLAUNCH_HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "ftlaunch", "--cloud", "sagemaker", "--gpu", "a100", "--dry-run",
                           "quickstart.yaml"], cwd=REPO / "examples", env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "offers" in proc.stdout and "ml.p4d.24xlarge" in proc.stdout and "CreateTrainingJob" not in proc.stderr
    assert '"TrainingJobName"' in proc.stdout and "unset-ftlaunch-s3-bucket" in proc.stdout


# ---------------------------------------------------------------- against the emulator


@pytest.fixture(scope="module")
def sagemaker(tmp_path_factory):
    from emulators.sagemaker import SageMakerEmulator

    emulator = SageMakerEmulator(tmp_path_factory.mktemp("sagemaker"))
    yield emulator
    emulator.stop()


def cli_env(sagemaker, ftlaunch_home) -> dict[str, str]:
    return {**os.environ, **sagemaker.env(), "FTLAUNCH_HOME": str(ftlaunch_home), "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.slow
def test_launch_runs_trainer_then_status_logs_fetch(sagemaker, tiny_spec, tmp_path, ftlaunch_home):
    env = cli_env(sagemaker, ftlaunch_home)
    submitted = json.loads(ftlaunch(env, "--cloud", "sagemaker", "--detach", "--json", *HOST_IMAGE,
                                    str(tiny_spec)).stdout)
    job = submitted["job"]
    assert submitted["provider_id"].endswith(f"training-job/{job}")
    status = wait_for(env, job, {"SUCCEEDED", "FAILED"})
    log = ftlaunch(env, "logs", job).stdout
    assert status["state"] == "SUCCEEDED", (status, log)
    assert "outputs complete" in log

    dest = tmp_path / "fetched"
    assert "verified" in ftlaunch(env, "fetch", job, "--dest", str(dest)).stdout
    for name in ("metrics.jsonl", "summary.json", "manifest.json", "weights/adapter_model.safetensors"):
        assert (dest / name).exists(), name
    assert json.loads((dest / "summary.json").read_text())["steps"] == 6

    # the job got its model and data through input channels, not the launcher's paths
    created = sagemaker.proxy.calls("CreateTrainingJob")[-1][0].json()
    assert {c["ChannelName"] for c in created["InputDataConfig"]} == {"spec", "train", "model"}
    record = sagemaker.job(job)
    assert record.billable_time_in_seconds >= 1
    handle = base.JobHandle(**json.loads(ftlaunch(env, "show", job).stdout)["handle"])
    backend = get("sagemaker", clients={"sagemaker": sagemaker.client("sagemaker", via_proxy=True)})
    assert backend.status(handle).actual_cost > 0  # BillableTimeInSeconds x the offer's price


@pytest.mark.slow
def test_a_dataset_already_in_s3_reaches_the_job_as_a_channel(sagemaker, tiny_spec, alpaca_file, ftlaunch_home):
    env = cli_env(sagemaker, ftlaunch_home)
    sagemaker.s3.upload_file(str(alpaca_file), "ftlaunch-test", "datasets/tiny/train.jsonl")
    uri = "s3://ftlaunch-test/datasets/tiny/train.jsonl"
    job = json.loads(ftlaunch(env, "--cloud", "sagemaker", "--detach", "--json", *HOST_IMAGE, "--set",
                              f"dataset.path={uri}", str(tiny_spec)).stdout)["job"]
    status = wait_for(env, job, {"SUCCEEDED", "FAILED"})
    assert status["state"] == "SUCCEEDED", ftlaunch(env, "logs", job).stdout
    created = sagemaker.bodies[job]
    [train] = [c for c in created["InputDataConfig"] if c["ChannelName"] == "train"]
    assert train["DataSource"]["S3DataSource"]["S3Uri"] == uri  # read where it is: nothing uploaded again
    spec_key = created["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"][len("s3://ftlaunch-test/"):]
    job_spec = json.loads(sagemaker.s3.get_object(Bucket="ftlaunch-test", Key=spec_key + "spec.json")["Body"].read())
    assert job_spec["dataset"]["path"] == "/opt/ml/input/data/train/train.jsonl"


@pytest.mark.slow
def test_launch_runs_the_image_from_the_registry(sagemaker, job_image, dockerd, tiny_spec, tmp_path, ftlaunch_home):
    """launch -> the image is found in the registry -> the emulator pulls and runs it as SageMaker does ->
    model.tar.gz in S3 -> SUCCEEDED -> fetch verifies; a relaunch builds and pushes nothing."""
    env = {**cli_env(sagemaker, ftlaunch_home), **job_image.env, "FTLAUNCH_ECR_REGISTRY": job_image.registry}
    sagemaker.engine = dockerd
    try:
        launched = ftlaunch(env, "--cloud", "sagemaker", "--detach", "--json", str(tiny_spec))
        job = json.loads(launched.stdout)["job"]
        status = wait_for(env, job, {"SUCCEEDED", "FAILED"}, timeout=600)
    finally:
        sagemaker.engine = None
    log = ftlaunch(env, "logs", job).stdout
    assert status["state"] == "SUCCEEDED", (status, log)
    created = [r.json() for r, _ in sagemaker.proxy.calls("CreateTrainingJob")
               if r.json()["TrainingJobName"] == job][-1]
    assert created["AlgorithmSpecification"]["TrainingImage"] == job_image.ref
    check_ran_in_image_then_fetch(env, "sagemaker", job, sagemaker.ran[job], job_image, str(tiny_spec),
                                  tmp_path / "fetched")


@pytest.mark.slow
def test_failed_job_maps_to_failed_with_the_failure_reason(sagemaker, tiny_spec, tmp_path, ftlaunch_home):
    env = cli_env(sagemaker, ftlaunch_home)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    job = json.loads(ftlaunch(env, "--cloud", "sagemaker", "--detach", "--json", *HOST_IMAGE, "--skip-preflight", "--set",
                              f"dataset.path={empty}",
                              str(tiny_spec)).stdout)["job"]
    status = wait_for(env, job, {"SUCCEEDED", "FAILED"})
    assert status["state"] == "FAILED"
    # SageMaker's FailureReason, from /opt/ml/output/failure: the trainer's exit and its last words
    assert status["reason"].startswith("AlgorithmError: trainer exited with code"), status["reason"]
    fetched = ftlaunch(env, "fetch", job, check=False)
    assert fetched.returncode == 2 and "no complete outputs" in fetched.stderr


@pytest.mark.slow
def test_cancel_stops_the_job(sagemaker, tiny_spec, ftlaunch_home):
    env = cli_env(sagemaker, ftlaunch_home)
    job = json.loads(ftlaunch(env, "--cloud", "sagemaker", "--detach", "--json", *HOST_IMAGE, "--set",
                              "hyperparameters.max_steps=100000", str(tiny_spec)).stdout)["job"]
    wait_for(env, job, {"RUNNING"})
    ftlaunch(env, "cancel", job)
    status = wait_for(env, job, {"CANCELLED", "FAILED", "SUCCEEDED"}, timeout=60)
    assert status["state"] == "CANCELLED", status
    assert len(sagemaker.proxy.calls("StopTrainingJob")) == 1
    ftlaunch(env, "cancel", job)  # an ended job: silent, and no second StopTrainingJob
    assert len(sagemaker.proxy.calls("StopTrainingJob")) == 1


@pytest.mark.slow
def test_a_stopped_job_resumes_as_a_new_training_job_from_its_s3_checkpoints(sagemaker, tiny_spec, tmp_path,
                                                                              ftlaunch_home):
    env = cli_env(sagemaker, ftlaunch_home)
    make_resumable(tiny_spec)
    job = json.loads(ftlaunch(env, "--cloud", "sagemaker", "--detach", "--json", *HOST_IMAGE, str(tiny_spec)).stdout)["job"]
    deadline = time.monotonic() + 240
    while job not in sagemaker.bodies:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    bucket, _, prefix = sagemaker.bodies[job]["CheckpointConfig"]["S3Uri"][5:].partition("/")

    def saved_steps() -> set[int]:  # the emulator uploads /opt/ml/checkpoints as SageMaker does, while the job runs
        keys = [o["Key"] for o in sagemaker.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
        return {int(k.split("checkpoint-")[1].split("/")[0]) for k in keys if k.endswith("/COMPLETE")}

    _, (one, two) = cancel_resume_and_fetch(env, job, saved_steps, saved_steps, tmp_path / "fetched")
    second = sagemaker.bodies[f"{job}-a2"]  # a new training job with the same request, read back from SageMaker
    first = sagemaker.bodies[job]
    for key in ("CheckpointConfig", "Environment", "InputDataConfig", "OutputDataConfig", "AlgorithmSpecification"):
        assert second[key] == first[key], key
    assert one["provider_id"].endswith(f"training-job/{job}") and two["provider_id"].endswith(f"training-job/{job}-a2")


def test_retries_throttling_and_5xx_and_never_creates_a_second_job(sagemaker, tmp_path):
    from ftlaunch.backends.sagemaker.backend import SageMakerBackend

    request = golden_files.render_example("sagemaker", env={**golden_files.UNCONFIGURED, **{k: v for k, v in sagemaker.env().items()
                                                     if k.startswith("FTLAUNCH_")}})
    request.payload["AlgorithmSpecification"]["ContainerEntrypoint"] = ["python", "-c", "print('hi')"]
    request.payload["TrainingJobName"] = request.job_name = "retry-job-1"
    request.extra["model_artifact"] = request.extra["model_artifact"].replace("quickstart-20260101-000000-abcd",
                                                                              "retry-job-1")
    proxy = sagemaker.proxy
    create = lambda r: r.target == "CreateTrainingJob"  # noqa: E731
    creates = lambda: [s for r, s in proxy.calls("CreateTrainingJob")  # noqa: E731
                       if r.json()["TrainingJobName"] == "retry-job-1"]
    proxy.faults += [
        common.Fault(create, common.aws_error(400, "ThrottlingException", "Rate exceeded")),
        # the second attempt reaches SageMaker and creates the job, but its answer is lost
        common.Fault(create, common.aws_error(500, "InternalFailure", "We encountered an internal error"), after=True),
        common.Fault(lambda r: r.target == "DescribeTrainingJob",
                     common.aws_error(503, "ServiceUnavailable", "Service unavailable"), times=2),
    ]
    backend = SageMakerBackend(clients={"sagemaker": sagemaker.client("sagemaker", via_proxy=True),
                                        "s3": sagemaker.client("s3"), "logs": sagemaker.client("logs")},
                               backoff_s=0.01)
    handle = backend.submit(request)
    assert handle.provider_id.endswith("training-job/retry-job-1")
    assert creates() == [400, 500], creates()  # found by name after the lost answer: not created again
    assert backend.status(handle).state in (State.PENDING, State.RUNNING, State.SUCCEEDED)
    # submitting the same name again is the same job
    assert backend.submit(request).provider_id == handle.provider_id
    assert creates() == [400, 500, 400]  # ResourceInUse: the job of that name is adopted
    deadline = time.monotonic() + 60
    while backend.status(handle).state is not State.SUCCEEDED and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "hi" in list(backend.logs(handle))


def test_entry_resolves_secrets_inside_the_job(sagemaker, monkeypatch):
    from ftlaunch.backends.sagemaker import entry

    sm = sagemaker.client("secretsmanager")
    sm.create_secret(Name="ftlaunch/hf-token", SecretString="hf_value_only_in_the_job")
    for k, v in sagemaker.env().items():
        monkeypatch.setenv(k, v)
    env = {"FTLAUNCH_SECRETS": json.dumps({"HF_TOKEN": "ftlaunch/hf-token"}), "AWS_REGION": "us-east-1"}
    assert entry.secrets(env) == {"HF_TOKEN": "hf_value_only_in_the_job"}


def test_entry_uses_torchrun_across_hosts():
    from ftlaunch.backends.sagemaker import entry

    env = {"SM_HOSTS": json.dumps(["algo-1", "algo-2"]), "SM_CURRENT_HOST": "algo-2", "SM_NUM_GPUS": "8"}
    command = entry.trainer_command("{}", env)
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert "--nnodes=2" in command and "--node_rank=1" in command and "--nproc_per_node=8" in command
    assert "--master_addr=algo-1" in command


def test_check_reports_what_each_cloud_backend_misses(sagemaker, tmp_path):
    from ftlaunch.cli import check

    home = tmp_path / "home"
    home.mkdir()
    rows = {r["backend"]: r for r in check.gather({"HOME": str(home), "FTLAUNCH_HOME": str(home)})}
    assert not rows["sagemaker"]["ready"]
    missing = {i["what"] for i in rows["sagemaker"]["items"] if not i["ok"]}
    assert {"FTLAUNCH_SAGEMAKER_ROLE", "FTLAUNCH_S3_BUCKET", "FTLAUNCH_ECR_REGISTRY"} <= missing
    vertex = {i["what"]: i for i in rows["vertex"]["items"]}
    assert not vertex["FTLAUNCH_GCS_BUCKET"]["ok"] and "export FTLAUNCH_GCS_BUCKET" in vertex["FTLAUNCH_GCS_BUCKET"]["fix"]
    rows = {r["backend"]: r for r in check.gather({**sagemaker.env(), "FTLAUNCH_HOME": str(home)})}
    assert all(i["ok"] for i in rows["sagemaker"]["items"] if i["what"].startswith("FTLAUNCH_"))


@pytest.mark.slow
def test_relaunch_uploads_nothing_and_a_changed_byte_uploads_once(sagemaker, tiny_spec, alpaca_file, ftlaunch_home):
    env = {**cli_env(sagemaker, ftlaunch_home), "FTLAUNCH_S3_PREFIX": "upload-cache"}

    def inputs() -> dict[str, tuple]:
        listed = sagemaker.s3.list_objects_v2(Bucket=env["FTLAUNCH_S3_BUCKET"], Prefix="upload-cache/inputs/")
        return {o["Key"]: (o["ETag"], o["LastModified"]) for o in listed.get("Contents", [])}

    check_relaunch_uploads_nothing(env, "sagemaker", tiny_spec, alpaca_file, inputs)
