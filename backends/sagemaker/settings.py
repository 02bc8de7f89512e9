"""SageMaker settings (role, bucket, image registry, secret ids), read at plan time from the environment
and $FTLAUNCH_HOME/config.yaml (section `sagemaker:`), so that render() stays pure.

    sagemaker:                      # each key also has an environment variable, which wins
      role: arn:aws:iam::123456789012:role/ftlaunch-sagemaker     # FTLAUNCH_SAGEMAKER_ROLE
      bucket: my-ml-bucket                                        # FTLAUNCH_S3_BUCKET
      registry: 123456789012.dkr.ecr.us-east-1.amazonaws.com      # FTLAUNCH_ECR_REGISTRY
      secrets: {HF_TOKEN: "arn:aws:secretsmanager:...:secret:hf-token"}   # default id: the name itself
"""

from __future__ import annotations

import os
from typing import Any

from ftlaunch.backends import base
from ftlaunch.containers import image as image_mod

TABLE = {  # context key: (environment variable, default)
    "role_arn": ("FTLAUNCH_SAGEMAKER_ROLE", None),
    "bucket": ("FTLAUNCH_S3_BUCKET", None),
    "prefix": ("FTLAUNCH_S3_PREFIX", "ftlaunch"),
    "registry": ("FTLAUNCH_ECR_REGISTRY", None),
    "image": ("FTLAUNCH_SAGEMAKER_IMAGE", None),  # a full image URI; overrides registry and tag
    "image_tag": ("FTLAUNCH_IMAGE_TAG", None),  # a prebuilt tag in the registry; unset: the content tag
    "volume_gb": ("FTLAUNCH_SAGEMAKER_VOLUME_GB", 100),
}


def resolve(spec: Any, job_name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The plan's context for --cloud sagemaker; unconfigured values become visible placeholders."""
    ctx = base.settings("sagemaker", TABLE, env)
    if not ctx["role_arn"]:
        ctx["role_arn"] = "arn:aws:iam::000000000000:role/" + base.placeholder("FTLAUNCH_SAGEMAKER_ROLE")
    if not ctx["bucket"]:
        ctx["bucket"] = base.placeholder("FTLAUNCH_S3_BUCKET", lower=True)
    if not ctx["registry"]:
        ctx["registry"] = "000000000000.dkr.ecr.us-east-1.amazonaws.com/" + \
            base.placeholder("FTLAUNCH_ECR_REGISTRY", lower=True)
    ctx["volume_gb"] = int(ctx["volume_gb"])
    ctx["prefix"] = str(ctx["prefix"]).strip("/")
    ctx["inputs"] = base.local_inputs(spec)
    ctx.update(image_mod.for_cloud(ctx["registry"], os.environ if env is None else env, image=ctx["image"],
                                   tag=ctx["image_tag"]))
    return ctx


def default_registry(region: str | None = None, *, client: Any = None) -> str:
    """Where `ftlaunch build --cloud sagemaker` pushes when no registry is named: ECR in the caller's account."""
    import boto3

    session = boto3.session.Session(region_name=region)
    sts = client or session.client("sts")
    account = sts.get_caller_identity()["Account"]
    region = region or session.region_name or "us-east-1"
    return f"{account}.dkr.ecr.{region}.amazonaws.com"


# What `ftlaunch check` reports: each setting a launch needs (its TABLE key and what it is), and the setting
# that stands in for one left unset (key -> (key, environment variable)).
CHECK = (
    ("role_arn", "an IAM role SageMaker can assume (docs/clouds.md)"),
    ("bucket", "an S3 bucket for inputs, checkpoints and outputs"),
    ("registry", "ACCOUNT.dkr.ecr.REGION.amazonaws.com holding ftlaunch-trainer (or FTLAUNCH_SAGEMAKER_IMAGE)"),
)
FALLBACKS = {"registry": ("image", "FTLAUNCH_SAGEMAKER_IMAGE")}


def credentials(env: dict[str, str]) -> dict[str, Any]:
    """`ftlaunch check`'s credentials finding: AWS credentials found the way boto3 does (without boto3: not checked)."""
    import importlib.util

    if importlib.util.find_spec("boto3") is None:
        return base.finding("AWS credentials", False, "not checked without boto3", "pip install 'ftlaunch[sagemaker]'")
    return _aws_credentials(env)


def _aws_credentials(env: dict[str, str]) -> dict[str, Any]:
    """Finds credentials the way boto3 does (environment, profiles, SSO, container and instance roles)."""
    import boto3

    try:
        credentials = boto3.session.Session().get_credentials()
    except Exception as exc:  # noqa: BLE001 - a broken profile is a finding, not a crash
        return base.finding("AWS credentials", False, f"{type(exc).__name__}: {exc}", "fix ~/.aws/config or AWS_PROFILE")
    if credentials is None:
        return base.finding("AWS credentials", False, "none found",
                     "aws configure (or aws sso login, AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
    return base.finding("AWS credentials", True, f"from {credentials.method}")
