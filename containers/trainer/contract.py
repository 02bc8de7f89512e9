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
        output = env.get("SM_MODEL_DIR", "/opt/ml/model")
        checkpoint = "/opt/ml/checkpoints"
        data = env.get("SM_CHANNEL_TRAIN")
    elif "AIP_MODEL_DIR" in env:
        provider = "vertex"
        output = env["AIP_MODEL_DIR"]
        checkpoint = env.get("AIP_CHECKPOINT_DIR", output.rstrip("/") + "/../checkpoints")
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
