"""The SkyPilot backend: the rendered task against SkyPilot's own schema and resource checks
(`sky.Task.from_yaml_config`, with the catalog ftlaunch ships in place of the online one), golden files,
the state mapping, secrets by name, and fetch from an output bucket (moto's S3).

Not here: launching. SkyPilot launches only through its API server onto real VMs over SSH; offline, the
most it can do is `--dryrun` with its optimizer, which needs moto-backed AWS, a stub `aws` binary and an
API server start of about 25 s, too slow and heavy for this suite (see docs/clouds.md).
In the image: test_task_runs_in_its_image_under_skypilots_docker_mode takes the task the CLI renders and
runs it as SkyPilot's docker mode would (emulators/skypilot.py says what is emulated and what is not).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import golden_files
from cli_run import ftlaunch
import pytest

from ftlaunch.core import errors
from ftlaunch.backends import get
from ftlaunch.backends.base import State

REPO = Path(__file__).resolve().parents[2]
CASES = [
    ("skypilot-quickstart.json", ()),
    ("skypilot-spot-2-nodes.json", ("resources.spot=true", "resources.nodes=2", "resources.max_cost=50",
                                    "secrets=[HF_TOKEN]")),
    ("skypilot-aws-8-gpus.json", ("resources.gpus=8",)),
]






@pytest.mark.parametrize("golden, overrides", CASES)
def test_render_matches_golden(golden, overrides):
    request = golden_files.render_example("skypilot", overrides)
    golden_files.check(golden, request)
    p = request.payload
    res = p["resources"]
    assert res["image_id"] == f"docker:docker.io/unset-ftlaunch-skypilot-registry/ftlaunch-trainer:{golden_files.CONTENT_TAG}"
    assert p["file_mounts"]["/ftlaunch/outputs"] == {
        "source": "s3://unset-ftlaunch-skypilot-bucket/ftlaunch/jobs/quickstart-20260101-000000-abcd/outputs",
        "mode": "MOUNT_CACHED"}
    job_spec = json.loads(p["envs"]["FTLAUNCH_SPEC"])
    assert job_spec["dataset"]["path"] == "/ftlaunch/input/train/city-extraction-train.jsonl"
    assert p["file_mounts"][job_spec["dataset"]["path"]].endswith("examples/data/city-extraction-train.jsonl")
    assert "setup" not in p
    if "resources.spot=true" in overrides:
        assert res["use_spot"] is True and p["num_nodes"] == 2
        assert "torch.distributed.run" in p["run"] and '--node_rank="$SKYPILOT_NODE_RANK"' in p["run"]
        assert "timeout --kill-after=120 " in p["run"]  # max_cost became the time limit
        assert p["secrets"] == {"HF_TOKEN": None} and request.secrets == ["HF_TOKEN"]  # a name, never a value
    elif "resources.gpus=8" in overrides:
        assert res["accelerators"] == "A100:8" and res["instance_type"] == "p4d.24xlarge"
        assert res["infra"] == "aws/us-east-1" and "--nproc_per_node" in p["run"]
    else:
        assert res["accelerators"] == "A100:1" and res["infra"] == "gcp/us-central1"
        # the planner's default max runtime (2 x the estimate's high end, at least 1 h; issue 14) bounds the run
        assert p["run"] == "exec timeout --kill-after=120 3600 python -m ftlaunch.containers.trainer\n"


@pytest.mark.slow
def test_rendered_tasks_pass_skypilots_schema_and_resource_checks(tmp_path):
    """sky.Task.from_yaml_config in a fresh interpreter whose HOME holds SkyPilot's catalog (from the CSVs
    ftlaunch ships), so it checks instance types, accelerators and regions without the network."""
    home = tmp_path / "home"
    for cloud in ("aws", "gcp", "azure"):
        target = home / ".sky/catalogs/v8" / cloud / "vms.csv"
        target.parent.mkdir(parents=True)
        target.write_bytes((REPO / f"launcher/planning/catalog/data/skypilot/{cloud}_vms.csv").read_bytes())
    payloads = tmp_path / "tasks.json"
    payloads.write_text(json.dumps([golden_files.render_example("skypilot", overrides).payload for _, overrides in CASES]))
    script = textwrap.dedent("""
        import json, sys
        import sky
        for config in json.load(open(sys.argv[1])):
            task = sky.Task.from_yaml_config(config)
            (resources,) = task.resources
            print(json.dumps({"cloud": str(resources.cloud), "instance_type": resources.instance_type,
                              "accelerators": resources.accelerators, "use_spot": resources.use_spot,
                              "nodes": task.num_nodes, "storage": sorted(task.storage_mounts),
                              "image": resources.image_id}))
    """)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(payloads)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [(r["cloud"], r["instance_type"], r["accelerators"]) for r in rows] == [
        ("GCP", "a2-highgpu-1g", {"A100": 1}), ("GCP", "a2-highgpu-1g", {"A100": 1}),
        ("AWS", "p4d.24xlarge", {"A100": 8})]
    assert [r["use_spot"] for r in rows] == [False, True, False] and rows[1]["nodes"] == 2
    assert all(r["storage"] == ["/ftlaunch/checkpoints", "/ftlaunch/outputs"] for r in rows)


@pytest.mark.parametrize("provider, ours", [
    ("PENDING", State.PENDING), ("SUBMITTED", State.PENDING), ("STARTING", State.PENDING),
    ("RUNNING", State.RUNNING), ("RECOVERING", State.RUNNING), ("CANCELLING", State.RUNNING),
    ("WINDING_DOWN", State.RUNNING), ("SUCCEEDED", State.SUCCEEDED), ("CANCELLED", State.CANCELLED),
    ("FAILED", State.FAILED), ("FAILED_SETUP", State.FAILED), ("FAILED_PRECHECKS", State.FAILED),
    ("FAILED_NO_RESOURCE", State.FAILED), ("FAILED_CONTROLLER", State.FAILED), ("SOMETHING_NEW", State.PENDING),
])
def test_managed_job_states_map_onto_ours(provider, ours):
    from ftlaunch.backends.skypilot import backend

    assert backend.state_of(provider) is ours


def test_every_skypilot_status_is_mapped():
    sky_state = pytest.importorskip("sky.jobs.state")
    from ftlaunch.backends.skypilot import backend

    assert {s.value for s in sky_state.ManagedJobStatus} <= set(backend.STATES)


def test_secret_values_come_from_the_launchers_environment():
    from ftlaunch.backends.skypilot import backend

    assert backend.secret_values(["HF_TOKEN"], {"HF_TOKEN": "hf_x"}) == {"HF_TOKEN": "hf_x"}
    with pytest.raises(errors.UserError) as info:
        backend.secret_values(["HF_TOKEN", "WANDB_API_KEY"], {})
    assert "HF_TOKEN, WANDB_API_KEY" in info.value.render()


def test_submit_refuses_placeholders_without_network():
    with pytest.raises(errors.UserError) as info:
        get("skypilot").submit(golden_files.render_example("skypilot"))
    for var in ("FTLAUNCH_SKYPILOT_BUCKET", "FTLAUNCH_SKYPILOT_REGISTRY"):
        assert var in info.value.render()


def test_dry_run_cli_prints_request_and_cost_table(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTLAUNCH_SKYPILOT")}
    env["FTLAUNCH_HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "ftlaunch", "--cloud", "skypilot", "--gpu", "a100", "--dry-run",
                           "quickstart.yaml"], cwd=REPO / "examples", env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "offers" in proc.stdout and "a2-highgpu-1g" in proc.stdout
    assert '"image_id"' in proc.stdout and "unset-ftlaunch-skypilot-bucket" in proc.stdout


def test_fetch_downloads_the_output_bucket_and_verifies_it(tmp_path, monkeypatch):
    moto = pytest.importorskip("moto")
    import boto3

    from ftlaunch.core import manifest
    from ftlaunch.backends.skypilot.backend import SkyPilotBackend

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    outputs = tmp_path / "outputs"
    (outputs / "weights").mkdir(parents=True)
    (outputs / "summary.json").write_text('{"steps": 6}')
    (outputs / "weights/adapter.safetensors").write_bytes(b"\0" * 64)
    manifest.write(outputs)
    with moto.mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="out")
        for path in outputs.rglob("*"):
            if path.is_file():
                s3.put_object(Bucket="out", Key=f"ftlaunch/jobs/j/outputs/{path.relative_to(outputs)}",
                              Body=path.read_bytes())
        backend = SkyPilotBackend(storage={"s3": s3})
        backend.download("s3://out/ftlaunch/jobs/j/outputs", tmp_path / "fetched")
    manifest.verify(tmp_path / "fetched")
    assert (tmp_path / "fetched/weights/adapter.safetensors").stat().st_size == 64


def test_check_row_names_each_missing_setting_and_is_ready_when_configured(tmp_path):
    from ftlaunch.cli import check

    bare = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    row = next(r for r in check.gather(bare) if r["backend"] == "skypilot")
    missing = {i["what"] for i in row["items"] if not i["ok"]}
    assert {"SkyPilot state (~/.sky)", "FTLAUNCH_SKYPILOT_BUCKET", "FTLAUNCH_SKYPILOT_REGISTRY"} <= missing
    (tmp_path / ".sky").mkdir()
    configured = {**bare, "FTLAUNCH_SKYPILOT_BUCKET": "s3://b", "FTLAUNCH_SKYPILOT_IMAGE": "ghcr.io/me/t:1"}
    assert next(r for r in check.gather(configured) if r["backend"] == "skypilot")["ready"]


@pytest.mark.slow
def test_task_runs_in_its_image_under_skypilots_docker_mode(job_image, dockerd, tiny_spec, tmp_path, ftlaunch_home):
    """The task `ftlaunch --cloud skypilot` renders names the session's image in the 127.0.0.1 registry;
    run under SkyPilot's docker-mode rules (its root setup, then setup/run as the image's default user,
    bucket mounts), the tiny fine-tune writes complete outputs to the bucket; fetch verifies them. Asking
    again builds and pushes nothing."""
    moto = pytest.importorskip("moto")
    import boto3

    from ftlaunch.core import manifest
    from ftlaunch.backends.skypilot.backend import SkyPilotBackend
    from emulators.skypilot import SkyPilotDocker

    env = {**os.environ, **job_image.env, "FTLAUNCH_HOME": str(ftlaunch_home),
           "FTLAUNCH_SKYPILOT_REGISTRY": job_image.registry, "FTLAUNCH_SKYPILOT_BUCKET": "s3://ftlaunch-sky-test"}
    shown = json.loads(ftlaunch(env, "--cloud", "skypilot", "--dry-run", "--json", str(tiny_spec)).stdout)
    task = shown["request"]["payload"]
    assert task["resources"]["image_id"] == f"docker:{job_image.ref}"
    assert shown["image"]["in_registry"] is True, shown["image"]

    sky = SkyPilotDocker(dockerd, tmp_path / "sky")
    run = sky.run_task(task)
    assert run.code == 0, run.log
    assert run.ran["image_id"] == job_image.image_id and run.ran["user"] == "root", run.ran

    outputs_uri = shown["request"]["extra"]["outputs"]
    outputs = sky.bucket_folder(outputs_uri)
    with moto.mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        bucket, _, prefix = outputs_uri[5:].partition("/")
        s3.create_bucket(Bucket=bucket)
        for path in outputs.rglob("*"):
            if path.is_file():
                s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(outputs).as_posix()}",
                              Body=path.read_bytes())
        SkyPilotBackend(storage={"s3": s3}).download(outputs_uri, tmp_path / "fetched")
    manifest.verify(tmp_path / "fetched")
    assert json.loads((tmp_path / "fetched/summary.json").read_text())["steps"] == 6

    again = json.loads(ftlaunch(env, "build", "--cloud", "skypilot", "--json", "--quiet").stdout)
    assert again["image"] == job_image.ref and not again["built"] and not again["pushed"], again
