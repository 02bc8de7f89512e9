"""AzureMLBackend: submits the rendered command job through azure-ai-ml's MLClient, and polls, streams,
cancels and fetches it; files go to and from the workspace's datastore through azure-storage-blob.

How the request is sent: the payload is the job YAML's own form; `azure.ai.ml.load_job` parses it (Azure
ML's schema, as `az ml job create -f` does) and `MLClient.jobs.create_or_update` sends it. The SDK
registers the inline image as an anonymous environment version, then PUTs jobs/<name>.

Retries: azure-core retries transport errors and 5xx answers itself; throttling (429) and what is left
are retried by `base.with_retries`, and before each new create the backend asks for the job by name
(names are unique in a workspace), so a retried submit never makes a second job; a create refused because
the name is taken (an earlier attempt created it) returns that job. Submitting a name that already has a
job returns that job.

Status reasons, log files and start/end times come from the run history service (`RunDetails`), which
MLClient reaches through the workspace's discovery URL: the same call `MLClient.jobs.stream` makes.

Endpoints (emulators, sovereign clouds): AZUREML_DEV_URL_MFE (azure-ai-ml's own override of the
management endpoint; one on 127.0.0.1 is sent a placeholder token) and FTLAUNCH_AZURE_BLOB_ENDPOINT
(the datastore's blob endpoint, e.g. http://127.0.0.1:10000/devstoreaccount1).
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from ftlaunch.core import errors
from ftlaunch.backends import base, failure
from ftlaunch.backends.azureml import render as _render
from ftlaunch.backends.base import Backend, JobHandle, JobRequest, JobStatus, State

PROGRESS_BYTES = 8 << 20
# Azure ML job statuses (azure.ai.ml.operations._run_history_constants.JobStatus) -> ours
STATES = {
    "NotStarted": State.PENDING, "Queued": State.PENDING, "Preparing": State.PENDING,
    "Provisioning": State.PENDING, "Starting": State.PENDING, "Paused": State.PENDING,
    "Running": State.RUNNING, "Finalizing": State.RUNNING, "CancelRequested": State.RUNNING,
    "Completed": State.SUCCEEDED, "Failed": State.FAILED, "NotResponding": State.FAILED,
    "Canceled": State.CANCELLED,
}
ENDED = ("Completed", "Failed", "Canceled", "NotResponding")


TIME_LIMIT_SLACK_S = 60  # a job canceled this close to its limits.timeout was stopped by that limit


def hit_time_limit(timeout_s: Any, started: Any, ended: Any) -> bool:
    """Whether a Canceled job ran for its whole limits.timeout (Azure ML cancels it then, as for a user)."""
    if not timeout_s or started is None or ended is None:
        return False
    return (ended - started).total_seconds() >= float(timeout_s) - TIME_LIMIT_SLACK_S


def state_of(provider_state: str | None) -> State:
    """Our state for an Azure ML job status; an unknown one is PENDING (it has not ended)."""
    return STATES.get(provider_state or "", State.PENDING)


class AzureMLBackend(Backend):
    name = "azureml"

    def __init__(self, client: Any = None, container: Any = None, backoff_s: float = 1.0, attempts: int = 6,
                 poll_s: float = 5.0, out=None):
        """`client` (an azure.ai.ml.MLClient) and `container` (an azure.storage.blob.ContainerClient for the
        datastore) for tests; else made on use."""
        self._ml = client
        self._container = container
        self.backoff_s = backoff_s
        self.attempts = attempts
        self.poll_s = poll_s
        self.out = out or sys.stderr

    def render(self, plan: Any) -> JobRequest:
        return _render.render(plan)

    # ------------------------------------------------------------------ submit

    def submit(self, request: JobRequest) -> JobHandle:
        base.refuse_placeholders(request)
        ml = self._client(request.extra)
        job = _load_job(request.payload)
        name = request.job_name
        handle = JobHandle(backend="azureml", job_name=name, provider_id=name, output_uri=request.extra["outputs"],
                           extra=dict(request.extra))
        if self._existing(ml, name) is not None:
            return handle  # submitted before (same name): the same job
        self._upload(request.uploads, request.extra)
        self._check_vm_size(ml, request)

        def create() -> Any:
            return ml.jobs.create_or_update(job)

        try:
            created = self._retry(create, before_retry=lambda: self._existing(ml, name))
        except Exception as exc:  # noqa: BLE001
            # azure-core retries a 5xx PUT itself; when the first attempt created the job, the retry
            # is told the name is taken: that job is this one
            created = self._existing(ml, name) if _already_exists(exc) else None
            if created is None:
                raise _user_error(exc, f"Azure ML did not accept job {name}") from None
        handle.extra["studio_url"] = getattr(created, "studio_url", None)
        return handle

    def resume(self, handle: JobHandle) -> JobHandle:
        """A new attempt of a cancelled or failed job: a job `<job>-aN` with the same definition (read back with
        jobs.get), so the same `checkpoints` output, mounted read-write with what the last attempt wrote, where
        the trainer finds its newest complete checkpoint. (A low-priority cluster requeues a preempted job by
        itself, in the same job and the same output: no resume is needed there.)"""
        ml = self._client(handle.extra)
        job = self._get(ml, handle)
        state = _text(job.status)
        if state not in ENDED or state == "Completed":
            raise errors.UserError(f"job {handle.job_name} is {state} on Azure ML; only a canceled or failed job "
                                   "resumes.", hint=f"cancel it first (`ftlaunch cancel {handle.job_name}`), or wait")
        attempt = int(handle.extra.get("attempt", 1)) + 1
        name = f"{handle.job_name}-a{attempt}"
        if self._existing(ml, name) is None:
            job.name, job.display_name = name, name
            try:
                self._retry(lambda: ml.jobs.create_or_update(job), before_retry=lambda: self._existing(ml, name))
            except Exception as exc:  # noqa: BLE001
                if not _already_exists(exc) or self._existing(ml, name) is None:
                    raise _user_error(exc, f"Azure ML did not accept attempt {attempt} of {handle.job_name}") from None
        return JobHandle(backend="azureml", job_name=handle.job_name, provider_id=name, output_uri=handle.output_uri,
                         extra={**handle.extra, "attempt": attempt})

    def _existing(self, ml: Any, name: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._retry(lambda: ml.jobs.get(name))
        except ResourceNotFoundError:
            return None

    def _upload(self, uploads: list[dict[str, str]], extra: dict[str, Any]) -> None:
        if not uploads:
            return
        container = self._datastore(extra)
        for item in uploads:
            _, path = _render.split_datastore_uri(item["destination"])
            blob = container.get_blob_client(path)
            try:
                if "content" in item:
                    data = item["content"].encode()
                    self._retry(lambda: blob.upload_blob(data, overwrite=True))
                    continue
                base.check_unchanged(item)
                if base.uploaded_before(item, *self._properties(blob)):
                    print(base.REUSING.format(destination=item["destination"]), file=self.out, flush=True)
                    continue
                size = Path(item["source"]).stat().st_size
                if size > PROGRESS_BYTES:
                    print(f"uploading {item['source']} ({size / 1e6:,.1f} MB) to {item['destination']}",
                          file=self.out, flush=True)
                metadata = {"sha256": item["sha256"]} if "sha256" in item else None

                # a large file goes up as staged blocks that Put Block List commits at the end: the blob
                # shows the new bytes only once all of them arrived
                def send(source=item["source"]):
                    with open(source, "rb") as f:
                        blob.upload_blob(f, overwrite=True, max_concurrency=4, metadata=metadata)

                self._retry(send)
            except Exception as exc:  # noqa: BLE001
                raise _user_error(exc, f"uploading to {item['destination']} failed") from None

    def _properties(self, blob: Any) -> tuple[int | None, dict[str, str] | None]:
        """(size, metadata) of the blob, or (None, None) if there is none."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self._retry(blob.get_blob_properties)
        except ResourceNotFoundError:
            return None, None
        return props.size, dict(props.metadata or {})

    def _check_vm_size(self, ml: Any, request: JobRequest) -> None:
        """Warns when the cluster's VM size is not the offer's: the plan's time and cost assume the offer."""
        compute = str(request.payload["compute"]).removeprefix("azureml:")
        try:
            cluster = ml.compute.get(compute)
        except Exception as exc:  # noqa: BLE001 - advisory: create_or_update names a missing cluster itself
            print(f"note: could not read compute cluster {compute} to compare its VM size "
                  f"({type(exc).__name__})", file=self.out, flush=True)
            return
        size = getattr(cluster, "size", None)
        want = request.extra.get("vm_size")
        if size and want and size.lower() != want.lower():
            print(f"warning: compute cluster {compute} has VM size {size}, the plan priced {want}; the "
                  f"estimate of time and cost is for {want}", file=self.out, flush=True)

    # ------------------------------------------------------------------ status, logs, cancel

    def status(self, handle: JobHandle) -> JobStatus:
        ml = self._client(handle.extra)
        job = self._get(ml, handle)
        provider_state = _text(job.status)
        state = state_of(provider_state)
        details = self._details(ml, handle.provider_id) if state is not State.PENDING else None
        reason = None
        if details is not None and details.error is not None and details.error.error is not None:
            reason = details.error.error.message
        timeout = getattr(getattr(job, "limits", None), "timeout", None)
        if provider_state == "CancelRequested":
            reason = "cancelling"
        elif state is State.CANCELLED and details is not None and \
                hit_time_limit(timeout, details.start_time_utc, details.end_time_utc):
            # Azure ML cancels a job that reaches limits.timeout: that is no user's cancel
            state, reason = State.FAILED, (f"time limit reached: the job ran for its limits.timeout ({timeout} s, "
                                           "from resources.max_runtime or max_cost) and Azure ML stopped it")
        elif state is State.CANCELLED and not reason:
            reason = "cancelled (jobs.begin_cancel)"
        elif state is State.FAILED and reason and "User process" in reason:
            # Azure ML says the command exited; the trainer's own last error is in user_logs/std_log.txt
            headline = failure.exit_sentence(reason)
            reason = failure.reason(failure.clean_lines("\n".join(self._new_lines(ml, handle, {}))), headline,
                                    log=f"`ftlaunch logs {handle.job_name}` (user_logs/std_log.txt of run "
                                        f"{handle.provider_id})")
        elif state is State.FAILED and not reason:
            reason = f"the job ended {provider_state}" + (
                "; it may have run past limits.timeout (resources.max_runtime or max_cost)"
                if provider_state == "Failed" else "")
        cost = None
        if details is not None and details.start_time_utc and details.end_time_utc and \
                handle.extra.get("price_per_hour") is not None:
            hours = (details.end_time_utc - details.start_time_utc).total_seconds() / 3600
            cost = round(hours * handle.extra["price_per_hour"], 4)
        return JobStatus(state, reason, provider_state, actual_cost=cost)

    def _get(self, ml: Any, handle: JobHandle) -> Any:
        try:
            return self._retry(lambda: ml.jobs.get(handle.provider_id))
        except Exception as exc:  # noqa: BLE001
            raise _user_error(exc, f"cannot read Azure ML job {handle.provider_id}") from None

    def _details(self, ml: Any, name: str) -> Any:
        """The job's RunDetails from run history (error, log file URLs, start and end times)."""
        try:
            return self._retry(lambda: ml.jobs._runs_operations.get_run_details(name))
        except Exception as exc:  # noqa: BLE001
            raise _user_error(exc, f"cannot read the run history of {name}") from None

    def logs(self, handle: JobHandle, follow: bool = False) -> Iterator[str]:
        """The job's log files from run history (user_logs/std_log*.txt: the command's stdout and stderr, one
        per process), oldest line first; with follow, polls until the job has ended and they are drained."""
        ml = self._client(handle.extra)
        seen: dict[str, int] = {}
        while True:
            done = follow and self.status(handle).state.done
            files = yield from self._new_lines(ml, handle, seen)
            if not follow or done:
                if not files and not follow:
                    yield (f"(no log files yet: Azure ML writes user_logs/std_log.txt once the job starts; "
                           f"state {self.status(handle).provider_state})")
                return
            time.sleep(self.poll_s)

    def _new_lines(self, ml: Any, handle: JobHandle, seen: dict[str, int]) -> Iterator[str]:
        """The job's user_logs lines not yet in `seen` (file -> lines read); returns the log files found."""
        import requests

        details = self._details(ml, handle.provider_id)
        files = {k: v for k, v in (details.log_files or {}).items() if k.startswith("user_logs/")}
        for name in sorted(files):
            response = self._retry(lambda: _get_ok(requests, files[name]))
            lines = response.text.splitlines()
            for line in lines[seen.get(name, 0):]:
                yield f"[{name.rsplit('/', 1)[-1]}] {line}" if len(files) > 1 else line
            seen[name] = len(lines)
        return files

    def cancel(self, handle: JobHandle) -> None:
        ml = self._client(handle.extra)
        if _text(self._get(ml, handle).status) in ENDED + ("CancelRequested",):
            return
        try:
            self._retry(lambda: ml.jobs.begin_cancel(handle.provider_id))
        except Exception as exc:  # noqa: BLE001
            if _text(self._get(ml, handle).status) in ENDED:
                return  # it ended between the two calls
            raise _user_error(exc, f"Azure ML did not cancel {handle.provider_id}") from None

    # ------------------------------------------------------------------ fetch

    def fetch(self, handle: JobHandle, dest: Path) -> Path:
        """Downloads everything under the job's `outputs` output and verifies it against manifest.json."""
        state = self.status(handle)
        if state.state is not State.SUCCEEDED:
            raise base.no_outputs_yet(handle, state)
        datastore, prefix = _render.split_datastore_uri(handle.output_uri)
        container = self._datastore({**handle.extra, "datastore": datastore})

        def download(staging: Path) -> None:
            try:
                names = self._retry(lambda: [b.name for b in container.list_blobs(name_starts_with=prefix)])
                for name in names:
                    rel = name[len(prefix):]
                    if rel and not rel.endswith("/"):
                        target = base.inside(staging, rel, name)
                        self._retry(lambda: target.write_bytes(container.download_blob(name).readall()))
            except errors.UserError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise _user_error(exc, f"cannot download {handle.output_uri}") from None

        return base.fetch_verified(dest, download, job=handle.job_name)

    # ------------------------------------------------------------------ clients

    def _client(self, extra: dict[str, Any]) -> Any:
        if self._ml is None:
            try:
                from azure.ai.ml import MLClient
            except ImportError:
                raise errors.MissingExtra("azure-ai-ml", "azure", "--cloud azureml") from None
            self._ml = MLClient(_credential(), subscription_id=extra["subscription"],
                                resource_group_name=extra["resource_group"], workspace_name=extra["workspace"],
                                enable_telemetry=False, user_agent="ftlaunch")
        return self._ml

    def _datastore(self, extra: dict[str, Any]) -> Any:
        """A ContainerClient on the datastore's blob container, with the datastore's own credentials (an
        account key or SAS from datastores/listSecrets), or the caller's identity for identity-based ones."""
        if self._container is not None:
            return self._container
        try:
            from azure.storage.blob import ContainerClient
        except ImportError:
            raise errors.MissingExtra("azure-storage-blob", "azure", "--cloud azureml") from None
        ml = self._client(extra)
        try:
            store = self._retry(lambda: ml.datastores.get(extra["datastore"], include_secrets=True))
        except Exception as exc:  # noqa: BLE001
            raise _user_error(exc, f"cannot read datastore {extra['datastore']}") from None
        if type(store).__name__ != "AzureBlobDatastore":
            raise errors.UserError(f"datastore {extra['datastore']} is {type(store).__name__}; ftlaunch needs "
                                   "an Azure Blob datastore.", hint="set FTLAUNCH_AZURE_DATASTORE (default: "
                                   "workspaceblobstore)")
        secret = store.credentials
        credential: Any = getattr(secret, "account_key", None) or getattr(secret, "sas_token", None)
        if getattr(secret, "account_key", None):
            credential = {"account_name": store.account_name, "account_key": secret.account_key}
        url = os.environ.get("FTLAUNCH_AZURE_BLOB_ENDPOINT") or \
            f"{store.protocol}://{store.account_name}.blob.{store.endpoint}"
        self._container = ContainerClient(url.rstrip("/"), store.container_name,
                                          credential=credential or _credential())
        return self._container

    def _retry(self, call, before_retry=None):
        return base.with_retries(call, retryable=retryable, attempts=self.attempts, base_s=self.backoff_s,
                                 before_retry=before_retry)


