"""VertexBackend: submits the rendered CustomJob through google-cloud-aiplatform's JobServiceClient (REST),
and polls, streams, cancels and fetches it; files go through google-cloud-storage.

Why the GAPIC JobServiceClient and not `aiplatform.CustomJob`: the client sends the rendered CustomJob
as it is (`CustomJob.from_json`), where the high-level class rebuilds it and insists on a staging
bucket. REST, not gRPC, so that a private endpoint or a local emulator works the same way.

Retries: throttling and 5xx answers are retried by `base.with_retries`; CustomJob ids are chosen by
Vertex, so before each new create the backend lists jobs with the same display name and adopts one an
unanswered attempt created: a retried submit never makes a second job. Submitting a name that already
has a job returns that job.

Endpoints (for private service connect or emulators): FTLAUNCH_VERTEX_API_ENDPOINT,
FTLAUNCH_GCP_LOGGING_ENDPOINT; an http:// endpoint is spoken to without credentials.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from ftlaunch.core import errors
from ftlaunch.backends import base, failure
from ftlaunch.backends.base import Backend, JobHandle, JobRequest, JobStatus, State
from ftlaunch.backends.vertex import render as _render

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
PROGRESS_BYTES = 8 << 20
STATES = {
    "JOB_STATE_QUEUED": State.PENDING, "JOB_STATE_PENDING": State.PENDING, "JOB_STATE_RUNNING": State.RUNNING,
    "JOB_STATE_UPDATING": State.RUNNING, "JOB_STATE_CANCELLING": State.RUNNING, "JOB_STATE_PAUSED": State.PENDING,
    "JOB_STATE_SUCCEEDED": State.SUCCEEDED, "JOB_STATE_FAILED": State.FAILED,
    "JOB_STATE_CANCELLED": State.CANCELLED, "JOB_STATE_EXPIRED": State.FAILED,
    "JOB_STATE_PARTIALLY_SUCCEEDED": State.FAILED,
}


class VertexBackend(Backend):
    name = "vertex"

    def __init__(self, job_client: Any = None, storage_client: Any = None, backoff_s: float = 1.0,
                 attempts: int = 6, poll_s: float = 5.0, out=None):
        """`job_client` (aiplatform_v1.JobServiceClient) and `storage_client` for tests; else made on use."""
        self._jobs = job_client
        self._storage = storage_client
        self.backoff_s = backoff_s
        self.attempts = attempts
        self.poll_s = poll_s
        self.out = out or sys.stderr

    def render(self, plan: Any) -> JobRequest:
        return _render.render(plan)

    # ------------------------------------------------------------------ submit

    def submit(self, request: JobRequest) -> JobHandle:
        base.refuse_placeholders(request)
        project, region = request.extra["project"], request.extra["region"]
        self._upload(request.uploads, project)
        aiplatform_v1 = _aiplatform()
        import json

        job = aiplatform_v1.CustomJob.from_json(json.dumps(request.payload))
        client = self._job_client(region)
        parent = f"projects/{project}/locations/{region}"

        def create() -> str:
            return client.create_custom_job(parent=parent, custom_job=job).name

        name = self._existing(parent, request.job_name)
        if name is None:
            try:
                name = self._retry(create, before_retry=lambda: self._existing(parent, request.job_name))
            except Exception as exc:  # noqa: BLE001
                raise _user_error(exc, f"Vertex AI did not accept job {request.job_name}") from None
        return JobHandle(backend="vertex", job_name=request.job_name, provider_id=name,
                         output_uri=request.extra["model_dir"], extra=dict(request.extra))

    def resume(self, handle: JobHandle) -> JobHandle:
        """A new attempt of a cancelled or failed job: a CustomJob `<job>-aN` with the same job spec, so the same
        baseOutputDirectory and AIP_CHECKPOINT_DIR, where the trainer finds its newest complete checkpoint."""
        old = self._get(handle)
        state = old.state.name
        if state not in ("JOB_STATE_CANCELLED", "JOB_STATE_FAILED", "JOB_STATE_EXPIRED"):
            raise errors.UserError(f"job {handle.job_name} is {state} on Vertex AI; only a cancelled, failed or "
                                   "expired job resumes.",
                                   hint=f"cancel it first (`ftlaunch cancel {handle.job_name}`), or wait")
        attempt = int(handle.extra.get("attempt", 1)) + 1
        display = f"{handle.job_name}-a{attempt}"
        aiplatform_v1 = _aiplatform()
        job = aiplatform_v1.CustomJob(display_name=display, job_spec=old.job_spec, labels=dict(old.labels))
        region = handle.extra["region"]
        client = self._job_client(region)
        parent = f"projects/{handle.extra['project']}/locations/{region}"
        name = self._existing(parent, display)
        if name is None:
            try:
                name = self._retry(lambda: client.create_custom_job(parent=parent, custom_job=job).name,
                                   before_retry=lambda: self._existing(parent, display))
            except Exception as exc:  # noqa: BLE001
                raise _user_error(exc, f"Vertex AI did not accept attempt {attempt} of {handle.job_name}") from None
        return JobHandle(backend="vertex", job_name=handle.job_name, provider_id=name, output_uri=handle.output_uri,
                         extra={**handle.extra, "attempt": attempt})

    def _existing(self, parent: str, display_name: str) -> str | None:
        client = self._job_client(parent.split("/")[3])
        pages = self._retry(lambda: list(client.list_custom_jobs(
            request={"parent": parent, "filter": f'display_name="{display_name}"'})))
        found = [j.name for j in pages if j.display_name == display_name]
        return found[0] if found else None

    def _upload(self, uploads: list[dict[str, str]], project: str) -> None:
        if not uploads:
            return
        storage = self._storage_client(project)
        for item in uploads:
            bucket, key = split_gs(item["destination"])
            blob = storage.bucket(bucket).blob(key)
            try:
                if "content" in item:
                    self._retry(lambda: blob.upload_from_string(item["content"], content_type="application/json"))
                    continue
                base.check_unchanged(item)
                found = self._retry(lambda: storage.bucket(bucket).get_blob(key))
                if base.uploaded_before(item, *((found.size, found.metadata) if found else (None, None))):
                    print(base.REUSING.format(destination=item["destination"]), file=self.out, flush=True)
                    continue
                size = Path(item["source"]).stat().st_size
                if size > PROGRESS_BYTES:
                    print(f"uploading {item['source']} ({size / 1e6:,.1f} MB) to {item['destination']}",
                          file=self.out, flush=True)
                    # a resumable upload in 8 MB parts: GCS shows the object only after its last part
                    blob.chunk_size = 8 << 20
                if "sha256" in item:
                    blob.metadata = {"sha256": item["sha256"]}
                self._retry(lambda: blob.upload_from_filename(item["source"]))
            except Exception as exc:  # noqa: BLE001
                raise _user_error(exc, f"uploading to {item['destination']} failed") from None

    # ------------------------------------------------------------------ status, logs, cancel

    def status(self, handle: JobHandle) -> JobStatus:
        job = self._get(handle)
        state_name = job.state.name
        state = STATES.get(state_name, State.PENDING)
        reason = job.error.message if job.error and job.error.message else None
        cost = None
        if job.start_time and job.end_time and handle.extra.get("price_per_hour") is not None:
            hours = (_ts(job.end_time) - _ts(job.start_time)) / 3600
            cost = round(hours * handle.extra["price_per_hour"], 4)
        if state is State.FAILED and state_name == "JOB_STATE_FAILED" and reason and \
                not base.capacity_refusal(reason):
            # Vertex says a replica exited; the trainer's own last error is in the job's log entries
            headline = failure.exit_sentence(reason)
            reason = failure.reason(failure.clean_lines("\n".join(self.logs(handle))), headline,
                                    log=f"`ftlaunch logs {handle.job_name}` (Cloud Logging, ml_job "
                                        f"{handle.provider_id.rsplit('/', 1)[-1]})")
        if state is State.CANCELLED and not reason:
            reason = "cancelled (customJobs.cancel)"
        if state_name == "JOB_STATE_EXPIRED" and not reason:
            reason = "the job ran past scheduling.timeout (resources.max_runtime or max_cost)"
        return JobStatus(state, reason, state_name, actual_cost=cost)

    def _get(self, handle: JobHandle) -> Any:
        client = self._job_client(handle.extra["region"])
        try:
            return self._retry(lambda: client.get_custom_job(name=handle.provider_id))
        except Exception as exc:  # noqa: BLE001
            raise _user_error(exc, f"cannot read Vertex AI job {handle.job_name}") from None

    def logs(self, handle: JobHandle, follow: bool = False) -> Iterator[str]:
        """The job's Cloud Logging entries (resource ml_job, its id), oldest first; with follow, polls until
        the job has ended and its entries are drained."""
        session, endpoint = self._logging_session()
        job_id = handle.provider_id.rsplit("/", 1)[-1]
        since = None
        while True:
            done = follow and self.status(handle).state.done
            for entry in self._entries(session, endpoint, handle.extra["project"], job_id, since):
                since = entry.get("timestamp") or since
                text = entry.get("textPayload")
                if text is None:
                    text = (entry.get("jsonPayload") or {}).get("message", "")
                yield text.rstrip("\n")
            if not follow or done:
                return
            time.sleep(self.poll_s)

    def _entries(self, session: Any, endpoint: str, project: str, job_id: str, since: str | None) -> list[dict]:
        flt = f'resource.type="ml_job" AND resource.labels.job_id="{job_id}"'
        if since:
            flt += f' AND timestamp>"{since}"'
        entries, token = [], None
        while True:
            body = {"resourceNames": [f"projects/{project}"], "filter": flt, "orderBy": "timestamp asc",
                    "pageSize": 1000}
            if token:
                body["pageToken"] = token

            def call():
                response = session.post(f"{endpoint}/v2/entries:list", json=body, timeout=60)
                if response.status_code == 429 or response.status_code >= 500:
                    raise _HttpError(response.status_code, response.text)
                if response.status_code >= 400:
                    raise errors.UserError(f"Cloud Logging refused to list the job's entries: "
                                           f"{response.status_code} {response.text[:300]}",
                                           hint="the caller needs roles/logging.viewer (docs/clouds.md); or see "
                                                "the job's logs in the console: Vertex AI > Training > Custom jobs")
                return response.json()

            page = base.with_retries(call, retryable=lambda e: isinstance(e, _HttpError) or retryable(e),
                                     attempts=self.attempts, base_s=self.backoff_s)
            entries += page.get("entries", [])
            token = page.get("nextPageToken")
            if not token:
                return entries

    def cancel(self, handle: JobHandle) -> None:
        if self.status(handle).state.done:
            return
        client = self._job_client(handle.extra["region"])
        try:
            self._retry(lambda: client.cancel_custom_job(name=handle.provider_id))
        except Exception as exc:  # noqa: BLE001
            if type(exc).__name__ == "FailedPrecondition" and self.status(handle).state.done:
                return  # it ended between the two calls
            raise _user_error(exc, f"Vertex AI did not cancel {handle.job_name}") from None

    # ------------------------------------------------------------------ fetch

    def fetch(self, handle: JobHandle, dest: Path) -> Path:
        """Downloads everything under the job's AIP_MODEL_DIR and verifies it against manifest.json."""
        state = self.status(handle)
        if state.state is not State.SUCCEEDED:
            raise base.no_outputs_yet(handle, state)
        bucket_name, prefix = split_gs(handle.output_uri.rstrip("/") + "/")
        storage = self._storage_client(handle.extra["project"])

        def download(staging: Path) -> None:
            try:
                blobs = self._retry(lambda: list(storage.list_blobs(bucket_name, prefix=prefix)))
                for blob in blobs:
                    rel = blob.name[len(prefix):]
                    if rel and not rel.endswith("/"):
                        target = base.inside(staging, rel, blob.name)
                        self._retry(lambda: blob.download_to_filename(str(target)))
            except errors.UserError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise _user_error(exc, f"cannot download {handle.output_uri}") from None

        return base.fetch_verified(dest, download, job=handle.job_name)

    # ------------------------------------------------------------------ clients

    def _job_client(self, region: str) -> Any:
        if self._jobs is None:
            aiplatform_v1 = _aiplatform()
            endpoint = os.environ.get("FTLAUNCH_VERTEX_API_ENDPOINT") or f"{region}-aiplatform.googleapis.com"
            self._jobs = aiplatform_v1.JobServiceClient(
                credentials=_credentials(endpoint), transport="rest", client_options={"api_endpoint": endpoint})
        return self._jobs

    def _storage_client(self, project: str) -> Any:
        if self._storage is None:
            try:
                from google.cloud import storage
            except ImportError:
                raise errors.MissingExtra("google-cloud-storage", "vertex", "--cloud vertex") from None
            emulator = os.environ.get("STORAGE_EMULATOR_HOST")
            self._storage = storage.Client(project=project, credentials=_credentials(emulator or "https://"))
        return self._storage

    def _logging_session(self) -> tuple[Any, str]:
        endpoint = (os.environ.get("FTLAUNCH_GCP_LOGGING_ENDPOINT") or "https://logging.googleapis.com").rstrip("/")
        credentials = _credentials(endpoint)
        import google.auth.transport.requests
        import requests

        if type(credentials).__name__ == "AnonymousCredentials":
            return requests.Session(), endpoint
        return google.auth.transport.requests.AuthorizedSession(credentials), endpoint

    def _retry(self, call, before_retry=None):
        return base.with_retries(call, retryable=retryable, attempts=self.attempts, base_s=self.backoff_s,
                                 before_retry=before_retry)


