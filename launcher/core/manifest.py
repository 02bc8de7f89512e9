"""manifest.json: the sha256 and size of every output file, written last by the trainer and checked on fetch."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ftlaunch.core import errors

NAME = "manifest.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Hashes every file under folder (except manifest.json and paths starting with `skip`) and writes the
    manifest atomically, so a reader sees either no manifest or a complete one."""
    folder = Path(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == NAME or rel.endswith(".tmp") or rel.startswith(skip):
            continue
        files[rel] = {"size": path.stat().st_size, "sha256": sha256(path)}
    data = {"version": 1, "files": files}
    atomic_write_text(folder / NAME, json.dumps(data, indent=2, sort_keys=True))
    return data


def verify(folder: Path) -> dict[str, Any]:
    """Checks every file the manifest lists; raises UserError naming each missing or changed file."""
    folder = Path(folder)
    path = folder / NAME
    if not path.exists():
        raise errors.UserError(f"{path} is missing: the job did not finish writing its outputs.",
                               hint="check `ftlaunch logs` for the job; outputs are complete only once manifest.json exists")
    data = json.loads(path.read_text())
    problems = []
    for rel, want in data["files"].items():
        file = folder / rel
        if not file.exists():
            problems.append(errors.Problem(f"{rel} is listed in the manifest but missing"))
        elif file.stat().st_size != want["size"] or sha256(file) != want["sha256"]:
            problems.append(errors.Problem(f"{rel} differs from the manifest (size or sha256)"))
    if problems:
        raise errors.UserError(f"outputs in {folder} do not match manifest.json.", problems=problems,
                               hint="fetch again; if it persists the job's storage was changed after it finished")
    return data


def atomic_write_text(path: Path, text: str) -> None:
    """Writes text to path through a temporary file and a rename: never half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
