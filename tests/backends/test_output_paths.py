"""One job, one output location: with a user-set `output.path`, every cloud backend renders each job's
outputs and checkpoints in a folder of its own under that path, so two jobs never share them."""

from __future__ import annotations

import importlib
import json

import pytest

from ftlaunch.planning import plan as plan_mod
from ftlaunch.core import spec as spec_mod
from ftlaunch.backends import get

from golden_files import REPO, UNCONFIGURED

PATHS = {"sagemaker": "s3://team-bucket/finetunes/", "vertex": "gs://team-bucket/finetunes",
         "azureml": "azureml://datastores/team/paths/finetunes/", "skypilot": "s3://team-bucket/finetunes"}


def render(backend: str, job: str) -> dict:
    settings = importlib.import_module(f"ftlaunch.backends.{backend}.settings")
    spec = spec_mod.load(REPO / "examples/quickstart.yaml", (f"resources.cloud={backend}", "resources.gpu=a100",
                                                             f"output.path={PATHS[backend]}"))
    plan = plan_mod.make(spec, name=job)
    plan.context = settings.resolve(plan.spec, plan.job_name, env=UNCONFIGURED)
    return get(backend).render(plan).payload


def locations(backend: str, payload: dict) -> tuple[str, str]:
    """(outputs, checkpoints) of a rendered request."""
    if backend == "sagemaker":  # SageMaker itself writes <S3OutputPath>/<job>/output/
        return (f"{payload['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{payload['TrainingJobName']}",
                payload["CheckpointConfig"]["S3Uri"])
    if backend == "vertex":  # Vertex's AIP_CHECKPOINT_DIR is <baseOutputDirectory>/checkpoints
        out = payload["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"]
        return out, f"{out}/checkpoints"
    if backend == "azureml":
        return payload["outputs"]["outputs"]["path"], payload["outputs"]["checkpoints"]["path"]
    mounts = payload["file_mounts"]
    return mounts["/ftlaunch/outputs"]["source"], mounts["/ftlaunch/checkpoints"]["source"]


@pytest.mark.parametrize("backend", sorted(PATHS))
def test_two_jobs_with_one_output_path_keep_separate_outputs_and_checkpoints(backend):
    first, second = (render(backend, f"tuned-2026010{i}-000000-abcd") for i in (1, 2))
    (out1, ckpt1), (out2, ckpt2) = locations(backend, first), locations(backend, second)
    assert out1 != out2 and ckpt1 != ckpt2
    for out, job in ((out1, "tuned-20260101-000000-abcd"), (out2, "tuned-20260102-000000-abcd")):
        assert out.rstrip("/") == f"{PATHS[backend].rstrip('/')}/{job}", json.dumps(first, indent=1)[:2000]
    # the same job rendered again (a resume) finds the same locations
    assert locations(backend, render(backend, "tuned-20260101-000000-abcd")) == (out1, ckpt1)
