"""The Azure ML backend through azure-ai-ml's MLClient and azure-storage-blob, against a local Azure ML (the
management API via AZUREML_DEV_URL_MFE, run history, and Blob Storage for the datastores); the emulator side
runs the real trainer under Azure ML's contract (input and output folders substituted into the command,
AZUREML_* variables, user_logs/std_log.txt).

Rendered jobs are pinned by golden files and parsed by azure.ai.ml.load_job against Azure ML's job schema.
In the image: test_launch_runs_the_image_from_the_registry (the session's job image, pulled from the
127.0.0.1 registry and run as Azure ML runs a command job). On the host, for speed, with `--image` naming a
prebuilt reference so the launch builds nothing: the other launch, failure, cancel and retry tests.
"""

from __future__ import annotations

import io
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
import yaml

from ftlaunch.core import errors
from ftlaunch.backends import get
from ftlaunch.backends.base import State

from emulators import common

REPO = Path(__file__).resolve().parents[2]


def load_command_job(payload: dict):
    """The payload parsed by azure-ai-ml as `az ml job create -f` parses a file; schema errors raise."""
    from azure.ai.ml import load_job
    from azure.ai.ml.entities import Command

    job = load_job(io.StringIO(yaml.safe_dump(payload, sort_keys=False)))
    assert isinstance(job, Command)
    return job


@pytest.mark.parametrize("golden, overrides", [
    ("azureml-quickstart.json", ()),
    ("azureml-spot-2-nodes.json", ("resources.spot=true", "resources.nodes=2", "resources.max_cost=50",
                                   "secrets=[HF_TOKEN]")),
])
def test_render_matches_golden_and_azure_ml_job_schema(golden, overrides):
    request = golden_files.render_example("azureml", overrides)
    golden_files.check(golden, request)
    job = load_command_job(request.payload)
    p = request.payload
    assert job.name == job.display_name == "quickstart-20260101-000000-abcd"
    assert job.environment.image == f"unset-ftlaunch-acr-registry.azurecr.io/ftlaunch-trainer:{golden_files.CONTENT_TAG}"
    assert set(job.inputs) == {"spec", "train", "eval", "model"} and set(job.outputs) == {"outputs", "checkpoints"}
    assert job.outputs["outputs"].path.endswith("/jobs/quickstart-20260101-000000-abcd/outputs/")
    assert job.tags["ftlaunch:vm-size"] == "Standard_ND96asr_v4"
    assert "--input train=${{inputs.train}}" in p["command"]
    job_spec = json.loads(request.uploads[0]["content"])
    assert job_spec["dataset"]["path"] == "${{inputs.train}}/city-extraction-train.jsonl"
    assert request.uploads[1]["destination"].startswith("azureml://datastores/workspaceblobstore/paths/ftlaunch/")
    if "resources.spot=true" in overrides:
        assert job.compute == "unset-ftlaunch-azure-spot-compute"  # a low-priority cluster
        assert job.resources.instance_count == 2
        assert job.distribution.type == "pytorch" and job.distribution.process_count_per_instance == 1
        assert 0 < job.limits.timeout < 86400  # max_cost became the timeout
        # secrets by reference: a name and a Key Vault URL, never a value
        assert json.loads(job.environment_variables["FTLAUNCH_SECRETS"]) == {
            "HF_TOKEN": "https://unset-ftlaunch-azure-key-vault.vault.azure.net/secrets/hf-token"}
        assert request.secrets == ["HF_TOKEN"]
    else:
        assert job.compute == "unset-ftlaunch-azure-compute" and job.distribution is None
        assert p["limits"]["timeout"] == 3600  # the planner's default max runtime, at least 1 h (issue 14)


@pytest.mark.parametrize("provider, ours", [
    ("NotStarted", State.PENDING), ("Queued", State.PENDING), ("Preparing", State.PENDING),
    ("Provisioning", State.PENDING), ("Starting", State.PENDING), ("Running", State.RUNNING),
    ("Finalizing", State.RUNNING), ("CancelRequested", State.RUNNING), ("Completed", State.SUCCEEDED),
    ("Failed", State.FAILED), ("NotResponding", State.FAILED), ("Canceled", State.CANCELLED),
    ("SomethingNew", State.PENDING),
])
def test_azure_ml_states_map_onto_ours(provider, ours):
    from ftlaunch.backends.azureml import backend

    assert backend.state_of(provider) is ours