class _HttpError(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(f"HTTP {status}: {text[:200]}")
        self.status = status


# A 429 RESOURCE_EXHAUSTED is a request rate (retried) unless it names the training resources themselves:
# "The following quota metrics exceed quota limits: aiplatform.googleapis.com/custom_model_training_nvidia_a100_gpus",
# or a zone out of that GPU.
_RESOURCE_REFUSAL = re.compile(r"exceed quota limits|custom_model_training|stockout|ZONE_RESOURCE_POOL_EXHAUSTED",
                               re.IGNORECASE)


def retryable(exc: BaseException) -> bool:
    """429, 5xx, deadline and connection failures from google-api-core, google-cloud-storage or requests."""
    try:
        from google.api_core import exceptions as gx
    except ImportError:
        return False
    if isinstance(exc, (gx.TooManyRequests, gx.ResourceExhausted)) and _RESOURCE_REFUSAL.search(str(exc)):
        return False  # no GPUs (quota, stockout) for this offer: waiting seconds won't help; a launch fails over
    if isinstance(exc, (gx.TooManyRequests, gx.ResourceExhausted, gx.ServerError, gx.DeadlineExceeded,
                        gx.ServiceUnavailable)):
        return True
    import requests

    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


def split_gs(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://"):
        raise errors.UserError(f"{uri} is not a gs:// URI.")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def _aiplatform() -> Any:
    try:
        from google.cloud import aiplatform_v1
    except ImportError:
        raise errors.MissingExtra("google-cloud-aiplatform", "vertex", "--cloud vertex") from None
    return aiplatform_v1


def _credentials(endpoint: str) -> Any:
    """No credentials for a plain-http endpoint (an emulator); else Application Default Credentials."""
    if endpoint.startswith("http://"):
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    import google.auth
    from google.auth import exceptions as gax

    try:
        credentials, _ = google.auth.default(scopes=SCOPES)
    except gax.DefaultCredentialsError as exc:
        raise errors.UserError(f"no Google Cloud credentials: {exc}",
                               hint="run `gcloud auth application-default login`, or set "
                                    "GOOGLE_APPLICATION_CREDENTIALS to a service account key file") from None
    return credentials


def _ts(value: Any) -> float:
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    return value.ToDatetime().timestamp()  # a protobuf Timestamp


def _user_error(exc: BaseException, what: str) -> Exception:
    """A Google API answer a person can act on, as a UserError; anything else unchanged."""
    try:
        from google.api_core import exceptions as gx
    except ImportError:
        return exc
    if isinstance(exc, gx.GoogleAPICallError):
        hint = {403: "the caller needs the roles in docs/clouds.md (Vertex AI section), and the Vertex AI API "
                     "must be enabled (gcloud services enable aiplatform.googleapis.com)",
                404: "check FTLAUNCH_GCP_PROJECT, the region and FTLAUNCH_GCS_BUCKET",
                429: "a quota was hit: ask for more Vertex AI custom-training quota for this GPU, or pick another"
                }.get(exc.code or 0)
        return errors.UserError(f"{what}: {exc.code} {exc.message}", hint=hint)
    return exc


BACKEND = VertexBackend
