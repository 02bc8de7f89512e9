"""Turns a plan into a SkyPilot task (the task YAML's own form: what `sky jobs launch task.yaml` reads and
`sky.Task.from_yaml_config` validates against SkyPilot's schema, as the tests do). Pure.

How the spec and data reach the job: the resolved spec travels in the FTLAUNCH_SPEC environment variable
(SkyPilot has no small limit on env values); local dataset, eval and model files are `file_mounts` from
their local paths, which SkyPilot uploads itself (to its jobs bucket for managed jobs); storage URIs are
copied in by SkyPilot too. The job runs inside the trainer image (`image_id: docker:<image>`), so there
is no setup.

Outputs and checkpoints: the configured bucket, mounted with MOUNT_CACHED at /ftlaunch/outputs and
/ftlaunch/checkpoints (writes go to local disk and are uploaded in the background; the job waits for
them at the end). A spot preemption restarts the job, which resumes from the mounted checkpoints.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ftlaunch.backends import base

INPUT_DIR = "/ftlaunch/input"
OUTPUT_DIR = "/ftlaunch/outputs"
CHECKPOINT_DIR = "/ftlaunch/checkpoints"
MASTER_PORT = 29500


def render(plan: Any) -> base.JobRequest:
    ctx = plan.context
    offer = plan.offer
    job = plan.job_name
    root = f"{ctx['bucket']}/{ctx['prefix']}/jobs/{job}"
    refs: dict[str, str] = {}
    file_mounts: dict[str, Any] = {}
    for channel, info in ctx["inputs"].items():
        folder = f"{INPUT_DIR}/{channel}"
        if info["kind"] == "file":
            refs[channel] = f"{folder}/{info['name']}"
            file_mounts[refs[channel]] = info["ref"]
        elif info["kind"] == "dir":
            refs[channel] = folder
            file_mounts[folder] = info["ref"]
        elif info["kind"] == "uri" and info["ref"].split("://")[0] in ("s3", "gs", "r2", "cos", "oci"):
            name = info["ref"].rstrip("/").rsplit("/", 1)[-1]
            refs[channel] = f"{folder}/{name}"
            file_mounts[refs[channel]] = info["ref"]  # SkyPilot copies a bucket file or folder in
    # a user's output.path holds many jobs: each gets its own folder under it
    output = f"{plan.spec.output.path.rstrip('/')}/{job}" if (plan.spec.output.path or "").split("://")[0] in (
        "s3", "gs", "r2") else f"{root}/outputs"
    file_mounts[OUTPUT_DIR] = {"source": output, "mode": "MOUNT_CACHED"}
    file_mounts[CHECKPOINT_DIR] = {"source": f"{root}/checkpoints", "mode": "MOUNT_CACHED"}

    spec_json = base.job_spec(plan.spec.to_json(), refs)
    envs = {
        "FTLAUNCH_JOB_NAME": job,
        "FTLAUNCH_SPEC": json.dumps(spec_json, separators=(",", ":"), sort_keys=True),
        "FTLAUNCH_OUTPUT_DIR": OUTPUT_DIR,
        "FTLAUNCH_CHECKPOINT_DIR": CHECKPOINT_DIR,
        "FTLAUNCH_DISTRIBUTED": plan.spec.resources.distributed,
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    cloud = offer.details.get("cloud") or offer.instance.split(":")[0]
    instance_type = offer.details.get("instance_type") or offer.instance.split(":")[-1]
    accelerator = offer.details.get("accelerator") or offer.gpu
    resources: dict[str, Any] = {
        "infra": f"{cloud}/{offer.region}" if offer.region else cloud,
        "instance_type": instance_type,
        "accelerators": f"{accelerator}:{offer.gpus}",
        "use_spot": bool(offer.spot),
        "disk_size": ctx["disk_gb"],
        "image_id": f"docker:{image(plan)}",
        # managed jobs: a preempted spot node is replaced in the same region; a failed run is retried only
        # if asked (FTLAUNCH_SKYPILOT_MAX_RESTARTS), as a user error would fail again
        "job_recovery": {"strategy": "FAILOVER", "max_restarts_on_errors": ctx["max_restarts_on_errors"]},
        "labels": {"ftlaunch-job": label(job), "ftlaunch-spec": label(plan.spec.name),
                   "ftlaunch-technique": label(plan.spec.technique.value)},
    }
    payload: dict[str, Any] = {
        "name": job,
        "resources": resources,
        "num_nodes": offer.nodes,
        "envs": envs,
        "file_mounts": file_mounts,
        "run": run_script(offer.nodes, offer.gpus, plan.max_runtime_s),
    }
    if plan.spec.secrets:
        payload["secrets"] = {name: None for name in plan.spec.secrets}  # values: from the launcher, at submit
    return base.JobRequest(
        backend="skypilot", job_name=job, payload=payload, secrets=sorted(plan.spec.secrets),
        extra={"cloud": cloud, "region": offer.region, "price_per_hour": offer.price_per_hour,
               "max_runtime_s": plan.max_runtime_s, "outputs": output})


def run_script(nodes: int, gpus: int, max_runtime_s: int | None = None) -> str:
    """The job's command on every node: the trainer, or torchrun across SKYPILOT_NODE_IPS (rank 0 first).
    SkyPilot has no job time limit, so resources.max_runtime (or max_cost) is coreutils `timeout`: SIGTERM,
    on which the trainer saves a checkpoint and exits, then SIGKILL two minutes later."""
    limit = f"timeout --kill-after=120 {int(max_runtime_s)} " if max_runtime_s else ""
    if nodes * max(1, gpus) == 1:
        return f"exec {limit}python -m ftlaunch.containers.trainer\n"
    return (
        "set -e\n"
        'MASTER_ADDR=$(echo "$SKYPILOT_NODE_IPS" | head -n1)\n'
        f'exec {limit}python -m torch.distributed.run --nnodes="$SKYPILOT_NUM_NODES" --node_rank="$SKYPILOT_NODE_RANK" \\\n'
        '  --nproc_per_node="${SKYPILOT_NUM_GPUS_PER_NODE:-1}" --master_addr="$MASTER_ADDR" '
        f"--master_port={MASTER_PORT} \\\n"
        "  -m ftlaunch.containers.trainer\n")


def image(plan: Any) -> str:
    """The trainer image: plan.image (`--image`), else the one settings resolved at plan time: the per-backend
    image setting, or `<registry>/ftlaunch-trainer:<tag>` (the content tag, the same on every cloud)."""
    return plan.image or plan.context["image"]


def label(text: str) -> str:
    """A label value every cloud accepts: lowercase letters, digits, - and _, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]
