"""`ftlaunch check`: per backend, whether its SDK extra, credentials and settings are present, and what to do
about each one missing. Looks without importing the SDKs where it can, and never submits anything."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import click

BACKENDS = ("local", "sagemaker", "vertex", "azureml", "skypilot")


def gather(env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per backend: {backend, ready, items: [{what, ok, detail, fix}]}."""
    env = dict(os.environ if env is None else env)
    rows = [_local(), _sagemaker(env), _vertex(env), _azureml(env), _skypilot(env)]
    for row in rows:
        row["ready"] = all(item["ok"] for item in row["items"])
    return rows


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def check(as_json: bool) -> None:
    """Say, per backend, whether its SDK, credentials and settings are in place, and how to fix what is not."""
    rows = gather()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from ftlaunch import term

    console = term.console()
    for row in rows:
        mark = "[green]ready[/]" if row["ready"] else "[yellow]not ready[/]"
        console.print(term.markup("[bold]{}[/]: " + mark, row["backend"]))
        for item in row["items"]:
            sign = "[green]ok[/]  " if item["ok"] else "[red]missing[/]"
            console.print(term.markup("  " + sign + " {}{}", item["what"], f": {item['detail']}" if item["detail"] else ""))
            if not item["ok"] and item["fix"]:
                console.print(term.plain(f"          fix: {item['fix']}"))


def _item(what: str, ok: bool, detail: str = "", fix: str = "") -> dict[str, Any]:
    return {"what": what, "ok": bool(ok), "detail": detail, "fix": fix}


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _local() -> dict[str, Any]:
    train = all(_has(m) for m in ("torch", "transformers", "peft", "trl"))
    return {"backend": "local", "items": [
        _item("training packages (torch, transformers, peft, trl)", train, fix="pip install 'ftlaunch[train]'")]}


def _setting(env: dict[str, str], section: str, key: str, var: str) -> tuple[bool, str]:
    from ftlaunch.backends import base

    value = base.settings(section, {key: (var, None)}, env)[key]
    return value is not None, str(value) if value is not None else ""


