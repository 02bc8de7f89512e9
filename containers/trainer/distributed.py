"""Multi-process training: each backend's cluster variables -> torchrun's rendezvous arguments (pure), and
the spec's `resources.distributed` -> the Trainer's FSDP or DeepSpeed ZeRO settings.

`python -m ftlaunch.containers.trainer.launch --spec SPEC` uses these to start torchrun when the job has
more than one process, and runs the trainer directly otherwise.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

DEFAULT_PORT = 29500


@dataclasses.dataclass(frozen=True)
class Rendezvous:
    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str
    master_port: int
    provider: str

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    def torchrun_args(self) -> list[str]:
        """torchrun's own arguments (before the module to run)."""
        return [f"--nnodes={self.nnodes}", f"--node_rank={self.node_rank}",
                f"--nproc_per_node={self.nproc_per_node}", f"--master_addr={self.master_addr}",
                f"--master_port={self.master_port}"]


def provider_of(env: Mapping[str, str]) -> str:
    if "SM_HOSTS" in env or "SM_CURRENT_HOST" in env:
        return "sagemaker"
    if "CLUSTER_SPEC" in env or "AIP_MODEL_DIR" in env:
        return "vertex"
    if "AZUREML_RUN_ID" in env or "AZ_BATCH_MASTER_NODE" in env:
        return "azureml"
    if "SKYPILOT_NODE_IPS" in env or "SKYPILOT_NODE_RANK" in env:
        return "skypilot"
    return "local"


def rendezvous(env: Mapping[str, str], gpus_per_node: int | None = None) -> Rendezvous:
    """Where this node sits in the job and how to reach rank 0, from the backend's own variables.

    `gpus_per_node`: the processes per node when the environment does not say (None: 1).
    FTLAUNCH_NPROC_PER_NODE overrides the processes per node everywhere."""
    provider = provider_of(env)
    nproc = gpus_per_node or 1
    port = int(env.get("MASTER_PORT", DEFAULT_PORT))
    if provider == "sagemaker":
        hosts = sorted(json.loads(env.get("SM_HOSTS", '["algo-1"]')))
        current = env.get("SM_CURRENT_HOST", hosts[0])
        nnodes, rank, addr = len(hosts), hosts.index(current), hosts[0]
        nproc = int(env.get("SM_NUM_GPUS") or 0) or nproc
    elif provider == "vertex":
        cluster = json.loads(env.get("CLUSTER_SPEC", "{}"))
        pools = cluster.get("cluster", {})
        ordered = [h for pool in sorted(pools) for h in pools[pool]]  # workerpool0 (the chief) first
        task = cluster.get("task", {})
        before = sum(len(pools[p]) for p in sorted(pools) if p < task.get("type", "workerpool0"))
        nnodes = max(1, len(ordered))
        rank = before + int(task.get("index", 0))
        chief = ordered[0] if ordered else "127.0.0.1"
        addr, _, chief_port = chief.partition(":")
        port = int(env.get("MASTER_PORT") or chief_port or DEFAULT_PORT)
    elif provider == "azureml":
        nnodes = int(env.get("AZUREML_NODE_COUNT") or env.get("NODE_COUNT") or 1)
        rank = int(env.get("NODE_RANK") or env.get("AZUREML_CR_NODE_RANK") or 0)
        master = env.get("AZ_BATCH_MASTER_NODE", "")
        addr = env.get("MASTER_ADDR") or master.partition(":")[0] or "127.0.0.1"
        port = int(env.get("MASTER_PORT") or master.partition(":")[2] or DEFAULT_PORT)
    elif provider == "skypilot":
        ips = [ip for ip in env.get("SKYPILOT_NODE_IPS", "").split() if ip] or ["127.0.0.1"]
        nnodes, rank, addr = len(ips), int(env.get("SKYPILOT_NODE_RANK", 0)), ips[0]
        nproc = int(env.get("SKYPILOT_NUM_GPUS_PER_NODE") or 0) or nproc
    else:
        nnodes, rank = 1, 0
        addr = env.get("MASTER_ADDR", "127.0.0.1")
    if env.get("FTLAUNCH_NPROC_PER_NODE"):
        nproc = int(env["FTLAUNCH_NPROC_PER_NODE"])
    return Rendezvous(nnodes=nnodes, node_rank=rank, nproc_per_node=nproc, master_addr=addr,
                      master_port=port, provider=provider)


def torchrun_command(rdzv: Rendezvous, spec_path: str, python: str = "python") -> list[str]:
    """The full command line of a multi-process job on this node."""
    return [python, "-m", "torch.distributed.run", *rdzv.torchrun_args(),
            "-m", "ftlaunch.containers.trainer", "--spec", spec_path]


def strategy_args(strategy: str, device: str, world_size: int, block_class: str | None) -> dict[str, Any]:
    """TrainingArguments for resources.distributed: ddp (the default when several processes run), FSDP
    full sharding, or DeepSpeed ZeRO-3. Pure."""
    args: dict[str, Any] = {"ddp_backend": "nccl" if device == "cuda" else "gloo"} if world_size > 1 else {}
    if strategy == "fsdp":
        config: dict[str, Any] = {"fsdp_version": 2, "reshard_after_forward": True,
                                  "auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}
        if block_class:
            config["transformer_layer_cls_to_wrap"] = [block_class]
        args.update(fsdp="full_shard auto_wrap", fsdp_config=config)
    elif strategy == "deepspeed":
        args["deepspeed"] = {
            "zero_optimization": {"stage": 3, "overlap_comm": True, "contiguous_gradients": True,
                                  "stage3_gather_16bit_weights_on_model_save": True},
            "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
            "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto", "train_batch_size": "auto",
        }
    return args
