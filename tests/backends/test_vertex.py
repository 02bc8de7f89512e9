"""The Vertex AI backend through google-cloud-aiplatform's JobServiceClient (REST) and google-cloud-storage,
against a local custom-jobs server and gcp-storage-emulator; the emulator side runs the real trainer
under Vertex's contract (AIP_MODEL_DIR, AIP_CHECKPOINT_DIR, CLUSTER_SPEC, /gcs).

Rendered requests are pinned by golden files and parsed by the aiplatform_v1.CustomJob protobuf type.
In the image: test_launch_runs_the_image_from_the_registry (the session's job image, pulled from the
127.0.0.1 registry and run as Vertex runs a worker pool). On the host, for speed, with `--image` naming a
prebuilt reference so the launch builds nothing: the other launch, failure, cancel and retry tests.
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
from ftlaunch.backends import get
from ftlaunch.backends.base import State

from emulators import common
from emulators.vertex import BUCKET

REPO = Path(__file__).resolve().parents[2]


def validate_custom_job(payload: dict) -> None:
    from google.cloud import aiplatform_v1

    job = aiplatform_v1.CustomJob.from_json(json.dumps(payload))  # unknown fields or bad enums raise
    assert job.job_spec.worker_pool_specs[0].container_spec.image_uri


@pytest.mark.parametrize("golden, overrides", [
    ("vertex-quickstart.json", ()),
    ("vertex-spot-2-nodes.json", ("resources.spot=true", "resources.nodes=2", "resources.max_cost=50",
                                  "secrets=[HF_TOKEN]")),
])
def test_render_matches_golden_and_the_custom_job_type(golden, overrides):
    request = golden_files.render_example("vertex", overrides)
    golden_files.check(golden, request)
    validate_custom_job(request.payload)
    spec = request.payload["jobSpec"]
    assert spec["scheduling"]["restartJobOnWorkerRestart"] is True
    assert spec["workerPoolSpecs"][0]["machineSpec"]["acceleratorType"] == "NVIDIA_TESLA_A100"
    job_spec = json.loads(request.uploads[0]["content"])
    assert job_spec["dataset"]["path"].startswith("/gcs/")
    if "resources.spot=true" in overrides:
        assert spec["scheduling"]["strategy"] == "SPOT"
        assert [p["replicaCount"] for p in spec["workerPoolSpecs"]] == ["1", "1"]
        assert int(spec["scheduling"]["timeout"].rstrip("s")) < 7 * 86400  # max_cost became the timeout
        env = {e["name"]: e["value"] for e in spec["workerPoolSpecs"][0]["containerSpec"]["env"]}
        assert json.loads(env["FTLAUNCH_SECRETS"]) == {
            "HF_TOKEN": "projects/unset-ftlaunch-gcp-project/secrets/HF_TOKEN/versions/latest"}


def test_submit_refuses_placeholders_without_network():
    with pytest.raises(errors.UserError) as info:
        get("vertex").submit(golden_files.render_example("vertex"))
    for var in ("FTLAUNCH_GCP_PROJECT", "FTLAUNCH_GCS_BUCKET", "FTLAUNCH_ARTIFACT_REGISTRY"):
        assert var in info.value.render()


def test_dry_run_cli_prints_request_and_cost_table(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FTLAUNCH_G", "FTLAUNCH_A", "GOOGLE_"))}
    env["FTLAUNCH_HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "ftlaunch", "--cloud", "vertex", "--gpu", "a100", "--dry-run",
                           "quickstart.yaml"], cwd=REPO / "examples", env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "offers" in proc.stdout and "a2-highgpu-1g" in proc.stdout and '"workerPoolSpecs"' in proc.stdout


def test_entry_reads_cluster_spec():
    from ftlaunch.backends.vertex import entry

    spec = json.dumps({"cluster": {"workerpool0": ["cmle-training-workerpool0-ab-0:2222"],
                                   "workerpool1": ["w-0:2222", "w-1:2222"]},
                       "task": {"type": "workerpool1", "index": 1}})
    assert entry.cluster(spec) == (3, 2, "cmle-training-workerpool0-ab-0")
    assert entry.cluster(None) == (1, 0, "localhost")


# ---------------------------------------------------------------- against the emulator

@pytest.fixture(scope="module")
def vertex(tmp_path_factory):
    from emulators.vertex import VertexEmulator

    emulator = VertexEmulator(tmp_path_factory.mktemp("vertex"))
    yield emulator
    emulator.stop()


def cli_env(vertex, ftlaunch_home) -> dict[str, str]:
    return {**os.environ, **vertex.env(), "FTLAUNCH_HOME": str(ftlaunch_home), "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.slow
def test_launch_runs_trainer_then_status_logs_fetch(vertex, tiny_spec, tmp_path, ftlaunch_home):
    env = cli_env(vertex, ftlaunch_home)
    submitted = json.loads(ftlaunch(env, "--cloud", "vertex", "--detach", "--json", *HOST_IMAGE,
                                    str(tiny_spec)).stdout)
    job = submitted["job"]
    assert submitted["provider_id"].startswith("projects/ftlaunch-test/locations/us-central1/customJobs/")
    assert submitted["output"].endswith(f"/jobs/{job}/output/model")
    status = wait_for(env, job, {"SUCCEEDED", "FAILED"})
    log = ftlaunch(env, "logs", job).stdout
    assert status["state"] == "SUCCEEDED", (status, log)
    assert "outputs complete" in log

    dest = tmp_path / "fetched"
    assert "verified" in ftlaunch(env, "fetch", job, "--dest", str(dest)).stdout
    for name in ("metrics.jsonl", "summary.json", "manifest.json", "weights/adapter_model.safetensors"):
        assert (dest / name).exists(), name
    assert json.loads((dest / "summary.json").read_text())["steps"] == 6


@pytest.mark.slow
def test_launch_runs_the_image_from_the_registry(vertex, job_image, dockerd, tiny_spec, tmp_path, ftlaunch_home):
    """launch -> the image is found in the registry -> the emulator pulls and runs it with /gcs mounted ->
    outputs in GCS -> SUCCEEDED -> fetch verifies; a relaunch builds and pushes nothing."""
    env = {**cli_env(vertex, ftlaunch_home), **job_image.env, "FTLAUNCH_ARTIFACT_REGISTRY": job_image.registry}
    vertex.engine = dockerd
    try:
        submitted = json.loads(ftlaunch(env, "--cloud", "vertex", "--detach", "--json", str(tiny_spec)).stdout)
        job = submitted["job"]
        status = wait_for(env, job, {"SUCCEEDED", "FAILED"}, timeout=600)
    finally:
        vertex.engine = None
    assert status["state"] == "SUCCEEDED", (status, ftlaunch(env, "logs", job).stdout)
    job_id = submitted["provider_id"].rsplit("/", 1)[-1]
    spec = vertex.jobs[submitted["provider_id"]]["jobSpec"]
    assert spec["workerPoolSpecs"][0]["containerSpec"]["imageUri"] == job_image.ref
    check_ran_in_image_then_fetch(env, "vertex", job, vertex.ran[job_id], job_image, str(tiny_spec),
                                  tmp_path / "fetched")


@pytest.mark.slow
def test_failed_job_maps_to_failed_with_the_error_message(vertex, tiny_spec, tmp_path, ftlaunch_home):
    env = cli_env(vertex, ftlaunch_home)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    job = json.loads(ftlaunch(env, "--cloud", "vertex", "--detach", "--json", *HOST_IMAGE, "--skip-preflight", "--set",
                              f"dataset.path={empty}",
                              str(tiny_spec)).stdout)["job"]
    status = wait_for(env, job, {"SUCCEEDED", "FAILED"})
    assert status["state"] == "FAILED"
    assert "exited with a non-zero status" in status["reason"]
    # the trainer's own last error, and where the whole log is: not traceback lines joined together
    assert f"{empty}: dataset file" in status["reason"] or "is empty" in status["reason"], status["reason"]
    assert status["reason"].endswith(")") and f"ftlaunch logs {job}" in status["reason"]
    fetched = ftlaunch(env, "fetch", job, check=False)
    assert fetched.returncode == 2 and "no complete outputs" in fetched.stderr


@pytest.mark.slow
def test_cancel_stops_the_job(vertex, tiny_spec, ftlaunch_home):
    env = cli_env(vertex, ftlaunch_home)
    job = json.loads(ftlaunch(env, "--cloud", "vertex", "--detach", "--json", *HOST_IMAGE, "--set",
                              "hyperparameters.max_steps=100000", str(tiny_spec)).stdout)["job"]
    wait_for(env, job, {"RUNNING"})
    ftlaunch(env, "cancel", job)
    status = wait_for(env, job, {"CANCELLED", "FAILED", "SUCCEEDED"}, timeout=60)
    assert status["state"] == "CANCELLED", status
    cancels = lambda: len([r for r, _ in vertex.proxy.requests if r.path.split("?")[0].endswith(":cancel")])  # noqa: E731
    assert cancels() == 1
    ftlaunch(env, "cancel", job)  # an ended job: silent, nothing sent
    assert cancels() == 1


@pytest.mark.slow
def test_a_cancelled_job_resumes_as_a_new_custom_job_from_its_checkpoints(vertex, tiny_spec, tmp_path,
                                                                           ftlaunch_home):
    env = cli_env(vertex, ftlaunch_home)
    make_resumable(tiny_spec)
    job = json.loads(ftlaunch(env, "--cloud", "vertex", "--detach", "--json", *HOST_IMAGE, str(tiny_spec)).stdout)["job"]

    def written() -> bool:  # under the job's /gcs mount (Cloud Storage FUSE: in the bucket as they are written)
        return bool(list(vertex.workdir.glob(f"gcs-*/**/jobs/{job}/**/checkpoint-*/COMPLETE")))

    def saved_steps() -> set[int]:
        blobs = [b.name for b in vertex.storage().list_blobs(BUCKET, prefix=f"ftlaunch/jobs/{job}/")]
        return {int(n.split("checkpoint-")[1].split("/")[0]) for n in blobs if n.endswith("/COMPLETE")}

    _, (one, two) = cancel_resume_and_fetch(env, job, written, saved_steps, tmp_path / "fetched")
    first, second = (j for j in vertex.jobs.values() if j["displayName"] in (job, f"{job}-a2"))
    assert first["jobSpec"] == second["jobSpec"]  # the same job spec: the same checkpoint directory
    assert one["provider_id"] != two["provider_id"]


def test_retries_throttling_and_5xx_and_never_creates_a_second_job(vertex, monkeypatch):
    from ftlaunch.backends.vertex.backend import VertexBackend

    for k, v in vertex.env().items():
        monkeypatch.setenv(k, v)
    request = golden_files.render_example("vertex", env={**golden_files.UNCONFIGURED, **vertex.env()})
    request.payload["displayName"] = request.job_name = "retry-job-1"
    request.payload["jobSpec"]["workerPoolSpecs"][0]["containerSpec"].update(command=["python", "-c", "print('hi')"],
                                                                              args=[])
    creating = lambda r: r.method == "POST" and r.path.split("?")[0].endswith("/customJobs")  # noqa: E731
    error = lambda code, status: (code, {"Content-Type": "application/json"}, json.dumps(  # noqa: E731
        {"error": {"code": code, "message": status.lower(), "status": status}}).encode())
    vertex.proxy.faults += [
        common.Fault(creating, error(429, "RESOURCE_EXHAUSTED")),
        # the second attempt creates the job, but its answer is lost
        common.Fault(creating, error(500, "INTERNAL"), after=True),
        common.Fault(lambda r: r.method == "GET" and "/customJobs/" in r.path, error(503, "UNAVAILABLE"), times=2),
    ]
    backend = VertexBackend(backoff_s=0.01)
    handle = backend.submit(request)
    same_name = [j for j in vertex.jobs.values() if j["displayName"] == "retry-job-1"]
    assert len(same_name) == 1 and handle.provider_id == same_name[0]["name"]
    assert backend.submit(request).provider_id == handle.provider_id  # the same name is the same job
    assert len([j for j in vertex.jobs.values() if j["displayName"] == "retry-job-1"]) == 1
    deadline = time.monotonic() + 60
    while backend.status(handle).state is not State.SUCCEEDED and time.monotonic() < deadline:
        time.sleep(0.3)
    assert backend.status(handle).state is State.SUCCEEDED
    assert "hi" in list(backend.logs(handle))
    assert backend.status(handle).actual_cost is not None


@pytest.mark.slow
def test_relaunch_uploads_nothing_and_a_changed_byte_uploads_once(vertex, tiny_spec, alpaca_file, ftlaunch_home):
    from emulators.vertex import BUCKET

    env = {**cli_env(vertex, ftlaunch_home), "FTLAUNCH_GCS_PREFIX": "upload-cache"}

    def inputs() -> dict[str, tuple]:
        blobs = vertex.storage().list_blobs(BUCKET, prefix="upload-cache/inputs/")
        return {b.name: (b.generation, b.updated, (b.metadata or {}).get("sha256")) for b in blobs}

    check_relaunch_uploads_nothing(env, "vertex", tiny_spec, alpaca_file, inputs)
    assert all(sha for *_, sha in inputs().values())  # each input carries its sha256, checked on reuse