def _settings(env: dict[str, str], section: str, rows: tuple[tuple[str, str, str], ...],
              fallbacks: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """One row per setting a backend needs, (key, variable, what it is): found in the environment or
    `section` of $FTLAUNCH_HOME/config.yaml, else how to set it. `fallbacks`: key -> (key, variable) that
    stands in when the first is unset (a full image reference instead of a registry, say)."""
    items = []
    for key, var, what in rows:
        ok, value = _setting(env, section, key, var)
        if not ok and key in fallbacks:
            ok, value = _setting(env, section, *fallbacks[key])
        items.append(_item(var, ok, value, f"export {var}=... ({what}) or set it under `{section}:` in "
                                            "$FTLAUNCH_HOME/config.yaml"))
    return items


def _sagemaker(env: dict[str, str]) -> dict[str, Any]:
    items = [_item("boto3 (extra `sagemaker`)", _has("boto3"), fix="pip install 'ftlaunch[sagemaker]'")]
    items.append(_aws_credentials(env) if _has("boto3") else
                 _item("AWS credentials", False, "not checked without boto3", "pip install 'ftlaunch[sagemaker]'"))
    items += _settings(env, "sagemaker", (
        ("role_arn", "FTLAUNCH_SAGEMAKER_ROLE", "an IAM role SageMaker can assume (docs/clouds.md)"),
        ("bucket", "FTLAUNCH_S3_BUCKET", "an S3 bucket for inputs, checkpoints and outputs"),
        ("registry", "FTLAUNCH_ECR_REGISTRY",
         "ACCOUNT.dkr.ecr.REGION.amazonaws.com holding ftlaunch-trainer (or FTLAUNCH_SAGEMAKER_IMAGE)"),
    ), {"registry": ("image", "FTLAUNCH_SAGEMAKER_IMAGE")})
    return {"backend": "sagemaker", "items": items}


def _aws_credentials(env: dict[str, str]) -> dict[str, Any]:
    """Finds credentials the way boto3 does (environment, profiles, SSO, container and instance roles)."""
    import boto3

    try:
        credentials = boto3.session.Session().get_credentials()
    except Exception as exc:  # noqa: BLE001 - a broken profile is a finding, not a crash
        return _item("AWS credentials", False, f"{type(exc).__name__}: {exc}", "fix ~/.aws/config or AWS_PROFILE")
    if credentials is None:
        return _item("AWS credentials", False, "none found",
                     "aws configure (or aws sso login, AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
    return _item("AWS credentials", True, f"from {credentials.method}")


def _vertex(env: dict[str, str]) -> dict[str, Any]:
    sdk = _has("google.cloud.aiplatform_v1") and _has("google.cloud.storage")
    items = [_item("google-cloud-aiplatform and google-cloud-storage (extra `vertex`)", sdk,
                   fix="pip install 'ftlaunch[vertex]'")]
    items.append(_gcp_credentials(env) if _has("google.auth") else
                 _item("Google credentials", False, "not checked without google-auth", "pip install 'ftlaunch[vertex]'"))
    items += _settings(env, "vertex", (
        ("project", "FTLAUNCH_GCP_PROJECT", "the project that runs the jobs"),
        ("bucket", "FTLAUNCH_GCS_BUCKET", "a GCS bucket for inputs, checkpoints and outputs"),
        ("registry", "FTLAUNCH_ARTIFACT_REGISTRY",
         "REGION-docker.pkg.dev/PROJECT/REPO holding ftlaunch-trainer (or FTLAUNCH_VERTEX_IMAGE)"),
    ), {"project": ("project", "GOOGLE_CLOUD_PROJECT"), "registry": ("image", "FTLAUNCH_VERTEX_IMAGE")})
    return {"backend": "vertex", "items": items}


def _gcp_credentials(env: dict[str, str]) -> dict[str, Any]:
    """Application Default Credentials, looked for without contacting a metadata server."""
    path = env.get("GOOGLE_APPLICATION_CREDENTIALS")
    if path:
        ok = Path(path).exists()
        return _item("Google credentials", ok, f"GOOGLE_APPLICATION_CREDENTIALS={path}" + ("" if ok else " (no file)"),
                     "point GOOGLE_APPLICATION_CREDENTIALS at a key file, or unset it")
    adc = Path(env.get("CLOUDSDK_CONFIG") or Path.home() / ".config/gcloud") / "application_default_credentials.json"
    if adc.exists():
        return _item("Google credentials", True, f"application default credentials ({adc})")
    if env.get("GCE_METADATA_HOST") or env.get("KUBERNETES_SERVICE_HOST") or env.get("CLOUD_SHELL"):
        return _item("Google credentials", True, "the attached service account (metadata server)")
    return _item("Google credentials", False, "none found", "gcloud auth application-default login")


def _azureml(env: dict[str, str]) -> dict[str, Any]:
    sdk = _has("azure.ai.ml") and _has("azure.identity") and _has("azure.storage.blob")
    items = [_item("azure-ai-ml, azure-identity and azure-storage-blob (extra `azure`)", sdk,
                   fix="pip install 'ftlaunch[azure]'")]
    items.append(_azure_credentials(env))
    items += _settings(env, "azureml", (
        ("subscription", "FTLAUNCH_AZURE_SUBSCRIPTION", "the subscription id"),
        ("resource_group", "FTLAUNCH_AZURE_RESOURCE_GROUP", "the workspace's resource group"),
        ("workspace", "FTLAUNCH_AZURE_WORKSPACE", "the Azure ML workspace"),
        ("compute", "FTLAUNCH_AZURE_COMPUTE", "a GPU compute cluster in the workspace"),
        ("registry", "FTLAUNCH_ACR_REGISTRY", "NAME.azurecr.io holding ftlaunch-trainer (or FTLAUNCH_AZUREML_IMAGE)"),
    ), {"registry": ("image", "FTLAUNCH_AZUREML_IMAGE")})
    return {"backend": "azureml", "items": items}


def _azure_credentials(env: dict[str, str]) -> dict[str, Any]:
    """Where DefaultAzureCredential would find a login, looked for without asking for a token."""
    if env.get("AZURE_CLIENT_ID") and (env.get("AZURE_CLIENT_SECRET") or env.get("AZURE_CLIENT_CERTIFICATE_PATH")
                                       or env.get("AZURE_FEDERATED_TOKEN_FILE")):
        return _item("Azure credentials", True, "service principal from AZURE_CLIENT_ID and friends")
    if env.get("IDENTITY_ENDPOINT") or env.get("MSI_ENDPOINT"):
        return _item("Azure credentials", True, "managed identity")
    profile = Path(env.get("AZURE_CONFIG_DIR") or Path.home() / ".azure") / "azureProfile.json"
    if profile.exists():
        return _item("Azure credentials", True, f"Azure CLI login ({profile.parent})")
    return _item("Azure credentials", False, "none found", "az login (or set AZURE_CLIENT_ID, AZURE_TENANT_ID and "
                                                           "AZURE_CLIENT_SECRET for a service principal)")


def _skypilot(env: dict[str, str]) -> dict[str, Any]:
    items = [_item("skypilot (extra `skypilot`)", _has("sky"), fix="pip install 'ftlaunch[skypilot]'")]
    enabled = Path(env.get("HOME") or Path.home()) / ".sky"
    items.append(_item("SkyPilot state (~/.sky)", enabled.exists(), str(enabled) if enabled.exists() else "",
                       "run `sky check` once: it says which clouds' credentials SkyPilot can use"))
    items += _settings(env, "skypilot", (
        ("bucket", "FTLAUNCH_SKYPILOT_BUCKET", "s3://BUCKET or gs://BUCKET for outputs and checkpoints"),
        ("registry", "FTLAUNCH_SKYPILOT_REGISTRY",
         "a registry the clusters can pull ftlaunch-trainer from (or FTLAUNCH_SKYPILOT_IMAGE)"),
    ), {"registry": ("image", "FTLAUNCH_SKYPILOT_IMAGE")})
    return {"backend": "skypilot", "items": items}
