"""Turns a plan into the local job request: the trainer's command line, environment and folders. Pure.

The plan's context says which runtime planning chose: a process (here) or a container (docker.py).

The trainer process does not inherit the launcher's whole environment. It gets the job's own variables
(the payload's `env`), the secrets the spec names, and from the launcher's environment only:
- these names: PATH, HOME, USER, LOGNAME, LANG, LANGUAGE, TZ, TMPDIR, TEMP, TMP, PYTHONPATH, PYTHONHOME,
  VIRTUAL_ENV, XDG_CACHE_HOME, OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS, FTLAUNCH_HOME,
  FTLAUNCH_CACHE, MLFLOW_TRACKING_URI, WANDB_MODE, WANDB_PROJECT, WANDB_ENTITY;
- names starting LC_, HF_, HUGGINGFACE_, TRANSFORMERS_, TORCH_, CUDA_, NCCL_, NVIDIA_, HIP_, ROCR_
  (locale, hub offline and cache settings, GPU selection and communication);
- except any name that looks like a credential (containing TOKEN, SECRET, PASSWORD, KEY or CREDENTIAL,
  such as HF_TOKEN): those reach the trainer only when the spec lists them under `secrets`.
The Docker runtime (docker.py) is stricter still: a container gets the job's variables and the named
secrets, nothing else of the host's (its image sets PATH, HOME and the rest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ftlaunch.backends.base import JobRequest

TRAINER_MODULE = "ftlaunch.containers.trainer"

PASSED_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "PYTHONPATH",
    "PYTHONHOME", "VIRTUAL_ENV", "XDG_CACHE_HOME", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    "FTLAUNCH_HOME", "FTLAUNCH_CACHE", "MLFLOW_TRACKING_URI", "WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY"})
PASSED_PREFIXES = ("LC_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH_", "CUDA_", "NCCL_", "NVIDIA_", "HIP_",
                   "ROCR_")
CREDENTIAL_WORDS = ("TOKEN", "SECRET", "PASSWORD", "KEY", "CREDENTIAL")


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


def trainer_env(launcher_env: Mapping[str, str], job_env: Mapping[str, str], secrets: list[str]) -> dict[str, str]:
    """The trainer process's whole environment (see the module docstring): the allowed part of the
    launcher's, the job's own variables, and the named secrets' values."""
    env = {name: value for name, value in launcher_env.items() if passed(name)}
    env.update(job_env)
    env.update({name: launcher_env[name] for name in secrets if name in launcher_env})
    return env


def passed(name: str) -> bool:
    """Whether the trainer gets this variable of the launcher's environment without the spec naming it."""
    if any(word in name.upper() for word in CREDENTIAL_WORDS):
        return False
    return name in PASSED_NAMES or name.startswith(PASSED_PREFIXES)
