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

from ftlaunch.core import errors


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


@dataclasses.dataclass(frozen=True)
class BackendFacts:
    """What the launcher knows about a backend without importing it: declared as `FACTS` in each backend
    package's `__init__.py` (no SDK or heavy import there) and read through the registry in
    `ftlaunch.backends` by the spec, the CLI's choices, `check`, the planner, the estimator and the catalog."""

    name: str  # the `--cloud` value and the catalog's `target` column
    title: str  # the provider's own name, for people
    cloud: bool  # priced in the catalog and planned by offers (False: this machine)
    startup_min: tuple[float, float]  # provisioning before the image pull, minutes (low, high)
    # the module whose `resolve(spec, job_name)` returns the plan's context (settings, runtime), read at plan
    # time so render stays pure; its TABLE, CHECK, FALLBACKS and credentials() feed `ftlaunch check`
    settings: str
    # what this target cannot do, each with the reason and the alternative: {Capability: "...; use ..."}
    unsupported: dict[Capability, str] = dataclasses.field(default_factory=dict)
    extra: str = ""  # the pip extra that installs its SDK: pip install 'ftlaunch[<extra>]'
    sdk: tuple[str, ...] = ()  # modules that extra provides (looked for, never imported, by `check`)
    sdk_label: str = ""  # how `check` names them
    # storage URIs its jobs read a dataset or model from, and how each reaches the job: {"s3": "an input
    # channel ..."}; any other scheme is refused at plan time (local files are uploaded, hub names downloaded)
    reads: dict[str, str] = dataclasses.field(default_factory=dict)

    def refusals(self, needs: set[Capability], uris: dict[str, str] | None = None) -> list[str]:
        """One line per capability in `needs` this target lacks, with its reason, and per storage URI in `uris`
        ({spec field: URI}) its jobs cannot read (empty: it serves them all)."""
        out = [f"{self.name} cannot do {c.value}: {self.unsupported[c]}"
               for c in sorted(needs, key=lambda c: c.value) if c in self.unsupported]
        for field, uri in (uris or {}).items():
            scheme = uri.split("://", 1)[0].lower()
            if scheme not in self.reads:
                where = f"a {' or '.join(s + '://' for s in self.reads)} URI" if self.reads else "a local path"
                out.append(f"{self.name} cannot read {scheme}:// data ({field} {uri}): give {where}, or a local "
                           "path (it is uploaded), or pick a cloud that reads it")
        return out


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


# A folder `fetch` wrote holds this file: the job it came from and the sha256 of every file it put there.
FETCH_MARKER = ".ftlaunch-fetch.json"
STAGING_PREFIX = ".ftlaunch-partial-"


def fetch_verified(dest: Path, download: Callable[[Path], None], job: str = "") -> Path:
    """Runs download(staging) into a fresh folder, verifies it against manifest.json, then moves it into
    dest. Never deletes or overwrites a user's files: dest must not exist, be an empty folder, or hold exactly
    what an earlier fetch wrote there (FETCH_MARKER lists it, and every file still has the sha256 recorded).
    Anything else is refused before downloading. A refused or failed fetch leaves nothing behind."""
    import shutil
    import tempfile

    from ftlaunch.core import manifest

    dest = Path(os.path.abspath(Path(dest).expanduser()))
    previous = fetched_before(dest)  # raises UserError for a folder holding anything else
    # staged beside a new dest (one rename makes it appear complete), or inside an existing one (same disk)
    where = dest.parent if previous is None else dest
    try:
        where.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=where))
    except OSError as exc:
        raise errors.UserError(f"cannot write to {where}: {exc.strerror}.",
                               hint="pass --dest with a folder you can write to") from None
    try:
        download(staging)
        manifest.verify(staging)
        marker = {"job": job, "files": {rel: [manifest.sha256(staging / rel)] for rel in _files(staging)}}
        if previous is None:
            manifest.atomic_write_text(staging / FETCH_MARKER, json.dumps(marker, indent=2, sort_keys=True))
            try:
                os.rename(staging, dest)
            except OSError:
                raise errors.UserError(f"--dest {dest} appeared while fetching; fetch changed nothing in it.",
                                       hint="fetch again, or pass another --dest") from None
        else:
            _move_into(staging, dest, previous, marker)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def unlisted(folder: Path, data: dict[str, Any]) -> list[str]:
    """Files in a fetched folder that its manifest does not list (not verified), besides the manifest and
    the fetch marker."""
    from ftlaunch.core import manifest

    return [rel for rel in _files(Path(folder)) if rel not in data["files"] and rel not in (manifest.NAME, FETCH_MARKER)]


