"""The contract every backend implements, and the plain data that flows through it."""

from __future__ import annotations

import abc
import dataclasses
import enum
import json
import os
import random
import re
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, TypeVar

from ftlaunch import errors


class State(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def done(self) -> bool:
        return self in (State.SUCCEEDED, State.FAILED, State.CANCELLED)


class Capability(str, enum.Enum):
    GPU = "gpu"
    MULTI_NODE = "multi_node"
    SPOT = "spot"
    REGION = "region"
    MAX_RUNTIME = "max_runtime"
    DOCKER = "docker"


@dataclasses.dataclass
class JobRequest:
    """Exactly what `submit` sends: the provider's own request body, plus local files it uploads first.

    `payload` is the provider's request (CreateTrainingJob JSON, a Vertex CustomJob, an Azure ML
    command job, a SkyPilot task, or the local process's argv and environment). Secrets appear only
    by name; their values are read from the launcher's environment or the provider's secret store
    at submit or run time and never stored here.
    """

    backend: str
    job_name: str
    payload: dict[str, Any]
    uploads: list[dict[str, str]] = dataclasses.field(default_factory=list)  # {"source": ..., "destination": ...}
    secrets: list[str] = dataclasses.field(default_factory=list)
    # facts submit copies into the handle and never sends (region, price per hour for the actual cost)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JobRequest":
        return cls(**data)


@dataclasses.dataclass
class JobHandle:
    """Enough to find a submitted job again from any shell: stored in the job records."""

    backend: str
    job_name: str
    provider_id: str
    output_uri: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class JobStatus:
    state: State
    reason: str | None = None  # the provider's own words for why it is in this state
    provider_state: str | None = None
    exit_code: int | None = None
    actual_cost: float | None = None  # USD, where the provider reports billable time


def no_outputs_yet(handle: JobHandle, status: JobStatus) -> errors.UserError:
    """The error `fetch` raises for a job that has not succeeded (yet)."""
    return errors.UserError(f"job {handle.job_name} has no complete outputs yet ({status.state.value}"
                            f"{': ' + status.reason if status.reason else ''}).",
                            hint="wait for it to succeed (`ftlaunch status`), then fetch again")


def fetch_verified(dest: Path, download: Callable[[Path], None]) -> Path:
    """Runs download(staging) into a folder beside dest, verifies manifest.json there, then swaps it in:
    dest is either the previous complete copy or the new verified one, never half-written."""
    import shutil

    from ftlaunch import manifest

    dest = Path(dest)
    staging = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    download(staging)
    manifest.verify(staging)
    if dest.exists():
        shutil.rmtree(dest)
    staging.replace(dest)
    return dest


def inside(folder: Path, rel: str, source: str) -> Path:
    """folder/rel for a downloaded object, with its parent folders made; refuses names that escape folder."""
    target = (folder / rel).resolve()
    if folder.resolve() not in target.parents:
        raise errors.UserError(f"refusing to write {source} outside {folder}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


class Backend(abc.ABC):
    """One target. Subclasses are named <Provider>Backend and live in ftlaunch/backends/<name>/backend.py."""

    name: ClassVar[str]
    # What this target cannot do, each with the reason and the alternative: {Capability: "...; use ..."}.
    UNSUPPORTED: ClassVar[dict[Capability, str]] = {}

    def check_supported(self, needs: set[Capability]) -> None:
        """Raises one readable UserError naming every capability the plan needs that this target lacks."""
        missing = [(c, self.UNSUPPORTED[c]) for c in needs if c in self.UNSUPPORTED]
        if missing:
            problems = [errors.Problem(message=reason, field=cap.value) for cap, reason in missing]
            raise errors.UserError(f"--cloud {self.name} cannot run this job.", problems=problems)

    @abc.abstractmethod
    def render(self, plan: Any) -> JobRequest:
        """The request `submit` would send for this plan. Pure: no network, clock or environment reads."""

    @abc.abstractmethod
    def submit(self, request: JobRequest) -> JobHandle:
        """Sends exactly `request`; returns as soon as the provider has the job. Submitting the same
        job name twice does not create a second job."""

    @abc.abstractmethod
    def status(self, handle: JobHandle) -> JobStatus:
        """One poll, mapped onto State with the provider's reason. Does not block."""

    @abc.abstractmethod
    def logs(self, handle: JobHandle, follow: bool = False) -> Iterator[str]:
        """The job's stdout and stderr lines; with follow, keeps yielding until the job ends."""

    @abc.abstractmethod
    def cancel(self, handle: JobHandle) -> None:
        """Stops the job; returns silently if it has already ended."""

    @abc.abstractmethod
    def fetch(self, handle: JobHandle, dest: Path) -> Path:
        """Copies the job's outputs into dest, verifies every file against manifest.json, returns dest."""


# --------------------------------------------------------------------------- helpers for cloud backends

T = TypeVar("T")


def with_retries(call: Callable[[], T], *, retryable: Callable[[BaseException], bool], attempts: int = 6,
                 base_s: float = 0.5, cap_s: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 before_retry: Callable[[], T | None] | None = None) -> T:
    """Calls `call`, retrying throttling and server errors (as `retryable` says) with capped exponential
    backoff and full jitter. `before_retry` runs before each new attempt; if it returns a value, that is
    the result (a submit uses it to find the job an earlier, unanswered attempt created)."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - classified by `retryable`
            if attempt == attempts - 1 or not retryable(exc):
                raise
        sleep(random.uniform(0, min(cap_s, base_s * 2 ** attempt)))
        if before_retry is not None:
            found = before_retry()
            if found is not None:
                return found
    raise AssertionError("unreachable")


# A setting the user has not configured renders as `unset-<its environment variable>`, so a dry run
# shows a complete request without credentials and submit can name exactly what to set.
_UNSET = re.compile(r"unset-(ftlaunch[-_][a-z0-9_-]*[a-z0-9])", re.IGNORECASE)


def placeholder(env_name: str, lower: bool = False) -> str:
    text = f"unset-{env_name}"
    return text.lower().replace("_", "-") if lower else text


def refuse_placeholders(request: JobRequest) -> None:
    """Raises UserError naming every unconfigured setting a rendered request still carries."""
    found = sorted({m.group(1).upper().replace("-", "_") for m in _UNSET.finditer(json.dumps(request.to_json()))})
    if found:
        raise errors.UserError(
            f"--cloud {request.backend} is not configured: the request still has placeholders for "
            f"{', '.join(found)}.",
            hint=f"export {found[0]}=... (or set it in $FTLAUNCH_HOME/config.yaml); `ftlaunch check` lists "
                 "what each backend needs")


def settings(section: str, table: dict[str, tuple[str, Any]], env: dict[str, str] | None = None) -> dict[str, Any]:
    """A backend's settings: each `key: (ENVIRONMENT_VARIABLE, default)` from the environment, else from
    `section:` in $FTLAUNCH_HOME/config.yaml, else the default. Read at plan time, never in render."""
    from ftlaunch import jobs

    env = os.environ if env is None else env
    path = jobs.home() / "config.yaml"
    from_file: dict[str, Any] = {}
    if path.exists():
        import yaml

        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise errors.UserError(f"{path} is not valid YAML: {exc}.", hint="fix or remove it") from None
        from_file = data.get(section) or {}
        if not isinstance(from_file, dict):
            raise errors.UserError(f"{path}: `{section}:` must be a mapping of settings.")
    out = {}
    for key, (var, default) in table.items():
        value = env.get(var) or from_file.get(key)
        out[key] = default if value in (None, "") else value
    out["secret_ids"] = dict(from_file.get("secrets") or {})
    return out


def local_inputs(spec: Any) -> dict[str, dict[str, Any]]:
    """Facts about the spec's model, dataset and eval files that a cloud job must get: for each, whether it
    is a local file, a local folder (with its files), a storage URI, or a reference the job resolves itself
    (a hub id). Reads the file system, so the planner calls it, not render."""
    from ftlaunch import models

    refs = {"model": spec.model, "train": spec.dataset.path, "eval": spec.dataset.eval_path}
    out = {}
    for channel, ref in refs.items():
        if not ref:
            continue
        # a model shipped in a pip package here is a local file to upload: the job image lacks that package
        path = models.package_path(ref) if ref.startswith(models.PKG_PREFIX) else Path(ref).expanduser()
        if "://" in ref:
            out[channel] = {"kind": "uri", "ref": ref}
        elif path.is_file():
            out[channel] = {"kind": "file", "ref": str(path), "name": path.name, "bytes": path.stat().st_size}
        elif path.is_dir():
            files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
            out[channel] = {"kind": "dir", "ref": str(path), "files": files,
                            "bytes": sum((path / f).stat().st_size for f in files)}
        elif channel == "model":
            out[channel] = {"kind": "ref", "ref": ref}  # a hub id the job downloads
        else:
            out[channel] = {"kind": "ref", "ref": ref}  # a hub dataset name
    return out


def place_inputs(inputs: dict[str, dict[str, Any]], remote: Callable[[str], str],
                 in_job: Callable[[str], str]) -> tuple[dict[str, str], list[dict[str, str]], dict[str, str]]:
    """Where each local input goes and how the job sees it. `remote(channel)` is the storage URI prefix
    of a channel (ending in /), `in_job(channel)` its folder inside the job. Returns (new reference per
    channel, uploads, channel -> storage URI to mount). Pure."""
    refs: dict[str, str] = {}
    uploads: list[dict[str, str]] = []
    mounts: dict[str, str] = {}
    for channel, info in inputs.items():
        if info["kind"] == "file":
            uploads.append({"source": info["ref"], "destination": remote(channel) + info["name"]})
            mounts[channel] = remote(channel)
            refs[channel] = f"{in_job(channel)}/{info['name']}"
        elif info["kind"] == "dir":
            uploads += [{"source": f"{info['ref']}/{rel}", "destination": remote(channel) + rel}
                        for rel in info["files"]]
            mounts[channel] = remote(channel)
            refs[channel] = in_job(channel)
    return refs, uploads, mounts


def job_spec(spec_json: dict[str, Any], refs: dict[str, str]) -> dict[str, Any]:
    """The spec the job reads: the resolved spec with local paths replaced by their places in the job."""
    data = json.loads(json.dumps(spec_json))
    if "model" in refs:
        data["model"] = refs["model"]
    if "train" in refs:
        data["dataset"]["path"] = refs["train"]
    if "eval" in refs:
        data["dataset"]["eval_path"] = refs["eval"]
    if data.get("output", {}).get("path") and "://" not in data["output"]["path"]:
        data["output"]["path"] = None  # a local output folder means nothing inside a cloud job
    return data
