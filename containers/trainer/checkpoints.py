"""Checkpoints that survive: complete before they count, found again on restart by every rank alike, and
saved on SIGTERM (preemption).

The Trainer writes a checkpoint under `<checkpoint_dir>/.staging/checkpoint-N` (each host its own files: with
several hosts, each holds its ranks' shards and RNG states on its own disk, as SageMaker's /opt/ml/checkpoints
and SkyPilot's node-local caches are). After a barrier, each host's first process moves its staged files into
`<checkpoint_dir>/checkpoint-N`; the processes then share what they moved, and the completion marker `COMPLETE`
lists every file of the step, from every host, with its size. A checkpoint counts as complete only when its
marker is there AND every listed file is present with that size, so completion does not rest on a directory
rename (a copy and a delete on Cloud Storage FUSE or blobfuse), and a host whose copy to durable storage was
cut cannot make a step look complete. On start, all ranks agree through the process group on the newest step
complete on every host (resume_point), and resume from that one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from ftlaunch.core import manifest

PREFIX = "checkpoint-"
MARKER = "COMPLETE"
STAGING = ".staging"
KEEP = 2  # complete checkpoints kept; older ones are removed once a newer one is complete
# Exit status after SIGTERM: a checkpoint was saved; `ftlaunch resume JOB` resumes it (EX_TEMPFAIL).
EXIT_PREEMPTED = 75


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint was saved if training had started."""


def complete(root: str | Path) -> list[Path]:
    """Complete checkpoints under root, oldest first: a marker, and every file it lists present with its size."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        step = _step(path.name)
        if step is not None and path.is_dir() and _verified(path):
            found.append((step, path))
    return [p for _, p in sorted(found)]


def _verified(path: Path) -> bool:
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    files = marker.get("files") if isinstance(marker, dict) else None
    if files is None:
        return True  # a marker from before file lists: the directory rename vouched for it
    for rel, size in files.items():
        try:
            if (path / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def latest(root: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = complete(root)
    return found[-1] if found else None


def resume_point(root: str | Path) -> Path | None:
    """The checkpoint every rank resumes from: the newest step complete on every host. Without a process group
    (one process) that is latest(root); with one, the ranks share their complete steps and take the newest
    common to all, so no rank starts from a step another lacks. Called by every rank."""
    mine = {step_of(p) for p in complete(root)}
    everyone = _all_gather(sorted(mine))
    if everyone is None:
        return latest(root)
    common = set(everyone[0]).intersection(*everyone[1:])
    return Path(root) / f"{PREFIX}{max(common)}" if common else None


def _all_gather(value: Any) -> list[Any] | None:
    """Every rank's `value`, or None when there is no process group of more than one process."""
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def step_of(path: Path) -> int:
    return _step(Path(path).name) or 0


def _step(name: str) -> int | None:
    if not name.startswith(PREFIX):
        return None
    tail = name[len(PREFIX):]
    return int(tail) if tail.isdigit() else None


def atomic(trainer_cls: type) -> type:
    """A subclass of a transformers/trl Trainer class whose checkpoints are written atomically."""

    class AtomicCheckpoints(trainer_cls):  # type: ignore[misc, valid-type]
        def _get_output_dir(self, trial: Any) -> str:
            if getattr(self, "_ftlaunch_staging", False):
                return os.path.join(self.args.output_dir, STAGING)
            return super()._get_output_dir(trial)

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            root = Path(self.args.output_dir)
            name = f"{PREFIX}{self.state.global_step}"
            first_on_host = self.args.local_process_index == 0
            if first_on_host:  # what a killed attempt left at this step is rewritten, never mixed in
                shutil.rmtree(root / name, ignore_errors=True)
            self._ftlaunch_staging = True
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._ftlaunch_staging = False
            self.accelerator.wait_for_everyone()
            moved = move_staged(root / STAGING / name, root / name) if first_on_host else {}
            everyone = _all_gather(moved)
            files = {k: v for part in (everyone or [moved]) for k, v in part.items()}
            if first_on_host:
                publish(root / name, self.state.global_step, files)
            self.accelerator.wait_for_everyone()

    AtomicCheckpoints.__name__ = f"Atomic{trainer_cls.__name__}"
    return AtomicCheckpoints


def move_staged(staged: Path, final: Path) -> dict[str, int]:
    """Moves this host's staged files of one step into the step's folder; {relative path: size} of what it
    moved. File by file, so hosts sharing one folder (a bucket mount) and hosts with their own both work."""
    moved: dict[str, int] = {}
    if not staged.is_dir():
        return moved
    for path in sorted(staged.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(staged).as_posix()
        target = final / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        size = path.stat().st_size
        try:
            os.replace(path, target)
        except FileNotFoundError:
            continue  # another host on the same mount moved it
        moved[rel] = size
    shutil.rmtree(staged, ignore_errors=True)
    _fsync_dir(final)
    return moved


def publish(final: Path, step: int, files: dict[str, int]) -> None:
    """Marks a checkpoint complete, listing every file of the step (from every host) with its size, then
    prunes older complete ones."""
    final.mkdir(parents=True, exist_ok=True)
    manifest.atomic_write_text(final / MARKER, json.dumps({"step": step, "files": files}, sort_keys=True))
    marked = sorted((step_of(p), p) for p in final.parent.iterdir() if _step(p.name) is not None and (p / MARKER).is_file())
    for _, old in marked[:-KEEP]:  # by marker alone: on a host's own disk the other hosts' files never arrive
        shutil.rmtree(old, ignore_errors=True)


def clean_staging(root: str | Path) -> None:
    """Removes what a killed process left half-written."""
    shutil.rmtree(Path(root) / STAGING, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Guard:
    """Turns SIGTERM into a checkpoint and a clean stop. Before training starts it stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self.training = False
        self._previous: Any = None

    def install(self) -> "Guard":
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. some test runners)
            pass
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        if not self.training:
            raise Preempted("SIGTERM before training started")


def make_callback(guard: Guard, save_minutes: float | None) -> Any:
    """A TrainerCallback that saves every `save_minutes` and on SIGTERM (then stops training).

    With several processes the decision is taken together (an all-reduce of the flags), so every rank
    saves and stops at the same step."""
    from transformers import TrainerCallback

    class CheckpointCallback(TrainerCallback):
        def __init__(self) -> None:
            self.last_save = time.monotonic()

        def on_train_begin(self, args, state, control, **kwargs):
            guard.training = True
            self.last_save = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            due = bool(save_minutes) and time.monotonic() - self.last_save >= save_minutes * 60
            stop, due = _agree(guard.requested, due)
            if stop:
                guard.requested = True
                control.should_save = True
                control.should_training_stop = True
            elif due:
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kwargs):
            self.last_save = time.monotonic()

        def on_train_end(self, args, state, control, **kwargs):
            guard.training = False

    return CheckpointCallback()


def _agree(stop: bool, due: bool) -> tuple[bool, bool]:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return stop, due
    flags = torch.tensor([float(stop), float(due)])
    if dist.get_backend() == "nccl":
        flags = flags.cuda()
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0].item()), bool(flags[1].item())