class StaticToken:
    """A credential for an emulator on this machine: Azure's SDKs need one; nothing checks it."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken("ftlaunch-emulator", int(time.time()) + 3600)


def retryable(exc: BaseException) -> bool:
    """429, 5xx and dropped connections from azure-core."""
    try:
        from azure.core import exceptions as ax
    except ImportError:
        return False
    if isinstance(exc, (ax.ServiceRequestError, ax.ServiceResponseError)):
        return True
    if isinstance(exc, ax.HttpResponseError):
        status = exc.status_code or 0
        return status == 429 or status >= 500
    import requests

    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


def _get_ok(requests: Any, url: str) -> Any:
    response = requests.get(url, timeout=60)
    if response.status_code == 429 or response.status_code >= 500:
        from azure.core.exceptions import ServiceResponseError

        raise ServiceResponseError(f"HTTP {response.status_code} reading a log file")
    response.raise_for_status()
    return response


def _already_exists(exc: BaseException) -> bool:
    return getattr(exc, "status_code", None) in (400, 409) and "already exists" in str(exc).lower()


def _load_job(payload: dict[str, Any]) -> Any:
    """The payload as azure-ai-ml's Job entity, parsed against Azure ML's schema as `az ml job create` does."""
    import logging

    import yaml

    try:
        from azure.ai.ml import load_job
    except ImportError:
        raise errors.MissingExtra("azure-ai-ml", "azure", "--cloud azureml") from None
    logging.getLogger("azure.ai.ml").setLevel(logging.ERROR)  # "experimental class" notices
    return load_job(io.StringIO(yaml.safe_dump(payload, sort_keys=False)))


def _credential() -> Any:
    """A placeholder token for a management endpoint on this machine (an emulator); else DefaultAzureCredential."""
    from urllib.parse import urlparse

    if urlparse(os.environ.get("AZUREML_DEV_URL_MFE") or "").hostname in ("127.0.0.1", "localhost", "::1"):
        return StaticToken()
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise errors.MissingExtra("azure-identity", "azure", "--cloud azureml") from None
    return DefaultAzureCredential()


def _user_error(exc: BaseException, what: str) -> Exception:
    """An Azure answer a person can act on, as a UserError; anything else unchanged."""
    kind = type(exc).__name__
    if kind in ("ClientAuthenticationError", "CredentialUnavailableError"):
        return errors.UserError(f"{what}: no usable Azure credentials ({str(exc).splitlines()[0]}).",
                                hint="run `az login` (or set AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET); "
                                     "`ftlaunch check` says what is missing")
    status = getattr(exc, "status_code", None)
    if status:
        message = str(getattr(exc, "message", None) or exc).strip().splitlines()
        hint = {403: "the caller needs the roles in docs/clouds.md (Azure ML section)",
                404: "check FTLAUNCH_AZURE_SUBSCRIPTION, FTLAUNCH_AZURE_RESOURCE_GROUP, FTLAUNCH_AZURE_WORKSPACE "
                     "and FTLAUNCH_AZURE_COMPUTE",
                429: "Azure ML throttled the call or a quota was hit: wait, or ask for more quota for this VM family"
                }.get(status)
        return errors.UserError(f"{what}: {status} {' '.join(message)[:500]}", hint=hint)
    if kind in ("ValidationException", "JobException", "UserErrorException"):
        return errors.UserError(f"{what}: {exc}", hint="the job request does not fit Azure ML's schema; "
                                "`ftlaunch --dry-run` prints it")
    return exc


def _text(status: Any) -> str | None:
    """A job status as Azure ML spells it (the SDK hands back a str enum)."""
    return None if status is None else str(getattr(status, "value", status))


BACKEND = AzureMLBackend
