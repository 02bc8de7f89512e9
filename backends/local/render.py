"""Turns a plan into the local job request: the trainer's command line, environment and folders. Pure.

The plan's context says which runtime planning chose: a process (here) or a container (docker.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftlaunch.backends.base import JobRequest

TRAINER_MODULE = "ftlaunch.containers.trainer"


def render(plan: Any) -> JobRequest:
    if plan.context.get("runtime") == "docker":
        from ftlaunch.backends.local import docker

        return docker.render(plan)
    job_dir = Path(plan.context["job_dir"])
    payload = {
        "runtime": "process",
        "job_dir": str(job_dir),
        "spec_file": str(job_dir / "spec.json"),
        "spec": plan.spec.to_json(),
        "argv": [plan.context["python"], "-m", TRAINER_MODULE, "--spec", str(job_dir / "spec.json")],
        "env": {
            "FTLAUNCH_OUTPUT_DIR": plan.output_uri,
            "FTLAUNCH_CHECKPOINT_DIR": str(job_dir / "checkpoints"),
            "FTLAUNCH_JOB_NAME": plan.job_name,
            "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false",
        },
        "log_file": str(job_dir / "job.log"),
        "max_runtime_s": plan.max_runtime_s,
    }
    return JobRequest(backend="local", job_name=plan.job_name, payload=payload, secrets=list(plan.spec.secrets))
