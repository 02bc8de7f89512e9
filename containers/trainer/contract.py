"""Maps each backend's container conventions onto the trainer's one contract: where the spec, the data,
the outputs and the checkpoints are. Pure: a function of the environment mapping it is given.

Precedence: explicit FTLAUNCH_* variables, then the provider's own (SageMaker SM_*, /opt/ml; Vertex
AIP_*; Azure ML AZUREML_*; SkyPilot SKYPILOT_*), then folders under the working directory.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class Paths:
    output_dir: str
    checkpoint_dir: str
    data_dir: str | None  # where a backend put the input channel, if it did
    provider: str


def paths(env: Mapping[str, str]) -> Paths:
    """Where this job reads and writes, from its environment."""
    if "SM_MODEL_DIR" in env or "SM_TRAINING_ENV" in env:
        provider = "sagemaker"
        base = env.get("SAGEMAKER_BASE_DIR", "/opt/ml")  # relocated by sagemaker-training-toolkit's variable
        output = env.get("SM_MODEL_DIR", f"{base}/model")
        checkpoint = f"{base}/checkpoints"  # CheckpointConfig.LocalPath, synced with its S3Uri
        data = env.get("SM_CHANNEL_TRAIN")
    elif "AIP_MODEL_DIR" in env:
        provider = "vertex"
        # Vertex mounts every bucket under /gcs (Cloud Storage FUSE); AIP_* are gs:// URIs
        mount = env.get("FTLAUNCH_GCS_MOUNT", "/gcs")
        output = gcs_fuse_path(env["AIP_MODEL_DIR"], mount)
        checkpoint = gcs_fuse_path(env.get("AIP_CHECKPOINT_DIR", output.rstrip("/") + "/../checkpoints"), mount)
        data = None
    elif "AZUREML_RUN_ID" in env:
        provider = "azureml"
        output = env.get("AZUREML_OUTPUT_OUTPUTS", "./outputs")
        checkpoint = env.get("AZUREML_OUTPUT_CHECKPOINTS", "./outputs/checkpoints")
        data = env.get("AZUREML_INPUT_TRAIN")
    elif "SKYPILOT_TASK_ID" in env:
        provider = "skypilot"
        output = "./outputs"
        checkpoint = "./checkpoints"
        data = None
    else:
        provider = "local"
        output = "./outputs"
        checkpoint = "./checkpoints"
        data = None
    return Paths(
        output_dir=env.get("FTLAUNCH_OUTPUT_DIR", output),
        checkpoint_dir=env.get("FTLAUNCH_CHECKPOINT_DIR", checkpoint),
        data_dir=env.get("FTLAUNCH_DATA_DIR", data),
        provider=provider,
    )


def gcs_fuse_path(uri: str, mount: str = "/gcs") -> str:
    """gs://bucket/path -> /gcs/bucket/path, where Vertex AI mounts Cloud Storage; other paths unchanged."""
    return mount.rstrip("/") + "/" + uri[len("gs://"):] if uri.startswith("gs://") else uri
