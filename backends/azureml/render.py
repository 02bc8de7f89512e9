"""Turns a plan into an Azure ML command job, in the job YAML's own form (what `az ml job create -f` reads and
`azure.ai.ml.load_job` parses against Azure ML's schema, as the tests do), plus the files to put on the
workspace's datastore first. Pure: everything comes from the plan.

How the spec and data reach the job: ftlaunch uploads the resolved spec and any local dataset, eval file
or model folder to `azureml://datastores/<datastore>/paths/<prefix>/jobs/<job>/input/<channel>/`, and the
job declares each folder as a `uri_folder` input. Azure ML substitutes `${{inputs.<channel>}}` (the
folder's place in the job) only in the command, so the spec names its files as `${{inputs.train}}/x.jsonl`
and the entry (backends/azureml/entry.py) replaces those tokens with the paths it is given.

Outputs: two `uri_folder` outputs in `rw_mount` mode at fixed datastore paths: `outputs` (metrics,
summary, weights, manifest) and `checkpoints` (read back by a rerun of the same job, so it resumes).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ftlaunch.backends import base

SCHEMA = "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json"
ENTRY = "python -m ftlaunch.backends.azureml.entry"


def render(plan: Any) -> base.JobRequest:
    ctx = plan.context
    offer = plan.offer
    job = plan.job_name
    datastore = ctx["datastore"]
    root_path = f"{ctx['prefix']}/jobs/{job}"
    root = f"azureml://datastores/{datastore}/paths/{root_path}"
    # local inputs go under a digest of their bytes, shared by every job in the datastore and prefix
    refs, uploads, mounts = base.place_inputs(
        ctx["inputs"], store=f"azureml://datastores/{datastore}/paths/{ctx['prefix']}/inputs/",
        in_job=lambda ch, _: token(ch))
    inputs = {"spec": _folder(f"{root}/input/spec/")}
    inputs.update({channel: _folder(uri) for channel, uri in mounts.items()})
    for channel, info in ctx["inputs"].items():
        if info["kind"] == "uri" and info["ref"].startswith("azureml://"):
            kind = "uri_folder" if info["ref"].endswith("/") else "uri_file"
            inputs[channel] = {"type": kind, "path": info["ref"], "mode": "download"}
            refs[channel] = token(channel)
    spec_json = base.job_spec(plan.spec.to_json(), refs)
    uploads = [{"content": json.dumps(spec_json, indent=2, sort_keys=True),
                "destination": f"{root}/input/spec/spec.json"}] + uploads
    # a user's output.path holds many jobs: each gets its own folder under it
    output = f"{plan.spec.output.path.rstrip('/')}/{job}/" if (plan.spec.output.path or "").startswith(
        "azureml://") else f"{root}/outputs/"

    secret_ids = {name: f"https://{ctx['key_vault']}.vault.azure.net/secrets/"
                        f"{ctx.get('secret_ids', {}).get(name) or _vault_name(name)}"
                  for name in plan.spec.secrets}
    env = {
        "FTLAUNCH_JOB_NAME": job,
        "FTLAUNCH_NPROC_PER_NODE": str(max(1, offer.gpus)),
        "FTLAUNCH_DISTRIBUTED": plan.spec.resources.distributed,
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if secret_ids:
        env["FTLAUNCH_SECRETS"] = json.dumps(secret_ids, separators=(",", ":"), sort_keys=True)

    command = [ENTRY, "--spec", "${{inputs.spec}}/spec.json", "--outputs", "${{outputs.outputs}}",
               "--checkpoints", "${{outputs.checkpoints}}"]
    command += [f"--input {channel}={token(channel)}" for channel in inputs if channel != "spec"]
    vm_size = offer.details.get("vm_size") or offer.instance
    payload: dict[str, Any] = {
        "$schema": SCHEMA,
        "type": "command",
        "name": job,
        "display_name": job,
        "experiment_name": ctx["experiment"],
        "description": f"ftlaunch: {plan.spec.technique.value} {plan.spec.task.value} of {plan.spec.model}",
        "command": " ".join(command),
        "environment": {"image": image(plan)},
        # a compute cluster's VM size is fixed when it is created; the offer's size is in the tags, and
        # submit warns when the cluster's differs. Spot: a low-priority cluster.
        "compute": f"azureml:{ctx['spot_compute'] if offer.spot else ctx['compute']}",
        "resources": {"instance_count": offer.nodes, "shm_size": ctx["shm_size"]},
        "inputs": inputs,
        "outputs": {
            "outputs": {"type": "uri_folder", "path": output, "mode": "rw_mount"},
            "checkpoints": {"type": "uri_folder", "path": f"{root}/checkpoints/", "mode": "rw_mount"},
        },
        "environment_variables": env,
        "tags": {
            "ftlaunch:job": job,
            "ftlaunch:spec": plan.spec.name,
            "ftlaunch:technique": plan.spec.technique.value,
            "ftlaunch:spec-digest": plan.spec.digest(),
            "ftlaunch:vm-size": vm_size,
            "ftlaunch:spot": "true" if offer.spot else "false",
        },
    }
    if offer.nodes > 1:
        # one process per node: the entry starts torchrun over the node's GPUs, with the rendezvous Azure
        # ML sets for PyTorch jobs (MASTER_ADDR, MASTER_PORT, NODE_RANK, WORLD_SIZE = nodes)
        payload["distribution"] = {"type": "pytorch", "process_count_per_instance": 1}
    if plan.max_runtime_s:
        payload["limits"] = {"timeout": int(plan.max_runtime_s)}
    return base.JobRequest(
        backend="azureml", job_name=job, payload=payload, uploads=uploads, secrets=sorted(secret_ids),
        extra={"subscription": ctx["subscription"], "resource_group": ctx["resource_group"],
               "workspace": ctx["workspace"], "datastore": datastore, "region": offer.region,
               "vm_size": vm_size, "price_per_hour": offer.price_per_hour, "outputs": output})


def image(plan: Any) -> str:
    """The trainer image: plan.image (`--image`), else the one settings resolved at plan time: the per-backend
    image setting, or `<registry>/ftlaunch-trainer:<tag>` (the content tag, the same on every cloud)."""
    return plan.image or plan.context["image"]


def token(channel: str) -> str:
    """How the command names an input's folder in the job; Azure ML substitutes it at run time."""
    return "${{inputs.%s}}" % channel


def split_datastore_uri(uri: str) -> tuple[str, str]:
    """azureml://datastores/<name>/paths/<path> -> (name, path)."""
    m = re.fullmatch(r"azureml://datastores/([^/]+)/paths/(.*)", uri)
    if not m:
        from ftlaunch.core import errors

        raise errors.UserError(f"{uri} is not an azureml://datastores/<name>/paths/<path> URI.")
    return m.group(1), m.group(2)


def _folder(uri: str) -> dict[str, str]:
    return {"type": "uri_folder", "path": uri, "mode": "download"}


def _vault_name(name: str) -> str:
    """A Key Vault secret name (letters, digits, dashes) for an environment-variable name: HF_TOKEN -> hf-token."""
    return re.sub(r"[^A-Za-z0-9-]", "-", name).lower()
