"""Vertex AI settings (project, bucket, service account, image registry, secret names), read at plan time
from the environment and $FTLAUNCH_HOME/config.yaml (section `vertex:`), so that render() stays pure.

    vertex:                         # each key also has an environment variable, which wins
      project: my-project                                         # FTLAUNCH_GCP_PROJECT
      bucket: my-ml-bucket                                        # FTLAUNCH_GCS_BUCKET
      service_account: trainer@my-project.iam.gserviceaccount.com # FTLAUNCH_VERTEX_SERVICE_ACCOUNT
      registry: us-central1-docker.pkg.dev/my-project/ftlaunch    # FTLAUNCH_ARTIFACT_REGISTRY
      secrets: {HF_TOKEN: projects/my-project/secrets/hf-token/versions/3}  # default: <name>, latest
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftlaunch.core import errors
from ftlaunch.backends import base
from ftlaunch.containers import image as image_mod

TABLE = {  # context key: (environment variable, default)
    "project": ("FTLAUNCH_GCP_PROJECT", None),
    "bucket": ("FTLAUNCH_GCS_BUCKET", None),
    "prefix": ("FTLAUNCH_GCS_PREFIX", "ftlaunch"),
    "service_account": ("FTLAUNCH_VERTEX_SERVICE_ACCOUNT", None),  # unset: Vertex's default service agent
    "registry": ("FTLAUNCH_ARTIFACT_REGISTRY", None),
    "image": ("FTLAUNCH_VERTEX_IMAGE", None),  # a full image URI; overrides registry and tag
    "image_tag": ("FTLAUNCH_IMAGE_TAG", None),  # a prebuilt tag in the registry; unset: the content tag
    "boot_disk_gb": ("FTLAUNCH_VERTEX_DISK_GB", 100),
}


def resolve(spec: Any, job_name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The plan's context for --cloud vertex; unconfigured values become visible placeholders."""
    import os

    env = os.environ if env is None else env
    ctx = base.settings("vertex", TABLE, env)
    if not ctx["project"]:
        ctx["project"] = env.get("GOOGLE_CLOUD_PROJECT") or base.placeholder("FTLAUNCH_GCP_PROJECT", lower=True)
    if not ctx["bucket"]:
        ctx["bucket"] = base.placeholder("FTLAUNCH_GCS_BUCKET", lower=True)
    if not ctx["registry"]:
        ctx["registry"] = "us-docker.pkg.dev/" + base.placeholder("FTLAUNCH_ARTIFACT_REGISTRY", lower=True)
    ctx["boot_disk_gb"] = int(ctx["boot_disk_gb"])
    ctx["prefix"] = str(ctx["prefix"]).strip("/")
    ctx["inputs"] = base.local_inputs(spec)
    ctx.update(image_mod.for_cloud(ctx["registry"], env, image=ctx["image"], tag=ctx["image_tag"]))
    return ctx


def default_registry(region: str | None = None, *, client: Any = None) -> str:
    """Where `ftlaunch build --cloud vertex` pushes when no registry is named: the Artifact Registry
    repository `ftlaunch` in the caller's project."""
    import google.auth

    _, project = google.auth.default()
    if not project:
        raise errors.UserError("no Google Cloud project is set, so the Artifact Registry address is unknown.",
                               hint="gcloud config set project PROJECT, or pass --registry "
                                    "REGION-docker.pkg.dev/PROJECT/REPOSITORY")
    return f"{region or 'us-central1'}-docker.pkg.dev/{project}/ftlaunch"


# What `ftlaunch check` reports: each setting a launch needs (its TABLE key and what it is), and the setting
# that stands in for one left unset (key -> (key, environment variable)).
CHECK = (
    ("project", "the project that runs the jobs"),
    ("bucket", "a GCS bucket for inputs, checkpoints and outputs"),
    ("registry", "REGION-docker.pkg.dev/PROJECT/REPO holding ftlaunch-trainer (or FTLAUNCH_VERTEX_IMAGE)"),
)
FALLBACKS = {"project": ("project", "GOOGLE_CLOUD_PROJECT"), "registry": ("image", "FTLAUNCH_VERTEX_IMAGE")}


def credentials(env: dict[str, str]) -> dict[str, Any]:
    """`ftlaunch check`'s credentials finding: Application Default Credentials (without google-auth: not checked)."""
    import importlib.util

    try:
        have = importlib.util.find_spec("google.auth") is not None
    except (ImportError, ValueError):
        have = False
    if not have:
        return base.finding("Google credentials", False, "not checked without google-auth",
                            "pip install 'ftlaunch[vertex]'")
    return _gcp_credentials(env)


def _gcp_credentials(env: dict[str, str]) -> dict[str, Any]:
    """Application Default Credentials, looked for without contacting a metadata server."""
    path = env.get("GOOGLE_APPLICATION_CREDENTIALS")
    if path:
        ok = Path(path).exists()
        return base.finding("Google credentials", ok, f"GOOGLE_APPLICATION_CREDENTIALS={path}" + ("" if ok else " (no file)"),
                     "point GOOGLE_APPLICATION_CREDENTIALS at a key file, or unset it")
    adc = Path(env.get("CLOUDSDK_CONFIG") or Path.home() / ".config/gcloud") / "application_default_credentials.json"
    if adc.exists():
        return base.finding("Google credentials", True, f"application default credentials ({adc})")
    if env.get("GCE_METADATA_HOST") or env.get("KUBERNETES_SERVICE_HOST") or env.get("CLOUD_SHELL"):
        return base.finding("Google credentials", True, "the attached service account (metadata server)")
    return base.finding("Google credentials", False, "none found", "gcloud auth application-default login")
