"""The trainer's main(): resolved spec in; metrics.jsonl, summary.json, weights/ and manifest.json out.

Exit status: 0 done; 2 a mistake in the spec or data (no traceback); 75 stopped by SIGTERM (a spot
preemption notice) after saving a checkpoint: `ftlaunch resume JOB` (a new attempt of the same job) resumes
from there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from ftlaunch.core import errors
from ftlaunch.core import spec as spec_mod
from ftlaunch.containers.trainer import checkpoints, common, contract, outputs
from ftlaunch.core.techniques import Task

EXIT_USER_ERROR = 2
EXIT_PREEMPTED = checkpoints.EXIT_PREEMPTED
# the model the last train() call in this process ended with, for tests and notebooks
last_model: Any = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlaunch.containers.trainer")
    parser.add_argument("--spec", default=os.environ.get("FTLAUNCH_SPEC_PATH"),
                        help="the resolved spec as a JSON file (or JSON text)")
    args = parser.parse_args(argv)
    _quiet_libraries()
    guard = checkpoints.Guard().install()
    try:
        spec = read_spec(args.spec or os.environ.get("FTLAUNCH_SPEC", ""))
        paths = contract.paths(os.environ)
        train(spec, paths, guard=guard)
    except errors.UserError as exc:
        print(f"error: {exc.render()}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except checkpoints.Preempted as exc:
        job = os.environ.get("FTLAUNCH_JOB_NAME", "JOB")
        outputs.log(f"stopped by SIGTERM ({exc}); exit {EXIT_PREEMPTED}: `ftlaunch resume {job}` resumes it")
        return EXIT_PREEMPTED
    finally:
        guard.uninstall()
    return 0


def read_spec(source: str) -> spec_mod.Spec:
    if not source:
        raise errors.UserError("the trainer got no spec.", hint="pass --spec FILE or set FTLAUNCH_SPEC")
    text = source if source.lstrip().startswith("{") else Path(source).read_text()
    return spec_mod.validate(json.loads(text), source="resolved spec")


def train(spec: spec_mod.Spec, paths: contract.Paths, guard: checkpoints.Guard | None = None) -> dict[str, Any]:
    """Runs one job end to end and returns its summary (on every process; only rank 0 writes outputs)."""
    from ftlaunch.containers.trainer import task_classification, task_cpt, task_dpo, task_reward, task_rl, task_sft

    started = time.time()
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    out = Path(paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    Path(paths.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    if world_size > 1:
        import torch
        from accelerate import PartialState

        if not torch.cuda.is_available():
            # accelerate names the CPU "cpu:0" when several processes run, and a resume then fails in
            # transformers' torch.load(optimizer.pt, map_location="cpu:0"), which torch refuses
            os.environ.setdefault("ACCELERATE_TORCH_DEVICE", "cpu")
        PartialState()  # the process group (the Trainer reuses it), so that the ranks agree on the resume step
    resume_from = checkpoints.resume_point(paths.checkpoint_dir)
    if rank != 0 and resume_from is not None:
        outputs.log(f"rank {rank}: resuming from step {checkpoints.step_of(resume_from)}")
    if rank == 0:
        checkpoints.clean_staging(paths.checkpoint_dir)
        (out / "manifest.json").unlink(missing_ok=True)
        if resume_from is None:
            (out / "metrics.jsonl").unlink(missing_ok=True)
        else:
            _trim_metrics(out / "metrics.jsonl", checkpoints.step_of(resume_from))
        outputs.log(f"job {os.environ.get('FTLAUNCH_JOB_NAME', spec.name)}: {spec.task.value} with "
                    f"{spec.technique.value} on {spec.model}" + (f" ({world_size} processes)" if world_size > 1 else ""))
        if resume_from is not None:
            outputs.log(f"resuming from {resume_from} (step {checkpoints.step_of(resume_from)})")

    import datasets
    import torch
    import transformers

    if not outputs.on_terminal():  # in a log file a progress bar is hundreds of lines of debris
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.set_seed(spec.hyperparameters.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    job = common.Job(spec=spec, paths=paths, out=out, device=device,
                     precision=choose_precision(spec.hyperparameters.precision, device, torch),
                     world_size=world_size, rank=rank, guard=guard or checkpoints.Guard(),
                     resume_from=resume_from,
                     metrics=outputs.make_metrics_callback(out / "metrics.jsonl", spec.hyperparameters.max_steps,
                                                           is_main=rank == 0))
    tasks = {Task.SFT: task_sft.run, Task.CPT: task_cpt.run, Task.CLASSIFICATION: task_classification.run,
             Task.REWARD: task_reward.run, Task.DPO: task_dpo.run, Task.RL: task_rl.run}
    global last_model
    summary = tasks[spec.task](job)
    last_model = job.model
    summary["wall_time_s"] = round(time.time() - started, 2)
    if job.is_main:
        outputs.write_summary(out, summary)
        outputs.finish(out)
        outputs.log(f"outputs complete in {out}")
    return summary


def choose_precision(requested: str, device: str, torch: Any) -> str:
    if requested != "auto":
        return requested
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def _trim_metrics(path: Path, step: int) -> None:
    """On resume, drops the metric lines logged after the checkpoint (those steps run again)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def _quiet_libraries() -> None:
    """Keeps the job log about the job: library chatter (bitsandbytes' CPU notice) off, and progress bars
    off unless stdout is a terminal. TQDM_DISABLE also covers libraries that call tqdm directly (the GGUF
    de-quantization loop in transformers); tqdm reads it when first imported, so this runs first."""
    import warnings

    if not outputs.on_terminal():
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*Could not find a config file.*")
    for name in ("bitsandbytes", "transformers", "peft", "datasets", "trl"):
        logging.getLogger(name).setLevel(logging.ERROR)
