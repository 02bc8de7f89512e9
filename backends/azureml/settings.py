"""Azure ML settings (subscription, resource group, workspace, compute clusters, registry, Key Vault), read at
plan time from the environment and $FTLAUNCH_HOME/config.yaml (section `azureml:`), so that render() stays pure.

    azureml:                        # each key also has an environment variable, which wins
      subscription: 00000000-0000-0000-0000-000000000000     # FTLAUNCH_AZURE_SUBSCRIPTION
      resource_group: ml-rg                                   # FTLAUNCH_AZURE_RESOURCE_GROUP
      workspace: ml-ws                                        # FTLAUNCH_AZURE_WORKSPACE
      compute: gpu-a100                                       # FTLAUNCH_AZURE_COMPUTE (a compute cluster)
      spot_compute: gpu-a100-lowpri                           # FTLAUNCH_AZURE_SPOT_COMPUTE (low-priority cluster)
      registry: myregistry.azurecr.io                         # FTLAUNCH_ACR_REGISTRY
      key_vault: ml-ws-kv                                     # FTLAUNCH_AZURE_KEY_VAULT (for spec secrets)
      secrets: {HF_TOKEN: hf-token}                           # spec secret name -> Key Vault secret name
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ftlaunch.backends import base
from ftlaunch.containers import image as image_mod

TABLE = {  # context key: (environment variable, default)
    "subscription": ("FTLAUNCH_AZURE_SUBSCRIPTION", None),
    "resource_group": ("FTLAUNCH_AZURE_RESOURCE_GROUP", None),
    "workspace": ("FTLAUNCH_AZURE_WORKSPACE", None),
    "compute": ("FTLAUNCH_AZURE_COMPUTE", None),
    "spot_compute": ("FTLAUNCH_AZURE_SPOT_COMPUTE", None),  # a cluster with tier low_priority
    "registry": ("FTLAUNCH_ACR_REGISTRY", None),
    "image": ("FTLAUNCH_AZUREML_IMAGE", None),  # a full image reference; overrides registry and tag
    "image_tag": ("FTLAUNCH_IMAGE_TAG", None),  # a prebuilt tag in the registry; unset: the content tag
    "datastore": ("FTLAUNCH_AZURE_DATASTORE", "workspaceblobstore"),
    "prefix": ("FTLAUNCH_AZURE_PREFIX", "ftlaunch"),
    "experiment": ("FTLAUNCH_AZURE_EXPERIMENT", "ftlaunch"),
    "key_vault": ("FTLAUNCH_AZURE_KEY_VAULT", None),
    "shm_size": ("FTLAUNCH_AZURE_SHM_SIZE", "16g"),
}


def resolve(spec: Any, job_name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The plan's context for --cloud azureml; unconfigured values become visible placeholders."""
    ctx = base.settings("azureml", TABLE, env)
    for key in ("subscription", "resource_group", "workspace", "compute"):
        if not ctx[key]:
            ctx[key] = base.placeholder(TABLE[key][0], lower=True)
    if not ctx["spot_compute"]:
        ctx["spot_compute"] = base.placeholder("FTLAUNCH_AZURE_SPOT_COMPUTE", lower=True)
    if not ctx["registry"]:
        ctx["registry"] = base.placeholder("FTLAUNCH_ACR_REGISTRY", lower=True) + ".azurecr.io"
    if not ctx["key_vault"] and spec.secrets:
        ctx["key_vault"] = base.placeholder("FTLAUNCH_AZURE_KEY_VAULT", lower=True)
    ctx["prefix"] = str(ctx["prefix"]).strip("/")
    ctx["inputs"] = base.local_inputs(spec)
    ctx.update(image_mod.for_cloud(ctx["registry"], os.environ if env is None else env, image=ctx["image"],
                                   tag=ctx["image_tag"]))
    return ctx


# What `ftlaunch check` reports: each setting a launch needs (its TABLE key and what it is), and the setting
# that stands in for one left unset (key -> (key, environment variable)).
CHECK = (
    ("subscription", "the subscription id"),
    ("resource_group", "the workspace's resource group"),
    ("workspace", "the Azure ML workspace"),
    ("compute", "a GPU compute cluster in the workspace"),
    ("registry", "NAME.azurecr.io holding ftlaunch-trainer (or FTLAUNCH_AZUREML_IMAGE)"),
)
FALLBACKS = {"registry": ("image", "FTLAUNCH_AZUREML_IMAGE")}


def credentials(env: dict[str, str]) -> dict[str, Any]:
    """`ftlaunch check`'s credentials finding: where DefaultAzureCredential would find a login, looked for without asking for a token."""
    if env.get("AZURE_CLIENT_ID") and (env.get("AZURE_CLIENT_SECRET") or env.get("AZURE_CLIENT_CERTIFICATE_PATH")
                                       or env.get("AZURE_FEDERATED_TOKEN_FILE")):
        return base.finding("Azure credentials", True, "service principal from AZURE_CLIENT_ID and friends")
    if env.get("IDENTITY_ENDPOINT") or env.get("MSI_ENDPOINT"):
        return base.finding("Azure credentials", True, "managed identity")
    profile = Path(env.get("AZURE_CONFIG_DIR") or Path.home() / ".azure") / "azureProfile.json"
    if profile.exists():
        return base.finding("Azure credentials", True, f"Azure CLI login ({profile.parent})")
    return base.finding("Azure credentials", False, "none found", "az login (or set AZURE_CLIENT_ID, AZURE_TENANT_ID and "
                                                           "AZURE_CLIENT_SECRET for a service principal)")
