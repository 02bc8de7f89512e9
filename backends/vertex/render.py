"""Turns a plan into a Vertex AI CustomJob (the REST body of customJobs.create, camelCase, validated
against google.cloud.aiplatform_v1.CustomJob in the tests) plus the files to put on GCS first. Pure.

How the spec reaches the job: the resolved spec, with local paths replaced by their places in the job,
is uploaded next to the job's inputs and passed as `--spec /gcs/<bucket>/.../spec.json`: Vertex mounts
Cloud Storage under /gcs (FUSE), so the trainer reads it, and the data, as files. Environment values
and args stay short and readable.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ftlaunch.backends import base

GCS_MOUNT = "/gcs"
ENTRY = ["python", "-m", "ftlaunch.backends.vertex.entry"]
DEFAULT_TIMEOUT_S = 7 * 86400  # Vertex's own default


def render(plan: Any) -> base.JobRequest:
    ctx = plan.context
    offer = plan.offer
    job = plan.job_name
    root_path = f"{ctx['bucket']}/{ctx['prefix']}/jobs/{job}"
    root = f"gs://{root_path}"
    # local inputs go under a digest of their bytes, shared by every job in the bucket and prefix
    refs, uploads, _ = base.place_inputs(ctx["inputs"], store=f"gs://{ctx['bucket']}/{ctx['prefix']}/inputs/",
                                         in_job=lambda ch, folder: f"{GCS_MOUNT}/{folder[5:].rstrip('/')}")
    for channel, info in ctx["inputs"].items():
        if info["kind"] == "uri" and info["ref"].startswith("gs://"):
            refs[channel] = f"{GCS_MOUNT}/{info['ref'][5:]}"  # read through the mount
    spec_json = base.job_spec(plan.spec.to_json(), refs)
    uploads.insert(0, {"content": json.dumps(spec_json, indent=2, sort_keys=True),
                       "destination": f"{root}/input/spec/spec.json"})
    # a user's output.path holds many jobs: each gets its own folder (model/, checkpoints/) under it
    output = f"{plan.spec.output.path.rstrip('/')}/{job}" if (plan.spec.output.path or "").startswith("gs://") \
        else f"{root}/output"

    secret_names = {name: ctx.get("secret_ids", {}).get(name) or
                    f"projects/{ctx['project']}/secrets/{name}/versions/latest" for name in plan.spec.secrets}
    env = {"FTLAUNCH_JOB_NAME": job, "FTLAUNCH_DISTRIBUTED": plan.spec.resources.distributed,
           "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    if secret_names:
        env["FTLAUNCH_SECRETS"] = json.dumps(secret_names, separators=(",", ":"), sort_keys=True)
    container = {"imageUri": image(plan), "command": ENTRY,
                 "args": ["--spec", f"{GCS_MOUNT}/{root_path}/input/spec/spec.json"],
                 "env": [{"name": k, "value": v} for k, v in env.items()]}
    machine: dict[str, Any] = {"machineType": offer.details.get("machine_type") or offer.instance}
    if offer.details.get("accelerator_type") and offer.gpus:
        machine["acceleratorType"] = offer.details["accelerator_type"]
        machine["acceleratorCount"] = int(offer.details.get("accelerator_count") or offer.gpus)
    disk = {"bootDiskType": boot_disk_type(machine["machineType"]), "bootDiskSizeGb": ctx["boot_disk_gb"]}
    # the first pool is the chief (one replica); more nodes are the second pool, as CLUSTER_SPEC shows them
    pools = [{"machineSpec": machine, "replicaCount": "1", "diskSpec": disk, "containerSpec": container}]
    if offer.nodes > 1:
        pools.append({"machineSpec": machine, "replicaCount": str(offer.nodes - 1), "diskSpec": disk,
                      "containerSpec": container})
    scheduling: dict[str, Any] = {"timeout": f"{plan.max_runtime_s or DEFAULT_TIMEOUT_S}s",
                                  "restartJobOnWorkerRestart": True}
    if offer.spot:
        scheduling["strategy"] = "SPOT"
    job_spec: dict[str, Any] = {"workerPoolSpecs": pools, "scheduling": scheduling,
                                "baseOutputDirectory": {"outputUriPrefix": output}}
    if ctx.get("service_account"):
        job_spec["serviceAccount"] = ctx["service_account"]
    payload = {
        "displayName": job,
        "jobSpec": job_spec,
        "labels": {"ftlaunch-job": label(job), "ftlaunch-spec": label(plan.spec.name),
                   "ftlaunch-technique": label(plan.spec.technique.value), "managed-by": "ftlaunch"},
    }
    return base.JobRequest(
        backend="vertex", job_name=job, payload=payload, uploads=uploads, secrets=sorted(secret_names),
        extra={"project": ctx["project"], "region": offer.region, "price_per_hour": offer.price_per_hour,
               "model_dir": f"{output}/model"})


# Machine families that take only Hyperdisk boot disks (no Persistent Disk): A3 Ultra (H200), A4 (B200), A4X
HYPERDISK_FAMILIES = ("a3-ultragpu", "a4-", "a4x-")


def boot_disk_type(machine_type: str) -> str:
    """The boot disk type Vertex accepts for this machine type: hyperdisk-balanced where the family takes no
    Persistent Disk, pd-ssd otherwise."""
    return "hyperdisk-balanced" if machine_type.startswith(HYPERDISK_FAMILIES) else "pd-ssd"


def image(plan: Any) -> str:
    """The trainer image: plan.image (`--image`), else the one settings resolved at plan time: the per-backend
    image setting, or `<registry>/ftlaunch-trainer:<tag>` (the content tag, the same on every cloud)."""
    return plan.image or plan.context["image"]


def label(text: str) -> str:
    """A label value: lowercase letters, digits, - and _, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]
