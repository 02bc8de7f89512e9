"""How many images a relaunch builds, and what it costs: the content-addressed tag at work.

Run (as root, after .ci/docker-setup.sh): python benchmarks/image_rebuild.py [--relaunches 3]
Starts a private dockerd (tests/docker_engine.py), makes the stand-in PyTorch base (Debian + CPU torch),
then launches the tiny fine-tune with `ftlaunch --cloud local --runtime docker --detach` once, and again
--relaunches times with nothing changed: it counts the images each launch built (image.json in the job's
folder) and times each launch from the command to the container started. Last, it shows what a change to
the trainer code costs: a new tag and a rebuild of only the layers after the dependencies.
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import docker_engine  # noqa: E402
import tiny  # noqa: E402


def launch(spec: Path, env: dict[str, str]) -> tuple[str, float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ftlaunch", "--cloud", "local", "--runtime", "docker", "--detach",
                           "--json", str(spec)], capture_output=True, text=True, env=env, timeout=1800)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"launch failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout)["job"], elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relaunches", type=int, default=3)
    args = parser.parse_args()
    from ftlaunch.containers import engine as engine_mod
    from ftlaunch.containers import image

    work = Path(tempfile.mkdtemp(prefix="ftl-bench-image-"))
    engine = docker_engine.start_dockerd()
    rows = []
    try:
        t0 = time.perf_counter()
        base = docker_engine.base_image(engine)
        base_s = time.perf_counter() - t0
        wheels = docker_engine.job_wheelhouse(Path(image.__file__).with_name(image.LOCK_FILE))
        model = tiny.build_causal_lm(work / "tiny-lm")
        data = tiny.write_alpaca(work / "train.jsonl")
        spec = work / "spec.yaml"
        spec.write_text(f"name: bench-image\nmodel: {model}\ntechnique: lora\ndataset:\n  path: {data}\n"
                        "hyperparameters:\n  max_steps: 2\n  batch_size: 4\n  max_length: 64\n")
        env = {**engine.env, "FTLAUNCH_HOME": str(work / "home"), "FTLAUNCH_BASE_IMAGE": base,
               "FTLAUNCH_WHEELHOUSE": str(wheels), "FTLAUNCH_BUILD_NETWORK": "host",
               "FTLAUNCH_DOCKER_NETWORK": "none", "FTLAUNCH_ENGINE": "docker"}
        for i in range(1 + args.relaunches):
            job, seconds = launch(spec, env)
            record = json.loads((work / "home" / "jobs" / job / "image.json").read_text())
            rows.append({"launch": "first" if i == 0 else f"relaunch {i}", "images_built": int(record["built"]),
                         "tag": record["tag"], "seconds": round(seconds, 2)})
        # a change to the trainer code: new tag, and only the layers after the dependencies rebuild
        sources = image.trainer_sources()
        changed = work / "run.py"
        changed.write_text(sources["containers/trainer/run.py"].read_text() + "\n# benchmark: a code change\n")
        image.trainer_sources = lambda: {**sources, "containers/trainer/run.py": changed}
        options = image.options_from_env(env)
        e = engine_mod.Engine(name="docker", binary=docker_engine.docker_client(), env=env)
        t0 = time.perf_counter()
        outcome = image.ensure(e, options)
        rows.append({"launch": "after a trainer code change (build only)", "images_built": int(outcome.built),
                     "tag": outcome.tag, "seconds": round(time.perf_counter() - t0, 2)})
    finally:
        engine.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"stand-in base image ready in {base_s:.1f} s (cached in the engine after the first time)")
    print(f"{'launch':<42} {'images built':>12} {'seconds':>8}  tag")
    for row in rows:
        print(f"{row['launch']:<42} {row['images_built']:>12} {row['seconds']:>8.2f}  {row['tag']}")
    relaunch_builds = sum(r["images_built"] for r in rows[1:1 + args.relaunches])
    print(json.dumps({"relaunch_images_built": relaunch_builds, "rows": rows}))
    return 0 if relaunch_builds == 0 else 1


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("run as root: it starts a private dockerd")
    sys.exit(main())
