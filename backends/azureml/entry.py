"""Runs inside the Azure ML command job (its command): Azure ML's side of the trainer contract in one place,
then the trainer.

Azure ML substitutes `${{inputs.<name>}}` and `${{outputs.<name>}}` in the command with where it
downloaded or mounted each input and output; the command passes them here. This module:

- reads the spec (an input folder) and replaces the `${{inputs.<channel>}}` tokens it names files with
  by those paths;
- points the trainer at the `outputs` and `checkpoints` output folders (FTLAUNCH_OUTPUT_DIR,
  FTLAUNCH_CHECKPOINT_DIR), which Azure ML keeps on the datastore;
- reads secrets named in FTLAUNCH_SECRETS ({"HF_TOKEN": "https://<vault>.vault.azure.net/secrets/<name>"})
  from Key Vault with the compute's managed identity, into the trainer's environment only;
- starts the trainer, under torchrun across nodes and GPUs when there are several (Azure ML's PyTorch
  distribution sets MASTER_ADDR, MASTER_PORT, NODE_RANK and, at one process per node, WORLD_SIZE = nodes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

MASTER_PORT = "29500"
KEY_VAULT_API = "7.4"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlaunch.backends.azureml.entry")
    parser.add_argument("--spec", required=True, help="the job's spec file (in the `spec` input)")
    parser.add_argument("--outputs", required=True, help="the `outputs` output folder")
    parser.add_argument("--checkpoints", required=True, help="the `checkpoints` output folder")
    parser.add_argument("--input", action="append", default=[], metavar="CHANNEL=PATH",
                        help="where Azure ML put an input folder")
    args = parser.parse_args(argv)
    inputs = dict(item.split("=", 1) for item in args.input)
    spec = job_spec(Path(args.spec).read_text(), inputs)
    env = {**os.environ, "FTLAUNCH_OUTPUT_DIR": args.outputs, "FTLAUNCH_CHECKPOINT_DIR": args.checkpoints,
           **secrets(os.environ)}
    return subprocess.call(trainer_command(spec, env), env=env)


def job_spec(text: str, inputs: dict[str, str]) -> str:
    """The spec as JSON text, each `${{inputs.<channel>}}` replaced by where that input is in this job."""
    for channel, path in inputs.items():
        text = text.replace("${{inputs.%s}}" % channel, path.rstrip("/"))
    return json.dumps(json.loads(text))


def trainer_command(spec: str, env: dict[str, str]) -> list[str]:
    """The trainer alone on one device; torchrun when the job has several nodes or GPUs."""
    nodes, rank, master, port = cluster(env)
    per_node = int(env.get("FTLAUNCH_NPROC_PER_NODE") or 0) if gpus() else 1
    per_node = per_node or 1
    trainer = ["-m", "ftlaunch.containers.trainer", "--spec", spec]
    if nodes * per_node == 1:
        return [sys.executable, *trainer]
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--node_rank={rank}",
            f"--nproc_per_node={per_node}", f"--master_addr={master}", f"--master_port={port}", *trainer]


def cluster(env) -> tuple[int, int, str, str]:
    """(nodes, this node's rank, rank 0's address, port) from Azure ML's PyTorch distribution variables."""
    nodes = int(env.get("AZUREML_NODE_COUNT") or env.get("WORLD_SIZE") or 1)
    rank = int(env.get("NODE_RANK") or env.get("AZUREML_CR_NODE_RANK") or 0)
    master = env.get("MASTER_ADDR") or env.get("AZ_BATCH_MASTER_NODE", "").partition(":")[0] or "localhost"
    port = env.get("MASTER_PORT") or MASTER_PORT
    return nodes, rank, master, port


def secrets(env) -> dict[str, str]:
    """{name: value} for FTLAUNCH_SECRETS, read from Key Vault's REST API with the compute's identity."""
    wanted = json.loads(env.get("FTLAUNCH_SECRETS") or "{}")
    if not wanted:
        return {}
    import requests
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential(managed_identity_client_id=env.get("DEFAULT_IDENTITY_CLIENT_ID"))
    token = credential.get_token("https://vault.azure.net/.default").token
    out = {}
    for name, url in wanted.items():
        response = requests.get(url, params={"api-version": KEY_VAULT_API},
                                headers={"Authorization": f"Bearer {token}"}, timeout=30)
        response.raise_for_status()
        out[name] = response.json()["value"]
    return out


def gpus() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


if __name__ == "__main__":
    sys.exit(main())
