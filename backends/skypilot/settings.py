"""SkyPilot settings (output bucket, image registry), read at plan time from the environment and
$FTLAUNCH_HOME/config.yaml (section `skypilot:`), so that render() stays pure.

    skypilot:                       # each key also has an environment variable, which wins
      bucket: s3://my-ml-bucket                               # FTLAUNCH_SKYPILOT_BUCKET (s3://, gs://, r2://)
      registry: 123456789012.dkr.ecr.us-east-1.amazonaws.com  # FTLAUNCH_SKYPILOT_REGISTRY
      image: ghcr.io/me/ftlaunch-trainer:0.1.0                # FTLAUNCH_SKYPILOT_IMAGE (overrides registry)

Cloud credentials are SkyPilot's own (`sky check`); secrets are the spec's names, whose values submit
reads from the launcher's environment and hands to SkyPilot as task secrets.
"""

from __future__ import annotations

import os
from typing import Any

from ftlaunch.backends import base
from ftlaunch.containers import image as image_mod

TABLE = {  # context key: (environment variable, default)
    "bucket": ("FTLAUNCH_SKYPILOT_BUCKET", None),
    "prefix": ("FTLAUNCH_SKYPILOT_PREFIX", "ftlaunch"),
    "registry": ("FTLAUNCH_SKYPILOT_REGISTRY", None),
    "image": ("FTLAUNCH_SKYPILOT_IMAGE", None),  # a full image reference; overrides registry and tag
    "image_tag": ("FTLAUNCH_IMAGE_TAG", None),  # a prebuilt tag in the registry; unset: the content tag
    "disk_gb": ("FTLAUNCH_SKYPILOT_DISK_GB", 256),
    "max_restarts_on_errors": ("FTLAUNCH_SKYPILOT_MAX_RESTARTS", 0),
}


def resolve(spec: Any, job_name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The plan's context for --cloud skypilot; unconfigured values become visible placeholders."""
    ctx = base.settings("skypilot", TABLE, env)
    bucket = ctx["bucket"] or "s3://" + base.placeholder("FTLAUNCH_SKYPILOT_BUCKET", lower=True)
    ctx["bucket"] = bucket if "://" in bucket else f"s3://{bucket}"
    ctx["bucket"] = ctx["bucket"].rstrip("/")
    if not ctx["registry"]:
        ctx["registry"] = "docker.io/" + base.placeholder("FTLAUNCH_SKYPILOT_REGISTRY", lower=True)
    ctx["disk_gb"] = int(ctx["disk_gb"])
    ctx["max_restarts_on_errors"] = int(ctx["max_restarts_on_errors"])
    ctx["prefix"] = str(ctx["prefix"]).strip("/")
    ctx["inputs"] = base.local_inputs(spec)
    ctx.update(image_mod.for_cloud(ctx["registry"], os.environ if env is None else env, image=ctx["image"],
                                   tag=ctx["image_tag"]))
    return ctx


# What `ftlaunch check` reports: each setting a launch needs (its TABLE key and what it is), and the setting
# that stands in for one left unset (key -> (key, environment variable)).
CHECK = (
    ("bucket", "s3://BUCKET or gs://BUCKET for outputs and checkpoints"),
    ("registry", "a registry the clusters can pull ftlaunch-trainer from (or FTLAUNCH_SKYPILOT_IMAGE)"),
)
FALLBACKS = {"registry": ("image", "FTLAUNCH_SKYPILOT_IMAGE")}


def credentials(env: dict[str, str]) -> dict[str, Any]:
    """`ftlaunch check`'s credentials finding: SkyPilot's own state, which `sky check` writes once it has
    looked at the clouds' credentials."""
    from pathlib import Path

    enabled = Path(env.get("HOME") or Path.home()) / ".sky"
    return base.finding("SkyPilot state (~/.sky)", enabled.exists(), str(enabled) if enabled.exists() else "",
                        "run `sky check` once: it says which clouds' credentials SkyPilot can use")
