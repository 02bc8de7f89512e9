"""Runs inside the SageMaker training container (the job's ContainerEntrypoint): SageMaker's side of the
trainer contract in one place, then the trainer.

SageMaker gives a bring-your-own container /opt/ml and nothing else: input channels under
/opt/ml/input/data/<channel>, hyperparameters and hosts under /opt/ml/input/config, /opt/ml/model
(uploaded as model.tar.gz when the job ends), /opt/ml/checkpoints (synced with CheckpointConfig.S3Uri,
so a restarted spot job finds its checkpoints), and /opt/ml/output/failure (its text becomes the
job's FailureReason). This module:

- sets the SM_* variables the sagemaker-training-toolkit would (SM_MODEL_DIR, SM_CHANNEL_<NAME>,
  SM_HOSTS, SM_CURRENT_HOST, SM_NUM_GPUS, SM_OUTPUT_DATA_DIR), which the trainer's contract reads;
- applies hyperparameters.json over the spec (so a tuning job or a console clone can change them);
- reads secrets named in FTLAUNCH_SECRETS from AWS Secrets Manager into the trainer's environment only;
- starts the trainer, under torchrun across hosts and GPUs when there are several;
- writes why a failed trainer failed (its last error, in one line) to /opt/ml/output/failure.

SAGEMAKER_BASE_DIR relocates /opt/ml, as in sagemaker-training-toolkit (local runs and tests).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from ftlaunch.backends import failure

DEFAULT_BASE = "/opt/ml"
MASTER_PORT = "29500"
FAILURE_LINES = 200  # the output kept to find the last error in
LOG_LOCATION = "CloudWatch log group /aws/sagemaker/TrainingJobs; `ftlaunch logs JOB` prints it"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlaunch.backends.sagemaker.entry")
    parser.add_argument("--spec", required=True, help="the job's spec file, as rendered (under /opt/ml)")
    args = parser.parse_args(argv)
    base = os.environ.get("SAGEMAKER_BASE_DIR", DEFAULT_BASE)
    try:
        spec = job_spec(args.spec, base)
        env = {**os.environ, **toolkit_env(base), **secrets(os.environ)}
    except Exception as exc:  # noqa: BLE001 - whatever stops the job must reach FailureReason
        return fail(base, f"ftlaunch entry: {type(exc).__name__}: {exc}", [])
    command = trainer_command(spec, env)
    return run(command, env, base)


def job_spec(path: str, base: str) -> str:
    """The spec as JSON text: paths under /opt/ml relocated to `base`, hyperparameters.json applied."""
    spec = json.loads(Path(relocate(path, base)).read_text())
    for key in ("model",):
        spec[key] = relocate(spec[key], base)
    for key in ("path", "eval_path"):
        if spec["dataset"].get(key):
            spec["dataset"][key] = relocate(spec["dataset"][key], base)
    hp_file = Path(base, "input/config/hyperparameters.json")
    if hp_file.exists():
        for key, value in json.loads(hp_file.read_text()).items():
            if key in spec.get("hyperparameters", {}) or key in _HYPERPARAMETER_KEYS:
                spec.setdefault("hyperparameters", {})[key] = _decode(value)
    return json.dumps(spec)


def toolkit_env(base: str) -> dict[str, str]:
    """The SM_* variables sagemaker-training-toolkit sets, from /opt/ml (a BYO container gets none)."""
    hosts, current = _hosts(base)
    env = {"SM_MODEL_DIR": f"{base}/model", "SM_OUTPUT_DATA_DIR": f"{base}/output/data",
           "SM_INPUT_DIR": f"{base}/input", "SM_INPUT_CONFIG_DIR": f"{base}/input/config",
           "SM_HOSTS": json.dumps(hosts), "SM_CURRENT_HOST": current,
           "SM_NUM_GPUS": str(_gpus()), "SAGEMAKER_BASE_DIR": base}
    data = Path(base, "input/data")
    if data.is_dir():
        for channel in sorted(p.name for p in data.iterdir() if p.is_dir()):
            env[f"SM_CHANNEL_{channel.upper()}"] = str(data / channel)
    return env


def secrets(env: dict[str, str] | os._Environ) -> dict[str, str]:
    """{name: value} for FTLAUNCH_SECRETS ({"HF_TOKEN": "<secret id or ARN>"}), from Secrets Manager."""
    wanted = json.loads(env.get("FTLAUNCH_SECRETS") or "{}")
    if not wanted:
        return {}
    import boto3

    client = boto3.session.Session().client("secretsmanager", region_name=env.get("AWS_REGION")
                                            or env.get("AWS_DEFAULT_REGION"))
    return {name: client.get_secret_value(SecretId=secret_id)["SecretString"] for name, secret_id in wanted.items()}


def trainer_command(spec_json: str, env: dict[str, str]) -> list[str]:
    """The trainer alone on one device; torchrun when the job has several hosts or GPUs."""
    hosts = json.loads(env["SM_HOSTS"])
    per_node = int(env.get("SM_NUM_GPUS") or 0) or 1  # the GPUs this host has; one process on a CPU
    trainer = ["-m", "ftlaunch.containers.trainer", "--spec", spec_json]
    if len(hosts) * per_node == 1:
        return [sys.executable, *trainer]
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={len(hosts)}",
            f"--node_rank={hosts.index(env['SM_CURRENT_HOST'])}", f"--nproc_per_node={per_node}",
            f"--master_addr={hosts[0]}", f"--master_port={MASTER_PORT}", *trainer]


def run(command: list[str], env: dict[str, str], base: str) -> int:
    """Runs the trainer, echoing its output (CloudWatch reads this process's stdout), forwarding SIGTERM
    (StopTrainingJob, spot interruption), and recording why it failed."""
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             errors="replace")
    signal.signal(signal.SIGTERM, lambda signum, _frame: child.send_signal(signum))
    tail: collections.deque[str] = collections.deque(maxlen=FAILURE_LINES)
    for line in child.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if line.strip():
            tail.append(line.rstrip("\n"))
    code = child.wait()
    if code != 0:
        return fail(base, f"trainer exited with code {code}", list(tail))
    return 0


def fail(base: str, headline: str, tail: list[str]) -> int:
    """Writes /opt/ml/output/failure, which SageMaker shows as FailureReason (1024 characters at most): the
    headline, the trainer's last error in one line, and where the whole output is."""
    text = failure.reason(tail, headline, log=LOG_LOCATION)
    print(text, file=sys.stderr, flush=True)
    out = Path(base, "output")
    out.mkdir(parents=True, exist_ok=True)
    (out / "failure").write_text(text[:1024])
    return 1


def relocate(path: str, base: str) -> str:
    return base + path[len(DEFAULT_BASE):] if base != DEFAULT_BASE and path.startswith(DEFAULT_BASE + "/") else path


def _hosts(base: str) -> tuple[list[str], str]:
    config = Path(base, "input/config/resourceconfig.json")
    if config.exists():
        data = json.loads(config.read_text())
        return data["hosts"], data["current_host"]
    return ["algo-1"], "algo-1"


def _gpus() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def _decode(value: str):
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


_HYPERPARAMETER_KEYS = ("epochs", "max_steps", "learning_rate", "batch_size", "grad_accum", "max_length", "seed")


if __name__ == "__main__":
    sys.exit(main())
