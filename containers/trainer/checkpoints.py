"""Checkpoints that survive: written atomically, found again on restart, and saved on SIGTERM (preemption).

A checkpoint is written under `<checkpoint_dir>/.staging/checkpoint-N` by the Trainer, renamed to
`<checkpoint_dir>/checkpoint-N`, and only then marked complete with a `COMPLETE` file. On start the
trainer resumes from the newest checkpoint that has the marker; anything else (a staging folder, a
folder without a marker because the copy to durable storage was cut) is never loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from ftlaunch import manifest

PREFIX = "checkpoint-"
MARKER = "COMPLETE"
STAGING = ".staging"
KEEP = 2  # complete checkpoints kept; older ones are removed once a newer one is complete
# Exit status after SIGTERM: a checkpoint was saved; `ftlaunch resume JOB` resumes it (EX_TEMPFAIL).
EXIT_PREEMPTED = 75


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint was saved if training had started."""


def complete(root: str | Path) -> list[Path]:
    """Complete checkpoints under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        step = _step(path.name)
        if step is not None and path.is_dir() and (path / MARKER).is_file():
            found.append((step, path))
    return [p for _, p in sorted(found)]


def latest(root: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = complete(root)
    return found[-1] if found else None


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
            self._ftlaunch_staging = True
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._ftlaunch_staging = False
            self.accelerator.wait_for_everyone()
            if self.is_world_process_zero():
                publish(root / STAGING / name, root / name, self.state.global_step)
            self.accelerator.wait_for_everyone()

    AtomicCheckpoints.__name__ = f"Atomic{trainer_cls.__name__}"
    return AtomicCheckpoints


def publish(staged: Path, final: Path, step: int) -> None:
    """Renames a fully written checkpoint into place, marks it complete, and prunes old ones."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(staged, final)
    _fsync_dir(final.parent)
    manifest.atomic_write_text(final / MARKER, json.dumps({"step": step, "time": time.time()}))
    for old in complete(final.parent)[:-KEEP]:
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
