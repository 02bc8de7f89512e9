"""The supervisor of a local job: runs the trainer, forwards stop signals, and records how it ended.

Usage: python -m ftlaunch.backends.local.supervise --job-dir DIR [--max-runtime S] -- ARGV...
Writes DIR/exit.json ({"exit_code", "reason", "ended_at"}) atomically when the trainer ends.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from ftlaunch import manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job-dir", required=True)
    parser.add_argument("--max-runtime", type=float, default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    job_dir = Path(args.job_dir)

    child = subprocess.Popen(command)
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
    reason = stopping["reason"]
    manifest.atomic_write_text(job_dir / "exit.json", json.dumps(
        {"exit_code": code, "reason": reason, "ended_at": time.time()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
