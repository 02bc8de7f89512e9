"""LocalBackend: runs the shared trainer on this machine, in a container (docker.py) or as a process.

In the process runtime the supervisor (`supervise.py`) starts the trainer in its own process group,
copies its output to the job's log file, and writes exit.json when it ends, so any later shell can tell
how the job finished. The trainer dies with its supervisor; while any process of the group lives the job
is RUNNING, and `cancel` stops the whole group. The trainer's environment is an allow-list (render.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from ftlaunch.core import errors, manifest
from ftlaunch.backends import base, failure
from ftlaunch.backends.base import Backend, JobHandle, JobRequest, JobStatus, State
from ftlaunch.backends.local import docker as _docker
from ftlaunch.backends.local import render as _render
from ftlaunch.backends.local import supervise as _supervise

CANCEL_GRACE_S = 20.0
REQUEST_FILE = "request.json"
STEP_LINE = re.compile(r"^step\s+(\d+)/")  # the trainer's line per logged training step (outputs.py)
# one attempt's state (a process: its supervisor's files; docker: its container's record and stop markers)
ATTEMPT_FILES = ("supervisor.json", "trainer.json", "exit.json", "cancelled", "container.json", "timed_out")
ATTEMPT_MARK = "=== ftlaunch: attempt "  # the log line that starts each attempt after the first


class LocalBackend(Backend):
    name = "local"

    def __init__(self, grace_s: float = CANCEL_GRACE_S):
        self.grace_s = grace_s

    def render(self, plan: Any) -> JobRequest:
        return _render.render(plan)

    def submit(self, request: JobRequest) -> JobHandle:
        p = request.payload
        if p.get("runtime") == "docker":
            handle = _docker.submit(request, grace_s=int(self.grace_s))
            _save_request(request)
            return handle
        job_dir = Path(p["job_dir"])
        if (job_dir / "supervisor.json").exists():  # same job name submitted again: it already runs
            return self._handle(request)
        # secret values come from the launcher's environment at this moment and go only to the child
        missing = [name for name in request.secrets if name not in os.environ]
        if missing:
            raise errors.UserError(f"the spec lists secrets that are not set here: {', '.join(missing)}.",
                                   hint=f"export {missing[0]}=... before launching, or remove it from secrets")
        job_dir.mkdir(parents=True, exist_ok=True)
        Path(p["env"]["FTLAUNCH_OUTPUT_DIR"]).mkdir(parents=True, exist_ok=True)
        manifest.atomic_write_text(Path(p["spec_file"]), json.dumps(p["spec"], indent=2))
        _save_request(request)
        env = _render.trainer_env(os.environ, p["env"], request.secrets)
        argv = [sys.executable, "-m", "ftlaunch.backends.local.supervise", "--job-dir", str(job_dir)]
        if p.get("max_runtime_s"):
            argv += ["--max-runtime", str(p["max_runtime_s"])]
        argv += ["--", *p["argv"]]
        with open(p["log_file"], "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True, close_fds=True)
        manifest.atomic_write_text(job_dir / "supervisor.json",
                                   json.dumps({"pid": proc.pid, "start_ticks": _supervise.start_ticks(proc.pid)}))
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
        log = Path(handle.extra["log_file"])
        cancelled = (job_dir / "cancelled").exists()
        data = _read_json(job_dir / "exit.json")
        if data is not None:
            code = data["exit_code"]
            if cancelled:
                return JobStatus(State.CANCELLED, "cancelled by ftlaunch cancel", exit_code=code)
            if code == 0:
                return JobStatus(State.SUCCEEDED, exit_code=0)
            return JobStatus(State.FAILED, _with_last_line(data.get("reason"), log), exit_code=code)
        sup = _read_json(job_dir / "supervisor.json")
        if sup is None:
            return JobStatus(State.PENDING, "not started yet")
        if _alive(sup["pid"], sup.get("start_ticks")):
            return JobStatus(State.RUNNING)
        if _trainer_alive(job_dir) or _group_alive(sup["pid"]):  # never FAILED while the trainer still runs
            return JobStatus(State.RUNNING, "its supervisor died; the trainer is stopping (`ftlaunch cancel` "
                                            "stops it now)")
        if (job_dir / "exit.json").exists():  # it ended, and recorded how, since the first look
            return self.status(handle)
        if cancelled:
            return JobStatus(State.CANCELLED, "cancelled by ftlaunch cancel")
        return JobStatus(State.FAILED, _with_last_line(
            "the job's supervisor ended without recording how the trainer ended (it was killed, or the machine "
            f"restarted); the trainer was stopped with it: `ftlaunch resume {handle.job_name}` resumes it from its "
            "last checkpoint", log))

    def resume(self, handle: JobHandle) -> JobHandle:
        """A new attempt of an ended job in the same folders: the trainer resumes from the newest complete
        checkpoint in the job's checkpoint folder. The last attempt's state files move to attempts/N/; in Docker
        its container is kept, renamed <container>-attempt-N, with its log."""
        docker = handle.extra.get("runtime") == "docker"
        job_dir = Path(handle.extra["job_dir"] if docker else handle.provider_id)
        saved = _read_json(job_dir / REQUEST_FILE)
        if saved is None:
            raise errors.UserError(f"job {handle.job_name} was launched by an older ftlaunch that did not keep "
                                   f"its request ({job_dir / REQUEST_FILE} is missing).",
                                   hint="launch the spec again as a new job")
        state = self.status(handle).state
        if not state.done:
            raise errors.UserError(f"job {handle.job_name} is still {state.value}.",
                                   hint=f"cancel it first (`ftlaunch cancel {handle.job_name}`), or wait for it to end")
        previous = job_dir / "attempts"
        number = 1 + sum(1 for p in previous.glob("[0-9]*")) if previous.is_dir() else 1
        keep = previous / str(number)
        keep.mkdir(parents=True, exist_ok=True)
        for name in ATTEMPT_FILES:
            if (job_dir / name).exists():
                os.replace(job_dir / name, keep / name)
        request = JobRequest(backend="local", job_name=saved["job_name"], payload=saved["payload"],
                             secrets=saved["secrets"])
        if docker:
            _docker.retire(handle, number)
            return _docker.submit(request, grace_s=int(self.grace_s))
        log = Path(handle.extra["log_file"])
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{ATTEMPT_MARK}{number + 1} (ftlaunch resume) ===\n")
        return self.submit(request)

    def attempt_steps(self, handle: JobHandle) -> list[tuple[int | None, int | None]]:
        """(first, last) training step logged by each attempt, from the job's log (in Docker: each attempt's
        container's log); None where it logged none."""
        if handle.extra.get("runtime") == "docker":
            text = f"\n{ATTEMPT_MARK}\n".join(_docker.attempt_logs(handle))
        else:
            try:
                text = Path(handle.extra["log_file"]).read_text(encoding="utf-8", errors="replace")
            except (FileNotFoundError, KeyError):
                return []
        found: list[list[int]] = [[]]
        for line in text.splitlines():
            if line.startswith(ATTEMPT_MARK):
                found.append([])
                continue
            match = STEP_LINE.match(line)
            if match:
                found[-1].append(int(match.group(1)))
        return [(steps[0], steps[-1]) if steps else (None, None) for steps in found]

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
        if sup is None or (job_dir / "exit.json").exists():
            return
        # the supervisor leads the job's process group; the trainer stays in it even if the supervisor died
        pgid = sup["pid"]
        running = lambda: _alive(pgid, sup.get("start_ticks")) or _trainer_alive(job_dir)  # noqa: E731
        if not running() and not _group_alive(pgid):
            return
        (job_dir / "cancelled").touch()
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        reaped_by = None
        while time.monotonic() < deadline:
            if not running() and not _group_alive(pgid):
                # only zombies left: give their parents (init, for a launch from the CLI) a moment to reap them
                reaped_by = reaped_by or time.monotonic() + 2.0
                if not _group_exists(pgid) or time.monotonic() > reaped_by:
                    return
            time.sleep(0.1)
        _signal_group(pgid, signal.SIGKILL)

    def fetch_checkpoint(self, handle: JobHandle, dest: Path) -> Path:
        """The job's newest complete checkpoint copied into dest (see the module's fetch_checkpoint)."""
        return fetch_checkpoint(handle, dest)

    def fetch(self, handle: JobHandle, dest: Path) -> Path:
        """Both runtimes write to a host folder (the container's output volume): copy it and verify."""
        source = Path(handle.output_uri)
        if not (source / manifest.NAME).exists():
            state = self.status(handle)
            hint = (f"`ftlaunch resume {handle.job_name}` continues it; `ftlaunch fetch {handle.job_name} "
                    "--checkpoint` brings back its newest complete checkpoint") if state.state.done else \
                "wait for it to succeed (`ftlaunch status`), then fetch again"
            raise errors.UserError(f"job {handle.job_name} has no complete outputs yet ({state.state.value}).",
                                   hint=hint)
        dest = Path(os.path.abspath(Path(dest).expanduser()))
        if dest.resolve() == source.resolve():
            manifest.verify(dest)
            return dest
        if source.resolve() in dest.resolve().parents:
            raise errors.UserError(f"--dest {dest} is inside the job's own outputs ({source}).",
                                   hint="pass --dest with a folder outside it")
        return base.fetch_verified(dest, lambda staging: shutil.copytree(source, staging, dirs_exist_ok=True,
                                                                         symlinks=True), job=handle.job_name)


