"""The local backend's Docker runtime: the job image run as one container under the trainer's contract.

Three parts, kept apart as the backend contract asks:
- `plan_context()` (plan time, reads the environment): which runtime, which engine answered, the image's
  content-addressed tag, the launching user (the container runs as that uid, not the image's own
  non-root user, so it reads what the user can and its outputs belong to them), GPUs, and the
  folders the spec reads (mounted read-only at the same paths);
- `render()` (pure): the exact `docker run` argv and the environment names it passes;
- `submit/status/logs/cancel` (the executor): build the image only if its tag is missing, run, poll.

Outputs and checkpoints are host folders mounted into the container, so `fetch` copies from the host.
Secrets pass as `-e NAME`: docker reads each value from the launcher's environment, never from the request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from ftlaunch.core import errors, manifest
from ftlaunch.backends import failure
from ftlaunch.backends.base import JobHandle, JobRequest, JobStatus, State
from ftlaunch.containers import engine as engine_mod
from ftlaunch.containers import image as image_mod

TRAINER_MODULE = "ftlaunch.containers.trainer"
OUTPUT_DIR = "/opt/ftlaunch/output"
CHECKPOINT_DIR = "/opt/ftlaunch/checkpoints"
SPEC_FILE = "/opt/ftlaunch/job/spec.json"
WORK_DIR = "/opt/ftlaunch/work"
SHM_SIZE = "8g"  # PyTorch data loaders and NCCL need more than docker's 64 MB default
DEFAULT_NETWORK = "host"  # hub downloads and trackers on 127.0.0.1 work; FTLAUNCH_DOCKER_NETWORK=none for none
CANCEL_GRACE_S = 20
ENGINE_ENV = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "CONTAINER_HOST", "CONTAINER_CONNECTION")


# ---------------------------------------------------------------------------- plan time

def plan_context(spec: Any, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The runtime decision and every fact render needs for it. Reads the environment (plan time only).

    `resources.runtime`: process -> process; docker -> docker or a UserError saying why not;
    auto -> docker when an engine answers, else process. `runtime_note` says which, in one line."""
    env = dict(os.environ if env is None else env)
    requested = spec.resources.runtime
    if requested == "process":
        return {"runtime": "process", "runtime_note": "as a process (--runtime process)"}
    engine = engine_mod.detect(env)
    if engine is None:
        reason = engine_mod.why_none(env)
        if requested == "docker":
            raise errors.UserError(f"--runtime docker: {reason}.",
                                   hint="start Docker or podman (or set DOCKER_HOST), or pass --runtime process")
        return {"runtime": "process", "runtime_note": f"as a process: {reason} (--runtime docker requires one)"}
    options = image_mod.options_from_env(env)
    tag = image_mod.content_tag(options)
    uid, gid = os.getuid(), os.getgid()
    return {
        "runtime": "docker",
        "runtime_note": f"in {engine.name} {engine.version} (image {image_mod.local_ref(options, tag)}; "
                        "--runtime process to run without it)",
        "engine": {"name": engine.name, "binary": engine.binary, "version": engine.version,
                   "env": {k: env[k] for k in ENGINE_ENV if env.get(k)}},
        "image": image_mod.local_ref(options, tag),
        "build": {**options.to_json(), "tag": tag},
        "user": f"{uid}:{gid}",
        "host_gpus": count_gpus(env),
        "network": env.get("FTLAUNCH_DOCKER_NETWORK") or DEFAULT_NETWORK,
        "mounts": read_only_paths(spec),
        "model_path": _package_model_path(spec),
    }


