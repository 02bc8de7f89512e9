"""LocalBackend: runs the shared trainer on this machine, in a container (docker.py) or as a process.

In the process runtime the supervisor (`supervise.py`) starts the trainer in its own process group,
copies its output to the job's log file, and writes exit.json when it ends, so any later shell can tell
how the job finished.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from ftlaunch import errors, manifest
from ftlaunch.backends.base import Backend, Capability, JobHandle, JobRequest, JobStatus, State
from ftlaunch.backends.local import docker as _docker
from ftlaunch.backends.local import render as _render

CANCEL_GRACE_S = 20.0


class LocalBackend(Backend):
    name = "local"
    UNSUPPORTED = {
        Capability.MULTI_NODE: "this machine is one node; use --cloud skypilot or a managed cloud for --nodes > 1",
        Capability.SPOT: "spot capacity is a cloud offer; drop --spot or pick a cloud",
        Capability.REGION: "this machine has no region; drop --region",
    }

    def __init__(self, grace_s: float = CANCEL_GRACE_S):
        self.grace_s = grace_s

    def render(self, plan: Any) -> JobRequest:
        return _render.render(plan)

    def submit(self, request: JobRequest) -> JobHandle:
        p = request.payload
        if p.get("runtime") == "docker":
            return _docker.submit(request, grace_s=int(self.grace_s))
        job_dir = Path(p["job_dir"])
        if (job_dir / "supervisor.json").exists():  # same job name submitted again: it already runs
            return self._handle(request)
        job_dir.mkdir(parents=True, exist_ok=True)
        Path(p["env"]["FTLAUNCH_OUTPUT_DIR"]).mkdir(parents=True, exist_ok=True)
        manifest.atomic_write_text(Path(p["spec_file"]), json.dumps(p["spec"], indent=2))
        env = {**os.environ, **p["env"]}
        # secret values come from the launcher's environment at this moment and go only to the child
        missing = [name for name in request.secrets if name not in os.environ]
        if missing:
            raise errors.UserError(f"the spec lists secrets that are not set here: {', '.join(missing)}.",
                                   hint=f"export {missing[0]}=... before launching, or remove it from secrets")
        argv = [sys.executable, "-m", "ftlaunch.backends.local.supervise", "--job-dir", str(job_dir)]
        if p.get("max_runtime_s"):
            argv += ["--max-runtime", str(p["max_runtime_s"])]
        argv += ["--", *p["argv"]]
        with open(p["log_file"], "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True, close_fds=True)
        manifest.atomic_write_text(job_dir / "supervisor.json",
                                   json.dumps({"pid": proc.pid, "start_ticks": _start_ticks(proc.pid)}))
        return self._handle(request)

    def _handle(self, request: JobRequest) -> JobHandle:
        p = request.payload
        return JobHandle(backend="local", job_name=request.job_name, provider_id=p["job_dir"],
                         output_uri=p["env"]["FTLAUNCH_OUTPUT_DIR"],
                         extra={"log_file": p["log_file"], "runtime": p["runtime"]})

    def status(self, handle: JobHandle) -> JobStatus:
        if handle.extra.get("runtime") == "docker":
            return _docker.status(handle)
        job_dir = Path(handle.provider_id)
        exit_file = job_dir / "exit.json"
        if exit_file.exists():
            data = json.loads(exit_file.read_text())
            code = data["exit_code"]
            if (job_dir / "cancelled").exists():
                return JobStatus(State.CANCELLED, "cancelled by ftlaunch cancel", exit_code=code)
            if code == 0:
                return JobStatus(State.SUCCEEDED, exit_code=0)
            return JobStatus(State.FAILED, data.get("reason") or _last_error(Path(handle.extra["log_file"])),
                             exit_code=code)
        sup = _read_json(job_dir / "supervisor.json")
        if sup is None:
            return JobStatus(State.PENDING, "not started yet")
        if _alive(sup["pid"], sup.get("start_ticks")):
            return JobStatus(State.RUNNING)
        return JobStatus(State.FAILED, "the job's supervisor process ended without recording an exit code "
                         "(the machine restarted or it was killed)")

    def logs(self, handle: JobHandle, follow: bool = False) -> Iterator[str]:
        if handle.extra.get("runtime") == "docker":
            yield from _docker.logs(handle, follow)
            return
        path = Path(handle.extra["log_file"])
        while not path.exists():
            if not follow or self.status(handle).state.done:
                return
            time.sleep(0.2)
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            while True:
                line = f.readline()
                if line:
                    yield line.rstrip("\n")
                    continue
                if not follow or self.status(handle).state.done:
                    rest = f.read()
                    yield from (l for l in rest.splitlines())
                    return
                time.sleep(0.2)

    def cancel(self, handle: JobHandle) -> None:
        if handle.extra.get("runtime") == "docker":
            return _docker.cancel(handle, grace_s=int(self.grace_s))
        job_dir = Path(handle.provider_id)
        sup = _read_json(job_dir / "supervisor.json")
        if sup is None or (job_dir / "exit.json").exists() or not _alive(sup["pid"], sup.get("start_ticks")):
            return
        (job_dir / "cancelled").touch()
        pgid = sup["pid"]
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline:
            if not _alive(sup["pid"], sup.get("start_ticks")) and not _group_alive(pgid):
                return
            time.sleep(0.1)
        _signal_group(pgid, signal.SIGKILL)

    def fetch(self, handle: JobHandle, dest: Path) -> Path:
        """Both runtimes write to a host folder (the container's output volume): copy it and verify."""
        source = Path(handle.output_uri)
        if not (source / manifest.NAME).exists():
            state = self.status(handle)
            raise errors.UserError(f"job {handle.job_name} has no complete outputs yet ({state.state.value}).",
                                   hint="wait for it to succeed (`ftlaunch status`), then fetch again")
        dest = Path(dest)
        if dest.resolve() != source.resolve():
            staging = dest.with_name(f".{dest.name}.partial")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(source, staging)
            manifest.verify(staging)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staging, dest)
        manifest.verify(dest)
        return dest


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), to survive pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, start_ticks: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = _proc_state(pid)
    if state == "Z":
        return False
    return start_ticks is None or _start_ticks(pid) in (None, start_ticks)


def _proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _last_error(log: Path, lines: int = 3) -> str:
    try:
        tail = [l for l in log.read_text(errors="replace").splitlines() if l.strip()][-lines:]
    except FileNotFoundError:
        return "no log"
    return " | ".join(tail) or "exited with an error and printed nothing"


BACKEND = LocalBackend