def fetch_checkpoint(handle: JobHandle, dest: Path) -> Path:
    """Copies the newest complete checkpoint of a job (stopped or running) into dest/checkpoint-N; dest must be
    new or empty. Only a checkpoint with its COMPLETE marker is ever copied."""
    from ftlaunch.containers.trainer import checkpoints

    if handle.extra.get("runtime") == "docker":
        raise errors.UserError("fetch --checkpoint is not supported for the docker runtime yet.",
                               hint="copy it from the job's checkpoint folder under $FTLAUNCH_HOME/jobs")
    newest = checkpoints.latest(Path(handle.provider_id) / "checkpoints")
    if newest is None:
        raise errors.UserError(f"job {handle.job_name} has no complete checkpoint.",
                               hint="set hyperparameters.save_steps (or save_minutes) so the trainer writes them")
    dest = Path(os.path.abspath(Path(dest).expanduser()))
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise errors.UserError(f"--dest {dest} exists and is not an empty folder; nothing was copied.",
                               hint="pass --dest with a new or empty folder")
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".{newest.name}.partial"
    shutil.copytree(newest, staging, symlinks=True)
    os.replace(staging, dest / newest.name)
    return dest / newest.name


def _save_request(request: JobRequest) -> None:
    """What `ftlaunch resume` submits again: the payload and the secrets' names (never their values)."""
    manifest.atomic_write_text(Path(request.payload["job_dir"]) / REQUEST_FILE, json.dumps(
        {"job_name": request.job_name, "payload": request.payload, "secrets": list(request.secrets)}, indent=2))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
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
    return start_ticks is None or _supervise.start_ticks(pid) in (None, start_ticks)


def _proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies waiting for their parent do not count)."""
    if not _group_exists(pgid):
        return False
    if not Path("/proc/self/stat").exists():
        return True
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = path.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _trainer_alive(job_dir: Path) -> bool:
    trainer = _read_json(job_dir / "trainer.json")
    return trainer is not None and _alive(trainer["pid"], trainer.get("start_ticks"))


def _with_last_line(reason: str | None, log: Path) -> str:
    """The recorded reason (a signal, max_runtime), the trainer's last error (or last line) and the log's path."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64_000))
            lines = failure.clean_lines(f.read().decode("utf-8", "replace"))
    except FileNotFoundError:
        return failure.reason([], reason)
    return failure.reason(lines, reason, log=str(log))


BACKEND = LocalBackend