def count_gpus(env: Mapping[str, str]) -> int:
    """NVIDIA GPUs on this machine (the /dev/nvidiaN devices), honouring CUDA_VISIBLE_DEVICES."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len([p for p in Path("/dev").glob("nvidia[0-9]*")])


def read_only_paths(spec: Any) -> list[str]:
    """Local folders and files the (resolved) spec reads: model, dataset, eval set. Mounted at the same path."""
    from ftlaunch.core import models

    paths = []
    for ref in (spec.model, spec.dataset.path, spec.dataset.eval_path):
        if not ref or "://" in ref or ref.startswith(models.PKG_PREFIX):
            continue
        path = Path(ref).expanduser()
        if path.is_absolute() and path.exists():
            paths.append(str(path.resolve()))
    model = _package_model_path(spec)
    if model:
        paths.append(str(Path(model).parent if Path(model).is_file() else Path(model)))
    return sorted(set(paths))


def _package_model_path(spec: Any) -> str | None:
    """A `pkg:` model resolved on this machine (the image does not have that package): its path here."""
    from ftlaunch.core import models

    if not spec.model.startswith(models.PKG_PREFIX):
        return None
    return str(models.package_path(spec.model).resolve())


# ---------------------------------------------------------------------------- render (pure)

def render(plan: Any) -> JobRequest:
    """The `docker run` command for this plan, with the spec the container reads. Pure."""
    ctx = plan.context
    job_dir = Path(ctx["job_dir"])
    engine = ctx["engine"]
    name = container_name(plan.job_name)
    spec_json = plan.spec.to_json()
    if ctx.get("model_path"):
        spec_json["model"] = ctx["model_path"]
    env = {
        "FTLAUNCH_OUTPUT_DIR": OUTPUT_DIR,
        "FTLAUNCH_CHECKPOINT_DIR": CHECKPOINT_DIR,
        "FTLAUNCH_JOB_NAME": plan.job_name,
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    checkpoints = job_dir / "checkpoints"
    argv = [engine["binary"], "run", "--detach", "--name", name, "--init",
            "--label", f"ftlaunch.job={plan.job_name}", "--label", f"ftlaunch.image-tag={ctx['build']['tag']}",
            "--shm-size", SHM_SIZE, "--network", ctx["network"]]
    if ctx.get("user"):
        # as the launching user: the job reads what they can read, and its outputs are theirs
        argv += ["--user", ctx["user"]]
        env["HOME"] = WORK_DIR  # that uid has no home in the image; the work folder is writable by all
    argv += gpu_flags(engine["name"], plan.spec.resources.gpus, ctx.get("host_gpus", 0))
    argv += ["--volume", f"{plan.output_uri}:{OUTPUT_DIR}", "--volume", f"{checkpoints}:{CHECKPOINT_DIR}",
             "--volume", f"{job_dir / 'spec.json'}:{SPEC_FILE}:ro"]
    for path in ctx.get("mounts", []):
        argv += ["--volume", f"{path}:{path}:ro"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    for secret in plan.spec.secrets:
        argv += ["--env", secret]  # the value comes from the launcher's environment when docker runs
    argv += [ctx["image"], "--spec", SPEC_FILE]
    payload = {
        "runtime": "docker",
        "engine": engine["name"],
        "engine_env": engine.get("env", {}),
        "image": ctx["image"],
        "build": ctx["build"],
        "container": name,
        "argv": argv,
        "env": env,
        "secret_env": list(plan.spec.secrets),
        "job_dir": str(job_dir),
        "spec_file": str(job_dir / "spec.json"),
        "spec": spec_json,
        "output_dir": plan.output_uri,
        "checkpoint_dir": str(checkpoints),
        "max_runtime_s": plan.max_runtime_s,
    }
    return JobRequest(backend="local", job_name=plan.job_name, payload=payload, secrets=list(plan.spec.secrets))


def container_name(job_name: str) -> str:
    return f"ftlaunch-{job_name}"


def gpu_flags(engine: str, wanted: int, host_gpus: int) -> list[str]:
    """`--gpus all` (docker) or the CDI device (podman) when this machine has GPUs and the job wants them."""
    if not host_gpus or not wanted:
        return []
    if engine == "podman":
        return ["--device", "nvidia.com/gpu=all"]
    return ["--gpus", "all" if wanted >= host_gpus else str(wanted)]


# ---------------------------------------------------------------------------- the executor

def engine_for(payload_or_extra: Mapping[str, Any]) -> engine_mod.Engine:
    """The engine that ran the job, talked to as it was at launch (same DOCKER_HOST)."""
    env = {**os.environ, **payload_or_extra.get("engine_env", {})}
    binary = payload_or_extra.get("engine_binary") or payload_or_extra["argv"][0]
    return engine_mod.Engine(name=payload_or_extra["engine"], binary=binary, env=env)


def submit(request: JobRequest, grace_s: int = CANCEL_GRACE_S) -> JobHandle:
    """Builds the image if its tag is missing, then `docker run --detach` exactly the rendered argv."""
    p = request.payload
    engine = engine_for(p)
    job_dir = Path(p["job_dir"])
    handle = _handle(request)
    if engine.container_state(p["container"]) is not None:  # same job submitted again: it already exists
        return handle
    missing = [name for name in request.secrets if name not in os.environ]
    if missing:
        raise errors.UserError(f"the spec lists secrets that are not set here: {', '.join(missing)}.",
                               hint=f"export {missing[0]}=... before launching, or remove it from secrets")
    for folder in (job_dir, Path(p["output_dir"]), Path(p["checkpoint_dir"])):
        folder.mkdir(parents=True, exist_ok=True)
    manifest.atomic_write_text(Path(p["spec_file"]), json.dumps(p["spec"], indent=2))
    outcome = ensure_image(engine, p, job_dir)
    proc = subprocess.run(p["argv"], capture_output=True, text=True, env=engine._env(None),
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise errors.UserError(f"{p['engine']} run of {request.job_name} failed: "
                               f"{(proc.stderr or proc.stdout).strip()[-800:]}",
                               hint="the full command is in `ftlaunch --dry-run --json`; run it by hand to see more")
    record = {"container_id": proc.stdout.strip(), "started_at": time.time(), "image": outcome.ref,
              "built": outcome.built, "pulled": outcome.pulled}
    manifest.atomic_write_text(job_dir / "container.json", json.dumps(record))
    if p.get("max_runtime_s"):
        _start_watchdog(p, grace_s)
    return handle


def ensure_image(engine: engine_mod.Engine, payload: Mapping[str, Any], job_dir: Path) -> image_mod.Outcome:
    """The image the payload names, built only if that tag is in neither the engine nor the registry."""
    build = dict(payload["build"])
    tag = build.pop("tag")
    options = image_mod.BuildOptions(**build)
    if engine.image_exists(payload["image"]):
        outcome = image_mod.Outcome(ref=payload["image"], tag=tag, found="local")
    else:
        print(f"building the job image {payload['image']} (only when its content changes); log: "
              f"{job_dir / 'build.log'}", file=sys.stderr, flush=True)
        with open(job_dir / "build.log", "a", encoding="utf-8") as log:
            outcome = image_mod.ensure(engine, options, tag=tag,
                                       on_line=lambda line: (log.write(line + "\n"), log.flush()))
    manifest.atomic_write_text(job_dir / "image.json", json.dumps(
        {"image": outcome.ref, "tag": tag, "built": outcome.built, "found": outcome.found}))
    return outcome


def _handle(request: JobRequest) -> JobHandle:
    p = request.payload
    return JobHandle(backend="local", job_name=request.job_name, provider_id=p["container"],
                     output_uri=p["output_dir"],
                     extra={"runtime": "docker", "engine": p["engine"], "engine_binary": p["argv"][0],
                            "engine_env": p.get("engine_env", {}), "job_dir": p["job_dir"], "image": p["image"],
                            "max_runtime_s": p.get("max_runtime_s")})


def status(handle: JobHandle) -> JobStatus:
    job_dir = Path(handle.extra["job_dir"])
    engine = engine_for(handle.extra)
    state = engine.container_state(handle.provider_id)
    if state is None:
        if (job_dir / "container.json").exists():
            return JobStatus(State.FAILED, f"container {handle.provider_id} is gone (removed outside ftlaunch)")
        return JobStatus(State.PENDING, "not started yet (building the image?)")
    docker_state = state.get("Status", "")
    if docker_state in ("created",):
        return JobStatus(State.PENDING, "container created", provider_state=docker_state)
    if docker_state in ("running", "restarting", "paused", "removing"):
        return JobStatus(State.RUNNING, provider_state=docker_state)
    code = state.get("ExitCode")
    if (job_dir / "cancelled").exists():
        return JobStatus(State.CANCELLED, "cancelled by ftlaunch cancel", provider_state=docker_state,
                         exit_code=code)
    if code == 0:
        return JobStatus(State.SUCCEEDED, provider_state=docker_state, exit_code=0)
    if (job_dir / "timed_out").exists():
        reason = f"exceeded max_runtime of {handle.extra.get('max_runtime_s')} s"
    elif state.get("OOMKilled"):
        reason = "out of memory: the container was OOM-killed"
    else:
        reason = state.get("Error") or _last_lines(engine, handle.provider_id)
    return JobStatus(State.FAILED, reason, provider_state=docker_state, exit_code=code)


def logs(handle: JobHandle, follow: bool = False) -> Iterator[str]:
    engine = engine_for(handle.extra)
    if engine.container_state(handle.provider_id) is None:
        return
    yield from engine.logs(handle.provider_id, follow=follow)


def cancel(handle: JobHandle, grace_s: int = CANCEL_GRACE_S) -> None:
    """docker stop (SIGTERM, then SIGKILL after the grace period); silent when the job has ended."""
    engine = engine_for(handle.extra)
    state = engine.container_state(handle.provider_id)
    if state is None or state.get("Status") not in ("running", "restarting", "paused", "created"):
        return
    (Path(handle.extra["job_dir"]) / "cancelled").touch()
    engine.stop(handle.provider_id, grace_s)


def retire(handle: JobHandle, attempt: int) -> None:
    """Before a new attempt: the ended container keeps its log under <container>-attempt-N, so the new one can
    take the job's container name."""
    engine = engine_for(handle.extra)
    if engine.container_state(handle.provider_id) is not None:
        engine.call("rename", handle.provider_id, f"{handle.provider_id}-attempt-{attempt}")