def test_submit_refuses_placeholders_without_network():
    with pytest.raises(errors.UserError) as info:
        get("azureml").submit(golden_files.render_example("azureml"))
    for var in ("FTLAUNCH_AZURE_SUBSCRIPTION", "FTLAUNCH_AZURE_RESOURCE_GROUP", "FTLAUNCH_AZURE_WORKSPACE",
                "FTLAUNCH_AZURE_COMPUTE", "FTLAUNCH_ACR_REGISTRY"):
        assert var in info.value.render()


def test_region_is_refused_with_the_alternative(tmp_path):
    from ftlaunch.planning import plan
    from ftlaunch.core import spec as spec_mod

    spec = spec_mod.load(str(REPO / "examples" / "quickstart.yaml"), ("resources.cloud=azureml",
                                                                      "resources.region=eastus"))
    with pytest.raises(errors.UserError) as info:
        plan.make(spec)
    assert "azureml cannot do region" in info.value.render() and "FTLAUNCH_AZURE_WORKSPACE" in info.value.render()


def test_dry_run_cli_prints_request_and_cost_table(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FTLAUNCH_A", "AZURE"))}
    env["FTLAUNCH_HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "ftlaunch", "--cloud", "azureml", "--gpu", "a100", "--dry-run",
                           "quickstart.yaml"], cwd=REPO / "examples", env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "offers" in proc.stdout and "Standard_ND96asr_v4" in proc.stdout
    assert '"$schema"' in proc.stdout and "unset-ftlaunch-azure-compute" in proc.stdout


def test_entry_maps_inputs_and_the_pytorch_rendezvous():
    from ftlaunch.backends.azureml import entry

    spec = json.dumps({"dataset": {"path": "${{inputs.train}}/a.jsonl"}, "model": "${{inputs.model}}"})
    out = json.loads(entry.job_spec(spec, {"train": "/mnt/in/train/", "model": "/mnt/in/model"}))
    assert out == {"dataset": {"path": "/mnt/in/train/a.jsonl"}, "model": "/mnt/in/model"}
    env = {"MASTER_ADDR": "10.0.0.4", "MASTER_PORT": "6105", "NODE_RANK": "1", "WORLD_SIZE": "2"}
    assert entry.cluster(env) == (2, 1, "10.0.0.4", "6105")
    assert entry.cluster({}) == (1, 0, "localhost", "29500")
    command = entry.trainer_command("{}", env)
    assert "--nnodes=2" in command and "--node_rank=1" in command and "--master_addr=10.0.0.4" in command


# ---------------------------------------------------------------- against the emulator

@pytest.fixture(scope="module")
def azureml(tmp_path_factory):
    from emulators.azureml import AzureMLEmulator

    emulator = AzureMLEmulator(tmp_path_factory.mktemp("azureml"))
    yield emulator
    emulator.stop()


def cli_env(azureml, ftlaunch_home) -> dict[str, str]:
    return {**os.environ, **azureml.env(), "FTLAUNCH_HOME": str(ftlaunch_home), "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.slow
def test_launch_runs_trainer_then_status_logs_fetch(azureml, tiny_spec, tmp_path, ftlaunch_home):
    env = cli_env(azureml, ftlaunch_home)
    submitted = json.loads(ftlaunch(env, "--cloud", "azureml", "--detach", "--json", *HOST_IMAGE,
                                    str(tiny_spec)).stdout)
    job = submitted["job"]
    assert submitted["provider_id"] == job
    assert submitted["output"] == f"azureml://datastores/workspaceblobstore/paths/ftlaunch/jobs/{job}/outputs/"
    # the SDK's order: look for the job, the datastore and its key, the cluster, the anonymous environment, the job
    paths = [f"{r.method} {r.path.split('?')[0].rsplit('/workspaces/ftlaunch-ws', 1)[-1]}"
             for r, _ in azureml.proxy.requests]
    assert paths[-1] == f"PUT /jobs/{job}" and paths[-2].startswith("PUT /environments/CliV2AnonymousEnvironment/")
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
def test_launch_runs_the_image_from_the_registry(azureml, job_image, dockerd, tiny_spec, tmp_path, ftlaunch_home):
    """launch -> the image is found in the registry -> the emulator pulls and runs the environment's image
    with inputs and outputs mounted -> outputs in the datastore -> SUCCEEDED -> fetch verifies; a relaunch
    builds and pushes nothing."""
    env = {**cli_env(azureml, ftlaunch_home), **job_image.env, "FTLAUNCH_ACR_REGISTRY": job_image.registry}
    azureml.engine = dockerd
    try:
        job = json.loads(ftlaunch(env, "--cloud", "azureml", "--detach", "--json", str(tiny_spec)).stdout)["job"]
        status = wait_for(env, job, {"SUCCEEDED", "FAILED"}, timeout=600)
    finally:
        azureml.engine = None
    assert status["state"] == "SUCCEEDED", (status, ftlaunch(env, "logs", job).stdout)
    check_ran_in_image_then_fetch(env, "azureml", job, azureml.ran[job], job_image, str(tiny_spec),
                                  tmp_path / "fetched")


@pytest.mark.slow
def test_failed_job_maps_to_failed_with_the_error_message(azureml, tiny_spec, tmp_path, ftlaunch_home):
    env = cli_env(azureml, ftlaunch_home)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    job = json.loads(ftlaunch(env, "--cloud", "azureml", "--detach", "--json", *HOST_IMAGE, "--skip-preflight", "--set",
                              f"dataset.path={empty}",
                              str(tiny_spec)).stdout)["job"]
    status = wait_for(env, job, {"SUCCEEDED", "FAILED"})
    assert status["state"] == "FAILED"
    assert "exited with status code 2" in status["reason"]  # the trainer's exit code for a user error
    # the trainer's own last error, and where the whole log is: not traceback lines joined together
    assert "is empty" in status["reason"] and f"ftlaunch logs {job}" in status["reason"], status["reason"]
    fetched = ftlaunch(env, "fetch", job, check=False)
    assert fetched.returncode == 2 and "no complete outputs" in fetched.stderr


@pytest.mark.slow
def test_cancel_stops_the_job(azureml, tiny_spec, ftlaunch_home):
    env = cli_env(azureml, ftlaunch_home)
    job = json.loads(ftlaunch(env, "--cloud", "azureml", "--detach", "--json", *HOST_IMAGE, "--set",
                              "hyperparameters.max_steps=100000", str(tiny_spec)).stdout)["job"]
    wait_for(env, job, {"RUNNING"})
    ftlaunch(env, "cancel", job)
    status = wait_for(env, job, {"CANCELLED", "FAILED", "SUCCEEDED"}, timeout=60)
    assert status["state"] == "CANCELLED", status
    cancels = lambda: len([r for r, _ in azureml.proxy.requests if r.path.split("?")[0].endswith("/cancel")])  # noqa: E731
    assert cancels() == 1
    ftlaunch(env, "cancel", job)  # an ended job: silent, nothing sent
    assert cancels() == 1


@pytest.mark.slow
def test_a_cancelled_job_resumes_as_a_new_job_from_its_checkpoints_output(azureml, tiny_spec, tmp_path,
                                                                           ftlaunch_home):
    env = cli_env(azureml, ftlaunch_home)
    make_resumable(tiny_spec)
    job = json.loads(ftlaunch(env, "--cloud", "azureml", "--detach", "--json", *HOST_IMAGE, str(tiny_spec)).stdout)["job"]

    def written() -> bool:  # in the job's checkpoints output mount
        return bool(list(azureml.workdir.glob("azureml-*/outputs/checkpoints/checkpoint-*/COMPLETE")))

    def saved_steps() -> set[int]:
        uri = azureml.jobs[job]["properties"]["outputs"]["checkpoints"]["uri"]
        return {int(rel.split("checkpoint-")[1].split("/")[0]) for rel, _ in azureml.datastore_files(uri)
                if rel.endswith("/COMPLETE")}

    _, (one, two) = cancel_resume_and_fetch(env, job, written, saved_steps, tmp_path / "fetched")
    second = azureml.jobs[f"{job}-a2"]["properties"]
    assert second["outputs"] == azureml.jobs[job]["properties"]["outputs"]
    assert second["command"] == azureml.jobs[job]["properties"]["command"]
    assert (one["provider_id"], two["provider_id"]) == (job, f"{job}-a2")


def test_retries_throttling_and_5xx_and_never_creates_a_second_job(azureml, monkeypatch):
    from ftlaunch.backends.azureml.backend import AzureMLBackend

    for k, v in azureml.env().items():
        monkeypatch.setenv(k, v)
    request = golden_files.render_example("azureml", env={**golden_files.UNCONFIGURED, **azureml.env()})
    request.payload["name"] = request.payload["display_name"] = request.job_name = "retry-job-1"
    request.payload["command"] = "python -c \"print('hi')\""
    putting = lambda r: r.method == "PUT" and r.path.split("?")[0].endswith("/jobs/retry-job-1")  # noqa: E731
    error = lambda code, what: (code, {"Content-Type": "application/json"}, json.dumps(  # noqa: E731
        {"error": {"code": what, "message": what.lower()}}).encode())
    azureml.proxy.faults += [
        common.Fault(putting, error(429, "TooManyRequests")),
        # the second attempt creates the job, but its answer is lost
        common.Fault(putting, error(500, "InternalServerError"), after=True),
        common.Fault(lambda r: r.method == "GET" and r.path.split("?")[0].endswith("/jobs/retry-job-1"),
                     error(503, "ServiceUnavailable"), times=2),
    ]
    backend = AzureMLBackend(backoff_s=0.01)
    handle = backend.submit(request)
    assert handle.provider_id == "retry-job-1" and len([n for n in azureml.jobs if n == "retry-job-1"]) == 1
    puts = [s for r, s in azureml.proxy.requests if putting(r)]
    # 429; then the attempt that created the job answered 500; a retry of it was told the name is taken
    assert puts[:2] == [429, 500] and set(puts[2:]) <= {400}
    assert AzureMLBackend(backoff_s=0.01).submit(request).provider_id == "retry-job-1"  # the same name: the same job
    assert len([s for r, s in azureml.proxy.requests if putting(r)]) == len(puts)
    deadline = time.monotonic() + 60
    while backend.status(handle).state is not State.SUCCEEDED and time.monotonic() < deadline:
        time.sleep(0.3)
    assert backend.status(handle).state is State.SUCCEEDED
    assert "hi" in list(backend.logs(handle))
    assert backend.status(handle).actual_cost is not None


def test_check_row_names_each_missing_setting_and_is_ready_when_configured(tmp_path):
    from ftlaunch.cli import check

    bare = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "AZURE_CONFIG_DIR": str(tmp_path / "az")}
    row = next(r for r in check.gather(bare) if r["backend"] == "azureml")
    missing = {i["what"] for i in row["items"] if not i["ok"]}
    assert not row["ready"] and {"Azure credentials", "FTLAUNCH_AZURE_WORKSPACE", "FTLAUNCH_ACR_REGISTRY"} <= missing
    configured = {**bare, "AZURE_CLIENT_ID": "id", "AZURE_CLIENT_SECRET": "s", "AZURE_TENANT_ID": "t",
                  "FTLAUNCH_AZURE_SUBSCRIPTION": "sub", "FTLAUNCH_AZURE_RESOURCE_GROUP": "rg",
                  "FTLAUNCH_AZURE_WORKSPACE": "ws", "FTLAUNCH_AZURE_COMPUTE": "gpu", "FTLAUNCH_ACR_REGISTRY": "r.azurecr.io"}
    assert next(r for r in check.gather(configured) if r["backend"] == "azureml")["ready"]


@pytest.mark.slow
def test_relaunch_uploads_nothing_and_a_changed_byte_uploads_once(azureml, tiny_spec, alpaca_file, ftlaunch_home):
    from emulators.azureml import DATASTORES

    env = {**cli_env(azureml, ftlaunch_home), "FTLAUNCH_AZURE_PREFIX": "upload-cache"}
    container = DATASTORES["workspaceblobstore"]

    def inputs() -> dict[str, tuple]:
        with azureml.lock:
            return {name: (azureml.blob_writes[(c, name)], azureml.blob_metadata[(c, name)].get("sha256"))
                    for (c, name) in azureml.blobs if c == container and name.startswith("upload-cache/inputs/")}

    check_relaunch_uploads_nothing(env, "azureml", tiny_spec, alpaca_file, inputs)
    assert all(sha for _, sha in inputs().values())  # each input carries its sha256, checked on reuse
