"""Turns a plan into the CreateTrainingJob request (boto3's shape, validated against botocore's SageMaker
service model in the tests) plus the files to put on S3 first. Pure: everything comes from the plan.

How data reaches the job: local files are uploaded and become input channels; an s3:// dataset or model is a
channel of its own (SageMaker copies it into /opt/ml/input/data/<channel> before the trainer starts).
How the spec reaches the job: the resolved spec, with local paths replaced by their places in the job,
is uploaded as the one file of the `spec` input channel and the entry reads
`--spec /opt/ml/input/data/spec/spec.json`. SageMaker caps environment values at 512 characters and
hyperparameter values at 2,500, which a spec with sample prompts or a chat template exceeds; a channel
has no limit and leaves the file beside the job for later reading. The spec's hyperparameters are also
sent as HyperParameters (what the console shows and what tuning jobs change); the entry applies
/opt/ml/input/config/hyperparameters.json over the spec, so both say the same.
"""

from __future__ import annotations

import json
from typing import Any

from ftlaunch.backends import base

BASE_DIR = "/opt/ml"
SPEC_IN_JOB = f"{BASE_DIR}/input/data/spec/spec.json"
CHECKPOINTS_IN_JOB = f"{BASE_DIR}/checkpoints"
ENTRY = ["python", "-m", "ftlaunch.backends.sagemaker.entry"]
DEFAULT_MAX_RUNTIME_S = 86400  # SageMaker's own default (one day)
LIMIT_MAX_RUNTIME_S = 28 * 86400
ENV_VALUE_LIMIT = 512
HYPERPARAMETER_LIMIT = 2500


def render(plan: Any) -> base.JobRequest:
    ctx = plan.context
    offer = plan.offer
    job = plan.job_name
    root = f"s3://{ctx['bucket']}/{ctx['prefix']}/jobs/{job}"
    # local inputs go under a digest of their bytes, shared by every job in the bucket and prefix
    refs, uploads, mounts = base.place_inputs(ctx["inputs"], store=f"s3://{ctx['bucket']}/{ctx['prefix']}/inputs/",
                                              in_job=lambda ch, _: f"{BASE_DIR}/input/data/{ch}")
    for channel, info in ctx["inputs"].items():
        if info["kind"] == "uri" and info["ref"].startswith("s3://"):  # data (or a model) already in S3: a channel
            mounts[channel] = info["ref"]
            refs[channel] = in_channel(channel, info["ref"])
    spec_json = base.job_spec(plan.spec.to_json(), refs)
    uploads.insert(0, {"content": json.dumps(spec_json, indent=2, sort_keys=True),
                       "destination": f"{root}/input/spec/spec.json"})
    mounts = {"spec": f"{root}/input/spec/", **mounts}
    # SageMaker writes <S3OutputPath>/<job>/output/model.tar.gz: beside the job's inputs and checkpoints
    output = plan.spec.output.path if (plan.spec.output.path or "").startswith("s3://") else \
        f"s3://{ctx['bucket']}/{ctx['prefix']}/jobs"
    output = output.rstrip("/")

    max_runtime = min(plan.max_runtime_s or DEFAULT_MAX_RUNTIME_S, LIMIT_MAX_RUNTIME_S)
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": max_runtime}
    if offer.spot:
        # the wait for spot capacity costs nothing; SageMaker wants it at least the runtime
        stopping["MaxWaitTimeInSeconds"] = min(max(2 * max_runtime, max_runtime + 3600), LIMIT_MAX_RUNTIME_S)

    secret_ids = {name: ctx.get("secret_ids", {}).get(name, name) for name in plan.spec.secrets}
    env = {
        "FTLAUNCH_JOB_NAME": job,
        "FTLAUNCH_NPROC_PER_NODE": str(max(1, offer.gpus)),
        "FTLAUNCH_DISTRIBUTED": plan.spec.resources.distributed,
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if secret_ids:
        env["FTLAUNCH_SECRETS"] = json.dumps(secret_ids, separators=(",", ":"), sort_keys=True)
    _check_limits(env, ENV_VALUE_LIMIT, "an environment value")
    hyperparameters = {k: _text(v) for k, v in plan.spec.to_json()["hyperparameters"].items() if v is not None}
    _check_limits(hyperparameters, HYPERPARAMETER_LIMIT, "a hyperparameter")

    payload: dict[str, Any] = {
        "TrainingJobName": job,
        "AlgorithmSpecification": {
            "TrainingImage": image(plan),
            "TrainingInputMode": "File",
            "ContainerEntrypoint": ENTRY,
            "ContainerArguments": ["--spec", SPEC_IN_JOB],
        },
        "RoleArn": ctx["role_arn"],
        "HyperParameters": hyperparameters,
        "InputDataConfig": [_channel(name, uri) for name, uri in mounts.items()],
        "OutputDataConfig": {"S3OutputPath": output},
        "ResourceConfig": {
            "InstanceType": offer.details.get("instance_type") or offer.instance,
            "InstanceCount": offer.nodes,
            "VolumeSizeInGB": ctx["volume_gb"],
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": bool(offer.spot),
        "CheckpointConfig": {"S3Uri": f"{root}/checkpoints", "LocalPath": CHECKPOINTS_IN_JOB},
        "Environment": env,
        "Tags": [
            {"Key": "ftlaunch:job", "Value": job},
            {"Key": "ftlaunch:spec", "Value": plan.spec.name},
            {"Key": "ftlaunch:technique", "Value": plan.spec.technique.value},
            {"Key": "ftlaunch:spec-digest", "Value": plan.spec.digest()},
        ],
    }
    if offer.nodes > 1:
        payload["EnableInterContainerTrafficEncryption"] = False  # torchrun's rendezvous between hosts
    return base.JobRequest(
        backend="sagemaker", job_name=job, payload=payload, uploads=uploads, secrets=sorted(secret_ids),
        extra={"region": offer.region, "price_per_hour": offer.price_per_hour,
               "on_demand_price_per_hour": offer.on_demand_price_per_hour,
               "model_artifact": f"{output}/{job}/output/model.tar.gz"})


def image(plan: Any) -> str:
    """The trainer image: plan.image (`--image`), else the one settings resolved at plan time: the per-backend
    image setting, or `<registry>/ftlaunch-trainer:<tag>` (the content tag, the same on every cloud)."""
    return plan.image or plan.context["image"]


def in_channel(channel: str, uri: str) -> str:
    """Where an S3 object or prefix given as a channel is inside the job: SageMaker copies the objects under the
    prefix into /opt/ml/input/data/<channel>, keyed from the prefix, so a file (a key with a suffix) lands under
    its own name and a prefix becomes the folder."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    folder = f"{BASE_DIR}/input/data/{channel}"
    return f"{folder}/{name}" if "." in name and not uri.endswith("/") else folder


def _channel(name: str, uri: str) -> dict[str, Any]:
    return {"ChannelName": name, "InputMode": "File",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                            "S3DataDistributionType": "FullyReplicated"}}}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _check_limits(values: dict[str, str], limit: int, what: str) -> None:
    from ftlaunch.core import errors

    for key, value in values.items():
        if len(value) > limit:
            raise errors.UserError(f"{what} for SageMaker, {key}, is {len(value)} characters; SageMaker allows {limit}.",
                                   hint="shorten it (secret ids: use names, not full ARNs, in config.yaml)")
