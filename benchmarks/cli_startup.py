"""How long `ftlaunch --help` takes, against `python -c "import click"` measured in the same run (the floor
of any click CLI), with a bare Python start beside it.

    python benchmarks/cli_startup.py            # target: ftlaunch --help within 4x of importing click

Prints the median wall time of each command over N runs and their ratios. A ratio, not a time, is the
target: on a loaded machine both sides slow down together.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 7
TARGET_RATIO = 4.0  # --help within this many times `import click` (issue 15)


def median_time(argv: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    exe = str(Path(sys.executable).with_name("ftlaunch"))
    bare = median_time([sys.executable, "-c", "pass"])
    baseline = median_time([sys.executable, "-c", "import click"])
    help_s = median_time([exe, "--help"])
    version_s = median_time([exe, "--version"])
    ratio = help_s / baseline
    print(f"python -c pass           {bare * 1000:7.1f} ms")
    print(f"python -c 'import click' {baseline * 1000:7.1f} ms  (baseline)")
    print(f"ftlaunch --version       {version_s * 1000:7.1f} ms  ({version_s / baseline:.1f}x baseline)")
    print(f"ftlaunch --help          {help_s * 1000:7.1f} ms  ({ratio:.1f}x baseline)  "
          f"target <= {TARGET_RATIO:.0f}x: {'met' if ratio <= TARGET_RATIO else 'MISSED'}")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
