"""Starts the trainer with as many processes as the job has: torchrun with the backend's rendezvous when
there is more than one, the trainer itself otherwise.

  python -m ftlaunch.containers.trainer.launch --spec SPEC.json [--nproc-per-node N]
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    from ftlaunch.containers.trainer import distributed, run

    parser = argparse.ArgumentParser(prog="python -m ftlaunch.containers.trainer.launch")
    parser.add_argument("--spec", default=os.environ.get("FTLAUNCH_SPEC_PATH"))
    parser.add_argument("--nproc-per-node", type=int, default=None)
    args = parser.parse_args(argv)
    gpus = args.nproc_per_node or _gpu_count()
    rdzv = distributed.rendezvous(os.environ, gpus)
    if rdzv.world_size <= 1:
        return run.main(["--spec", args.spec] if args.spec else [])
    command = distributed.torchrun_command(rdzv, args.spec, python=sys.executable)
    print(f"[ftlaunch] {rdzv.provider}: node {rdzv.node_rank} of {rdzv.nnodes}, {rdzv.nproc_per_node} "
          f"processes, rendezvous {rdzv.master_addr}:{rdzv.master_port}", flush=True)
    os.execv(command[0], command)
    return 0  # not reached


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() or 1
    except ImportError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
