"""The supervisor of a local job: runs the trainer, forwards stop signals, and records how it ended.

Usage: python -m ftlaunch.backends.local.supervise --job-dir DIR [--max-runtime S] -- ARGV...
Writes DIR/trainer.json ({"pid", "start_ticks"}) once the trainer starts, and DIR/exit.json
({"exit_code", "signal", "reason", "ended_at"}) atomically when it ends.

The trainer cannot outlive its supervisor: it is started with PR_SET_PDEATHSIG, so the kernel sends it
SIGTERM (it saves a checkpoint and exits) the moment the supervisor dies, even by SIGKILL. Both share the
process group the launcher created, which `ftlaunch cancel` signals as a whole.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ftlaunch.core import manifest

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_DEATH_SIGNAL = signal.SIGTERM


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job-dir", required=True)
    parser.add_argument("--max-runtime", type=float, default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    job_dir = Path(args.job_dir)

    ooms_before = oom_kills()
    child = subprocess.Popen(command, preexec_fn=die_with_parent(os.getpid()))
    manifest.atomic_write_text(job_dir / "trainer.json",
                               json.dumps({"pid": child.pid, "start_ticks": start_ticks(child.pid)}))
    stopping = {"reason": None}

    def forward(signum, _frame):
        stopping["reason"] = stopping["reason"] or f"stopped by signal {signal.Signals(signum).name}"
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    deadline = time.monotonic() + args.max_runtime if args.max_runtime else None
    while True:
        try:
            code = child.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            if deadline and time.monotonic() > deadline and stopping["reason"] is None:
                stopping["reason"] = f"exceeded max_runtime of {args.max_runtime:.0f} s"
                child.terminate()
    signum = -code if code < 0 else None
    reason = stopping["reason"] or (signal_reason(signum, oom_kills(), ooms_before) if signum else None)
    manifest.atomic_write_text(job_dir / "exit.json", json.dumps(
        {"exit_code": code, "signal": signal.Signals(signum).name if signum else None, "reason": reason,
         "ended_at": time.time()}))
    return 0


def die_with_parent(parent_pid: int):
    """A preexec_fn for the trainer: the kernel signals it when the supervisor dies. If the supervisor
    died before this ran, the trainer exits at once instead of running unsupervised."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork: the child only calls it

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)
    return preexec


def signal_reason(signum: int, ooms_after: int | None, ooms_before: int | None) -> str:
    """The words for a trainer ended by a signal: "segmentation fault (SIGSEGV)", "killed by SIGKILL
    (out of memory?)", or "killed by SIGKILL: out of memory" when the cgroup's oom_kill count rose."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    if signum == signal.SIGKILL:
        if ooms_after is not None and ooms_before is not None and ooms_after > ooms_before:
            return "killed by SIGKILL: out of memory (the kernel's OOM killer ended it)"
        return "killed by SIGKILL (out of memory?)"
    return {signal.SIGSEGV: "segmentation fault (SIGSEGV)", signal.SIGBUS: "bus error (SIGBUS)",
            signal.SIGABRT: "aborted (SIGABRT)", signal.SIGFPE: "arithmetic fault (SIGFPE)",
            signal.SIGILL: "illegal instruction (SIGILL)"}.get(signum, f"killed by {name}")


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has ended in this process's memory cgroup (v2
    memory.events or v1 memory.oom_control); None where neither can be read."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates += [Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.events",
                           Path("/sys/fs/cgroup/memory.events")]
        elif "memory" in controllers.split(","):
            candidates += [Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.oom_control",
                           Path("/sys/fs/cgroup/memory/memory.oom_control")]
    for file in candidates:
        try:
            for entry in file.read_text().splitlines():
                key, _, value = entry.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), to survive pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


if __name__ == "__main__":
    sys.exit(main())
