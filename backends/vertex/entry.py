"""Runs inside the Vertex AI custom job (the container's command): Vertex's side of the trainer contract in
one place, then the trainer.

Vertex gives a custom container AIP_MODEL_DIR and AIP_CHECKPOINT_DIR (gs:// URIs under the job's
base_output_directory, which the trainer's contract reads through the /gcs Cloud Storage FUSE mount),
and CLUSTER_SPEC (the worker pools and this replica's place in them). This module:

- reads secrets named in FTLAUNCH_SECRETS ({"HF_TOKEN": "projects/P/secrets/N/versions/latest"})
  from Google Secret Manager into the trainer's environment only;
- starts the trainer, under torchrun across replicas and GPUs when there are several (workerpool0's
  replica is rank 0 and the rendezvous address).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys

MASTER_PORT = "29500"
SECRET_MANAGER = "https://secretmanager.googleapis.com"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlaunch.backends.vertex.entry")
    parser.add_argument("--spec", required=True, help="the job's spec file (under /gcs)")
    args = parser.parse_args(argv)
    mount = os.environ.get("FTLAUNCH_GCS_MOUNT", "/gcs")
    spec = relocate(args.spec, mount)
    env = {**os.environ, **secrets(os.environ)}
    if mount != "/gcs":  # a relocated mount (local runs, tests): the spec's /gcs paths move with it
        spec_text = open(spec).read().replace('"/gcs/', f'"{mount.rstrip("/")}/')
        spec = spec_text
    return subprocess.call(trainer_command(spec, env), env=env)


def trainer_command(spec: str, env: dict[str, str]) -> list[str]:
    """The trainer alone on one device; torchrun when the job has several replicas or GPUs."""
    nodes, rank, master = cluster(env.get("CLUSTER_SPEC"))
    per_node = gpus() or 1
    trainer = ["-m", "ftlaunch.containers.trainer", "--spec", spec]
    if nodes * per_node == 1:
        return [sys.executable, *trainer]
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--node_rank={rank}",
            f"--nproc_per_node={per_node}", f"--master_addr={master}", f"--master_port={MASTER_PORT}", *trainer]


def cluster(spec_text: str | None) -> tuple[int, int, str]:
    """(replicas, this replica's rank, the chief's host) from CLUSTER_SPEC; one replica without it."""
    if not spec_text:
        return 1, 0, "localhost"
    spec = json.loads(spec_text)
    pools = spec["cluster"]
    chief = pools["workerpool0"][0].split(":")[0]
    workers = pools.get("workerpool1", [])
    task = spec.get("task", {})
    rank = 0 if task.get("type", "workerpool0") == "workerpool0" else 1 + int(task.get("index", 0))
    return 1 + len(workers), rank, chief


def secrets(env) -> dict[str, str]:
    """{name: value} for FTLAUNCH_SECRETS, read through Secret Manager's REST API with the job's identity."""
    wanted = json.loads(env.get("FTLAUNCH_SECRETS") or "{}")
    if not wanted:
        return {}
    import google.auth
    import google.auth.transport.requests

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    session = google.auth.transport.requests.AuthorizedSession(credentials)
    endpoint = env.get("FTLAUNCH_SECRET_MANAGER_ENDPOINT", SECRET_MANAGER).rstrip("/")
    out = {}
    for name, version in wanted.items():
        response = session.get(f"{endpoint}/v1/{version}:access", timeout=30)
        response.raise_for_status()
        out[name] = base64.b64decode(response.json()["payload"]["data"]).decode()
    return out


def relocate(path: str, mount: str) -> str:
    return mount.rstrip("/") + path[len("/gcs"):] if mount != "/gcs" and path.startswith("/gcs/") else path


def gpus() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


if __name__ == "__main__":
    sys.exit(main())
