"""How long `ftlaunch --help` takes, against a bare Python start measured in the same run.

    python benchmarks/cli_startup.py            # target: ftlaunch --help under 0.5 s

Prints the median wall time of each command over N runs and their ratio.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 7
TARGET_S = 0.5


def median_time(argv: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    exe = str(Path(sys.executable).with_name("ftlaunch"))
    baseline = median_time([sys.executable, "-c", "pass"])
    help_s = median_time([exe, "--help"])
    version_s = median_time([exe, "--version"])
    print(f"python -c pass     {baseline * 1000:7.1f} ms  (baseline)")
    print(f"ftlaunch --version {version_s * 1000:7.1f} ms  ({version_s / baseline:.1f}x baseline)")
    print(f"ftlaunch --help    {help_s * 1000:7.1f} ms  ({help_s / baseline:.1f}x baseline)  "
          f"target < {TARGET_S * 1000:.0f} ms: {'met' if help_s < TARGET_S else 'MISSED'}")
    return 0 if help_s < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
