"""Wall time of `ftlaunch estimate` for a 4-target plan (SageMaker, Vertex AI, Azure ML, SkyPilot); the budget is 0.5 s.

Run: python benchmarks/estimate_speed.py [--runs 5]
Measures a fresh process (interpreter start, imports, spec load, price table, every offer's memory, time
and cost, the printed table), the way a person runs the command; prints the median and the best.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

BUDGET_S = 0.5

RUNNER = textwrap.dedent("""
    import sys
    import click
    from ftlaunch.cli import plan_cli
    group = click.Group()
    group.add_command(plan_cli.estimate)
    group(sys.argv[1:])
""")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "train.jsonl").write_text("".join(json.dumps({"instruction": f"q{i}", "output": "a " * 200}) + "\n"
                                                  for i in range(5000)))
        spec = root / "ftlaunch.yaml"
        spec.write_text(textwrap.dedent("""\
            name: bench
            model: meta-llama/Llama-3.1-8B
            technique: lora
            dataset:
              path: train.jsonl
            resources:
              cloud: auto
            """))
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", RUNNER, "estimate", str(spec)], capture_output=True, text=True,
                                  env={"COLUMNS": "160", "PATH": ""})
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return 1
        offers = proc.stdout.count("\n")
    median = statistics.median(times)
    print(f"ftlaunch estimate, 4 targets ({offers} lines printed): median {median:.3f} s, best {min(times):.3f} s "
          f"over {args.runs} runs; budget {BUDGET_S} s: {'PASS' if median <= BUDGET_S else 'FAIL'}")
    return 0 if median <= BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