def _files(folder: Path) -> list[str]:
    """Every file under folder, relative, sorted; symbolic links count as files (never followed)."""
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(STAGING_PREFIX)]
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            out.append(Path(os.path.join(root, name)).relative_to(folder).as_posix())
    return sorted(out)


def fetched_before(dest: Path) -> dict[str, list[str]] | None:
    """None if dest does not exist; else the files an earlier fetch wrote there ({} for an empty folder).
    Raises UserError if dest holds anything that fetch did not write, or a file changed since."""
    from ftlaunch.core import manifest

    if not os.path.lexists(dest):
        return None
    if dest.is_symlink() or not dest.is_dir():
        raise errors.UserError(f"--dest {dest} exists and is not a folder; fetch left it unchanged.",
                               hint="pass --dest with a new or empty folder")
    present = _files(dest)
    if not present and not any(dest.iterdir()):
        return {}
    refuse = errors.UserError(
        f"--dest {dest} is not empty and was not written by `ftlaunch fetch`; fetch changed nothing in it.",
        hint="pass --dest with a new or empty folder (fetch only replaces a folder it wrote itself)")
    try:
        marker = json.loads((dest / FETCH_MARKER).read_text())
        written: dict[str, list[str]] = dict(marker["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise refuse from None
    changed = [rel for rel in present if rel != FETCH_MARKER
               and (rel not in written or os.path.islink(dest / rel) or manifest.sha256(dest / rel) not in written[rel])]
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise errors.UserError(
            f"--dest {dest} holds files an earlier fetch did not write, or that changed since: {shown}; "
            "fetch changed nothing in it.",
            hint="move those files away, or pass --dest with a new or empty folder")
    return written


def _move_into(staging: Path, dest: Path, previous: dict[str, list[str]], marker: dict[str, Any]) -> None:
    """Replaces what an earlier fetch wrote in dest with the verified files in staging, file by file. The
    marker first lists both versions, so an interrupted move still leaves a folder the next fetch accepts."""
    from ftlaunch.core import manifest

    both = {rel: sorted(set(previous.get(rel, [])) | set(marker["files"].get(rel, [])))
            for rel in set(previous) | set(marker["files"])}
    manifest.atomic_write_text(dest / FETCH_MARKER, json.dumps({**marker, "files": both}, indent=2, sort_keys=True))
    for rel in previous:
        if rel not in marker["files"] and os.path.lexists(dest / rel):
            os.remove(dest / rel)
    for rel in marker["files"]:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, dest / rel)
    for rel in previous:  # folders that held only files of the old copy
        for parent in Path(rel).parents:
            if parent == Path("."):
                break
            try:
                os.rmdir(dest / parent)  # only if empty
            except OSError:
                break
    manifest.atomic_write_text(dest / FETCH_MARKER, json.dumps(marker, indent=2, sort_keys=True))


def inside(folder: Path, rel: str, source: str) -> Path:
    """folder/rel for a downloaded object, with its parent folders made; refuses names that escape folder."""
    target = (folder / rel).resolve()
    if folder.resolve() not in target.parents:
        raise errors.UserError(f"refusing to write {source} outside {folder}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


class Backend(abc.ABC):
    """One target. Subclasses are named <Provider>Backend and live in ftlaunch/backends/<name>/backend.py."""

    name: ClassVar[str]  # its FACTS.name; what it cannot do is FACTS.unsupported, read by the planner

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


def finding(what: str, ok: bool, detail: str = "", fix: str = "") -> dict[str, Any]:
    """One line of `ftlaunch check`: what was looked for, whether it is there, what was found, how to fix it."""
    return {"what": what, "ok": bool(ok), "detail": detail, "fix": fix}


# A setting the user has not configured renders as `unset-<its environment variable>`, so a dry run
# shows a complete request without credentials and submit can name exactly what to set.
_UNSET = re.compile(r"unset-(ftlaunch[-_][a-z0-9_-]*[a-z0-9])", re.IGNORECASE)


def placeholder(env_name: str, lower: bool = False) -> str:
    text = f"unset-{env_name}"
    return text.lower().replace("_", "-") if lower else text


def is_placeholder(value: str) -> bool:
    """Whether a setting still holds the placeholder of an unconfigured value (`unset-ftlaunch-...`)."""
    return _UNSET.search(value) is not None


# What providers answer when they have no capacity, or the account no quota, for an offer right now: a launch
# then tries the plan's next offer (failover). Codes and phrases from each provider's documented errors:
# SageMaker CreateTrainingJob ResourceLimitExceeded and a job's "CapacityError: Unable to provision requested
# ML compute capacity"; EC2 InsufficientInstanceCapacity; Vertex AI / Compute Engine RESOURCE_EXHAUSTED,
# ZONE_RESOURCE_POOL_EXHAUSTED, "stockout" and a job's "The zone ... does not have enough resources available";
# Azure ML QuotaExceeded / "not enough quota" and
# SkuNotAvailable; SkyPilot ResourcesUnavailableError and FAILED_NO_RESOURCE.
_CAPACITY = re.compile(
    r"ResourceLimitExceeded|CapacityError|InsufficientInstanceCapacity|InsufficientCapacity|RESOURCE_EXHAUSTED|"
    r"ResourceExhausted|ZONE_RESOURCE_POOL_EXHAUSTED|stockout|QuotaExceeded|quota exceeded|exceeds? quota|"
    r"not enough quota|does not have enough resources|"
    r"insufficient quota|SkuNotAvailable|ResourcesUnavailableError|FAILED_NO_RESOURCE", re.IGNORECASE)


def capacity_refusal(text: str | None) -> bool:
    """True when a provider's error or a job's failure reason says "no capacity or quota for this offer now"
    (not the user's mistake, not a bug): the case a launch fails over to the next offer for."""
    return bool(text and _CAPACITY.search(text))


def placeholders(request: JobRequest) -> list[str]:
    """The settings (environment variable names) a rendered request still holds placeholders for."""
    return sorted({m.group(1).upper().replace("-", "_") for m in _UNSET.finditer(json.dumps(request.to_json()))})


def refuse_placeholders(request: JobRequest) -> None:
    """Raises UserError naming every unconfigured setting a rendered request still carries."""
    found = placeholders(request)
    if found:
        raise errors.UserError(
            f"--cloud {request.backend} is not configured: the request still has placeholders for "
            f"{', '.join(found)}.",
            hint=f"export {found[0]}=... (or set it in $FTLAUNCH_HOME/config.yaml); `ftlaunch check` lists "
                 "what each backend needs")


def settings(section: str, table: dict[str, tuple[str, Any]], env: dict[str, str] | None = None) -> dict[str, Any]:
    """A backend's settings: each `key: (ENVIRONMENT_VARIABLE, default)` from the environment, else from
    `section:` in $FTLAUNCH_HOME/config.yaml, else the default. Read at plan time, never in render."""
    from ftlaunch.core import paths

    env = os.environ if env is None else env
    path = paths.home() / "config.yaml"
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
    (a hub id). A local file or folder also gets the sha256 of its bytes (a folder: over its files' names and
    bytes), which names its place in storage. Reads the file system, so the planner calls it, not render."""
    from ftlaunch.core import models

    refs = {"model": spec.model, "train": spec.dataset.path, "eval": spec.dataset.eval_path}
    out = {}
    digests = DigestCache()
    for channel, ref in refs.items():
        if not ref:
            continue
        # a model shipped in a pip package here is a local file to upload: the job image lacks that package
        path = models.package_path(ref) if ref.startswith(models.PKG_PREFIX) else Path(ref).expanduser()
        if "://" in ref:
            out[channel] = {"kind": "uri", "ref": ref}
        elif path.is_file():
            out[channel] = {"kind": "file", "ref": str(path), "name": path.name, "bytes": path.stat().st_size,
                            "sha256": digests.sha256(path)}
        elif path.is_dir():
            files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
            file_sha256 = {rel: digests.sha256(path / rel) for rel in files}
            out[channel] = {"kind": "dir", "ref": str(path), "files": files,
                            "bytes": sum((path / f).stat().st_size for f in files),
                            "file_sha256": file_sha256, "sha256": folder_sha256(file_sha256)}
        elif channel == "model":
            out[channel] = {"kind": "ref", "ref": ref}  # a hub id the job downloads
        else:
            out[channel] = {"kind": "ref", "ref": ref}  # a hub dataset name
    digests.save()
    return out


def place_inputs(inputs: dict[str, dict[str, Any]], store: str,
                 in_job: Callable[[str, str], str]) -> tuple[dict[str, str], list[dict[str, str]], dict[str, str]]:
    """Where each local input goes and how the job sees it. Content-addressed: a local file or folder goes
    under `<store>sha256-<first 16 hex of its digest>/` (store is a storage URI prefix ending in /), so a
    relaunch, or another job with the same bytes, names the same objects and submit uploads nothing again.
    `in_job(channel, folder_uri)` is the channel's folder inside the job. Returns (new reference per channel,
    uploads, channel -> storage URI to mount). Pure."""
    refs: dict[str, str] = {}
    uploads: list[dict[str, str]] = []
    mounts: dict[str, str] = {}
    for channel, info in inputs.items():
        if info["kind"] not in ("file", "dir"):
            continue
        folder = f"{store}{DIGEST_PREFIX}{info['sha256'][:DIGEST_CHARS]}/"
        mounts[channel] = folder
        if info["kind"] == "file":
            items = [{"source": info["ref"], "destination": folder + info["name"], "sha256": info["sha256"]}]
            refs[channel] = f"{in_job(channel, folder)}/{info['name']}"
        else:
            items = [{"source": f"{info['ref']}/{rel}", "destination": folder + rel,
                      "sha256": info["file_sha256"][rel]} for rel in info["files"]]
            refs[channel] = in_job(channel, folder)
        seen = {u["destination"] for u in uploads}  # the same file as train and eval is uploaded once
        uploads += [item for item in items if item["destination"] not in seen]
    return refs, uploads, mounts


DIGEST_PREFIX = "sha256-"
DIGEST_CHARS = 16
DIGEST_CACHE = "digests.json"


def folder_sha256(file_sha256: dict[str, str]) -> str:
    """The digest of a folder: sha256 over each file's relative name and sha256, in name order."""
    import hashlib

    lines = "".join(f"{rel}\0{digest}\n" for rel, digest in sorted(file_sha256.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


class DigestCache:
    """sha256 of local files, remembered in $FTLAUNCH_HOME/digests.json by absolute path, size and mtime_ns,
    so a large dataset is hashed once, not on every plan or dry run. A changed file (size or mtime) is
    hashed again; a cache that cannot be read or written only costs the hashing."""

    def __init__(self) -> None:
        from ftlaunch.core import paths

        self.path = paths.home() / DIGEST_CACHE
        try:
            self.entries: dict[str, list[Any]] = dict(json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            self.entries = {}
        self.changed = False

    def sha256(self, path: Path) -> str:
        from ftlaunch.core import manifest

        path = Path(os.path.abspath(path))
        st = path.stat()
        key = str(path)
        known = self.entries.get(key)
        if isinstance(known, list) and len(known) == 3 and known[:2] == [st.st_size, st.st_mtime_ns]:
            return str(known[2])
        digest = manifest.sha256(path)
        self.entries[key] = [st.st_size, st.st_mtime_ns, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        if not self.changed:
            return
        from ftlaunch.core import manifest

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            manifest.atomic_write_text(self.path, json.dumps(self.entries, sort_keys=True))
        except OSError:
            pass  # the next plan hashes again


def job_spec(spec_json: dict[str, Any], refs: dict[str, str]) -> dict[str, Any]:
    """The spec the job reads: the resolved spec with local paths replaced by their places in the job."""
    data = json.loads(json.dumps(spec_json))
    data.pop("notify", None)  # the launcher notifies; a job has nothing to do with it
    if "model" in refs:
        data["model"] = refs["model"]
    if "train" in refs:
        data["dataset"]["path"] = refs["train"]
    if "eval" in refs:
        data["dataset"]["eval_path"] = refs["eval"]
    if data.get("output", {}).get("path") and "://" not in data["output"]["path"]:
        data["output"]["path"] = None  # a local output folder means nothing inside a cloud job
    return data


# Uploads are content-addressed (see place_inputs): an object already under an input's name, with the same
# size (and our sha256 in its metadata where it carries one), is those bytes, uploaded before. Every provider
# makes an object visible under its name only once its upload completes (S3 CompleteMultipartUpload, the last
# chunk of a GCS resumable upload, Azure's Put Block List), and each backend sends a file in one SDK call to
# its final name, never in pieces we commit ourselves, so a partial upload is never taken for a complete one.
REUSING = "reusing {destination} (same bytes, uploaded before)"


def check_unchanged(item: dict[str, str]) -> None:
    """Raises UserError if a local input's bytes changed since the plan named its destination by their digest:
    uploading them under that name would store other bytes than the name says."""
    if "sha256" not in item:
        return
    digests = DigestCache()
    try:
        now = digests.sha256(Path(item["source"]))
    except OSError as exc:
        raise errors.UserError(f"cannot read {item['source']}: {exc.strerror}.",
                               hint="check that the file still exists, then launch again") from None
    digests.save()
    if now != item["sha256"]:
        raise errors.UserError(f"{item['source']} changed after the plan named its upload by its digest.",
                               hint="launch again (not from an old --dry-run request), so the plan hashes it anew")


def uploaded_before(item: dict[str, str], size: int | None, metadata: dict[str, str] | None) -> bool:
    """Whether the object found at item's destination (its size and metadata; size None when there is none)
    holds the item's bytes: same size and, where the object records one, the same sha256."""
    if size is None or "sha256" not in item:
        return False
    if size != Path(item["source"]).stat().st_size:
        return False
    recorded = (metadata or {}).get("sha256")
    return recorded is None or recorded == item["sha256"]
