"""Each backend's cluster variables map to torchrun's rendezvous arguments; FSDP/DeepSpeed settings from the
spec; and a real 2-process torchrun run (gloo) on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ftlaunch.core import manifest, spec
from ftlaunch.containers.trainer import distributed


def test_sagemaker():
    env = {"SM_HOSTS": '["algo-2", "algo-1", "algo-3"]', "SM_CURRENT_HOST": "algo-3", "SM_NUM_GPUS": "8",
           "SM_MODEL_DIR": "/opt/ml/model"}
    r = distributed.rendezvous(env)
    assert (r.provider, r.nnodes, r.node_rank, r.nproc_per_node, r.master_addr, r.master_port) == \
        ("sagemaker", 3, 2, 8, "algo-1", 29500)
    assert r.torchrun_args() == ["--nnodes=3", "--node_rank=2", "--nproc_per_node=8", "--master_addr=algo-1",
                                 "--master_port=29500"]


def test_vertex_cluster_spec():
    cluster = {"cluster": {"workerpool0": ["cmle-training-workerpool0-ab-0:2222"],
                           "workerpool1": ["cmle-training-workerpool1-ab-0:2222", "cmle-training-workerpool1-ab-1:2222"]},
               "task": {"type": "workerpool1", "index": 1}, "job": "{}"}
    r = distributed.rendezvous({"CLUSTER_SPEC": json.dumps(cluster), "AIP_MODEL_DIR": "gs://b/m"}, gpus_per_node=4)
    assert (r.provider, r.nnodes, r.node_rank, r.nproc_per_node) == ("vertex", 3, 2, 4)
    assert (r.master_addr, r.master_port) == ("cmle-training-workerpool0-ab-0", 2222)
    chief = distributed.rendezvous({"CLUSTER_SPEC": json.dumps({**cluster, "task": {"type": "workerpool0", "index": 0}})})
    assert chief.node_rank == 0


def test_azureml_pytorch_distribution():
    env = {"AZUREML_RUN_ID": "r1", "AZ_BATCH_MASTER_NODE": "10.0.0.4:6105", "AZUREML_NODE_COUNT": "2",
           "NODE_RANK": "1"}
    r = distributed.rendezvous(env, gpus_per_node=2)
    assert (r.provider, r.nnodes, r.node_rank, r.nproc_per_node, r.master_addr, r.master_port) == \
        ("azureml", 2, 1, 2, "10.0.0.4", 6105)
    r = distributed.rendezvous({"AZUREML_RUN_ID": "r1", "MASTER_ADDR": "10.0.0.9", "MASTER_PORT": "29400"})
    assert (r.master_addr, r.master_port, r.nnodes) == ("10.0.0.9", 29400, 1)


def test_skypilot():
    env = {"SKYPILOT_NODE_IPS": "10.1.0.1\n10.1.0.2\n", "SKYPILOT_NODE_RANK": "1", "SKYPILOT_NUM_GPUS_PER_NODE": "4",
           "SKYPILOT_TASK_ID": "t"}
    r = distributed.rendezvous(env)
    assert (r.provider, r.nnodes, r.node_rank, r.nproc_per_node, r.master_addr) == ("skypilot", 2, 1, 4, "10.1.0.1")
    assert r.world_size == 8


def test_local_and_override():
    r = distributed.rendezvous({}, gpus_per_node=2)
    assert (r.provider, r.nnodes, r.node_rank, r.nproc_per_node, r.master_addr) == ("local", 1, 0, 2, "127.0.0.1")
    assert distributed.rendezvous({"FTLAUNCH_NPROC_PER_NODE": "3"}).nproc_per_node == 3
    cmd = distributed.torchrun_command(r, "/job/spec.json", python="py")
    assert cmd[:3] == ["py", "-m", "torch.distributed.run"] and cmd[-4:] == \
        ["-m", "ftlaunch.containers.trainer", "--spec", "/job/spec.json"]


def test_strategy_args():
    assert distributed.strategy_args("auto", "cpu", 1, None) == {}
    assert distributed.strategy_args("ddp", "cpu", 2, None) == {"ddp_backend": "gloo"}
    fsdp = distributed.strategy_args("fsdp", "cuda", 8, "LlamaDecoderLayer")
    assert fsdp["ddp_backend"] == "nccl" and fsdp["fsdp"] == "full_shard auto_wrap"
    assert fsdp["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    ds = distributed.strategy_args("deepspeed", "cuda", 8, None)["deepspeed"]
    assert ds["zero_optimization"]["stage"] == 3


@pytest.mark.slow
def test_two_process_torchrun_on_cpu(tmp_path, tiny_lm, alpaca_file):
    s = spec.loads(f"""\
name: ddp
model: {tiny_lm}
technique: lora
task: sft
dataset: {{path: {alpaca_file}, eval_split: 0.25}}
hyperparameters: {{max_steps: 6, batch_size: 4, learning_rate: 0.02, max_length: 128, eval_steps: 3, save_steps: 3}}
""")
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(s.to_json()))
    env = dict(os.environ, FTLAUNCH_OUTPUT_DIR=str(tmp_path / "out"), FTLAUNCH_CHECKPOINT_DIR=str(tmp_path / "ck"),
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    rdzv = distributed.rendezvous({"FTLAUNCH_NPROC_PER_NODE": "2", "MASTER_PORT": "29531"})
    proc = subprocess.run(distributed.torchrun_command(rdzv, str(spec_path), python=sys.executable), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 6 and summary["eval_loss"] is not None
    manifest.verify(tmp_path / "out")
    assert (tmp_path / "ck" / "checkpoint-6" / "COMPLETE").exists()


@pytest.mark.parametrize("world, distributed, device, stored", [
    (2, "fsdp", "cuda", "bfloat16"),  # FSDP-QLoRA: the 4-bit weights packed in the dtype FSDP shards
    (1, "fsdp", "cuda", "uint8"),  # one process: nothing is sharded
    (2, "ddp", "cuda", "uint8"),
    (2, "fsdp", "cpu", "uint8"),  # FSDP needs GPUs: the trainer runs DDP there
])
def test_qlora_quant_storage_follows_fsdp_sharding(tmp_path, world, distributed, device, stored):
    import torch

    from ftlaunch.containers.trainer import checkpoints, common, contract

    s = spec.loads(f"""\
name: q
model: org/model
technique: qlora
dataset: {{path: d.jsonl}}
resources: {{distributed: {distributed}}}
""")
    job = common.Job(spec=s, paths=contract.Paths(output_dir=str(tmp_path), checkpoint_dir=str(tmp_path),
                                                  data_dir=None, provider="local"),
                     out=tmp_path, device=device, precision="bf16", world_size=world, rank=0,
                     guard=checkpoints.Guard())
    config = common.quantization(job)
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert config.bnb_4bit_quant_storage == getattr(torch, stored)