def attempt_logs(handle: JobHandle) -> list[str]:
    """Each attempt's container log, oldest first (retired attempts, then the current container)."""
    engine = engine_for(handle.extra)
    names = []
    n = 1
    while engine.container_state(f"{handle.provider_id}-attempt-{n}") is not None:
        names.append(f"{handle.provider_id}-attempt-{n}")
        n += 1
    names.append(handle.provider_id)
    out = []
    for name in names:
        proc = engine.call("logs", name, check=False)
        out.append(proc.stdout + proc.stderr)
    return out


def _last_lines(engine: engine_mod.Engine, name: str) -> str:
    """The container's last error (or last line), and the command that shows its whole log."""
    proc = engine.call("logs", "--tail", "200", name, check=False)
    return failure.reason(failure.clean_lines(proc.stdout + proc.stderr), log=f"{engine.name} logs {name}")


# ---------------------------------------------------------------------------- max_runtime

def _start_watchdog(payload: Mapping[str, Any], grace_s: int) -> None:
    """A detached process that stops the container at its deadline (docker itself has no time limit)."""
    deadline = time.time() + float(payload["max_runtime_s"])
    argv = [sys.executable, "-m", "ftlaunch.backends.local.docker", "watch", json.dumps({
        "engine": payload["engine"], "engine_binary": payload["argv"][0],
        "engine_env": payload.get("engine_env", {}), "container": payload["container"],
        "job_dir": payload["job_dir"], "deadline": deadline, "grace_s": grace_s})]
    with open(Path(payload["job_dir"]) / "watchdog.log", "ab") as log:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True, close_fds=True)


def watch(args: Mapping[str, Any], poll_s: float = 5.0) -> int:
    engine = engine_for(args)
    while time.time() < args["deadline"]:
        state = engine.container_state(args["container"])
        if state is None or state.get("Status") in ("exited", "dead"):
            return 0
        time.sleep(min(poll_s, max(0.1, args["deadline"] - time.time())))
    state = engine.container_state(args["container"])
    if state is not None and state.get("Status") == "running":
        (Path(args["job_dir"]) / "timed_out").touch()
        engine.stop(args["container"], int(args["grace_s"]))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "watch":
        sys.exit(watch(json.loads(sys.argv[2])))
    print("usage: python -m ftlaunch.backends.local.docker watch JSON", file=sys.stderr)
    sys.exit(2)
