"""SkyPilotBackend: launches the rendered task as a SkyPilot managed job, and polls, streams, cancels and
fetches it through the `sky` SDK (which talks to SkyPilot's API server, starting a local one if needed).

Why managed jobs and not `sky launch` on a cluster: a managed job recovers from spot preemption on its
own (the job restarts and resumes from the mounted checkpoints), tears its cluster down when it ends,
and is found again by name from any shell.

Retries: the SDK retries transient API-server errors itself; submit also looks the job up by name before
launching and before any retry of `sky.jobs.launch`, so a retried submit never makes a second job, and
submitting a name that already has a job returns that job.

Secrets: the task names them (`secrets: {HF_TOKEN: null}`); submit fills in their values from the
launcher's environment, as `sky jobs launch --secret HF_TOKEN` does, so values never appear in the
rendered request or the job records.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterator

from ftlaunch.core import errors
from ftlaunch.backends import base
from ftlaunch.backends.base import Backend, JobHandle, JobRequest, JobStatus, State
from ftlaunch.backends.skypilot import render as _render

# sky.jobs.ManagedJobStatus -> ours
STATES = {
    "PENDING": State.PENDING, "SUBMITTED": State.PENDING, "STARTING": State.PENDING,
    "RUNNING": State.RUNNING, "RECOVERING": State.RUNNING, "WINDING_DOWN": State.RUNNING,
    "CANCELLING": State.RUNNING, "SUCCEEDED": State.SUCCEEDED, "CANCELLED": State.CANCELLED,
    "FAILED": State.FAILED, "FAILED_SETUP": State.FAILED, "FAILED_PRECHECKS": State.FAILED,
    "FAILED_NO_RESOURCE": State.FAILED, "FAILED_CONTROLLER": State.FAILED,
}
REASONS = {  # when SkyPilot gives no failure_reason
    "FAILED": "the job's command exited with a non-zero status (see `ftlaunch logs`)",
    "FAILED_SETUP": "the job's setup failed (see `ftlaunch logs`)",
    "FAILED_PRECHECKS": "SkyPilot refused the task before launching it (e.g. a bucket or credential check)",
    "FAILED_NO_RESOURCE": "no capacity for the requested resources (try another region, --gpu, or no --spot)",
    "FAILED_CONTROLLER": "the SkyPilot jobs controller failed (`sky jobs logs --controller`)",
    "RECOVERING": "the cluster was preempted or failed; SkyPilot is relaunching it",
    "CANCELLING": "cancelling",
}


def state_of(provider_state: str | None) -> State:
    """Our state for a SkyPilot managed-job status; an unknown one is PENDING (it has not ended)."""
    return STATES.get((provider_state or "").upper(), State.PENDING)


def secret_values(names: list[str], env: dict[str, str] | os._Environ) -> dict[str, str]:
    """{name: value} for the spec's secret names, from the launcher's environment; names every missing one."""
    missing = [n for n in names if not env.get(n)]
    if missing:
        raise errors.UserError(f"the spec names secrets that are not set here: {', '.join(missing)}.",
                               hint=f"export {missing[0]}=... before launching; SkyPilot passes the value to the "
                                    "job as a secret and ftlaunch never records it")
    return {n: env[n] for n in names}


class SkyPilotBackend(Backend):
    name = "skypilot"
    # SkyPilot's managed jobs recover by themselves: after a spot preemption (job_recovery FAILOVER) and, with
    # FTLAUNCH_SKYPILOT_MAX_RESTARTS, after errors, the same job restarts and the trainer resumes from the
    # checkpoints in the job's bucket. A job that ended for good is not restarted by ftlaunch.
    RESUME_HINT = ("SkyPilot restarts a managed job by itself after a preemption (and after errors, up to "
                   "FTLAUNCH_SKYPILOT_MAX_RESTARTS times), resuming from the checkpoints in its bucket; for a job "
                   "that ended, launch the spec again")

    def __init__(self, sdk: Any = None, storage: dict[str, Any] | None = None, out=None):
        """`sdk`: the `sky` module (imported on use); `storage`: clients for fetch by scheme ("s3", "gs")."""
        self._sky = sdk
        self._storage = dict(storage or {})
        self.out = out or sys.stderr

    def render(self, plan: Any) -> JobRequest:
        return _render.render(plan)

    # ------------------------------------------------------------------ submit

    def submit(self, request: JobRequest) -> JobHandle:
        base.refuse_placeholders(request)
        values = secret_values(request.secrets, os.environ)
        sky = self._sdk()
        task = sky.Task.from_yaml_config(request.payload)
        if values:
            task.update_secrets(values)
        name = request.job_name

        def launch() -> int:
            job_ids, _ = sky.get(sky.jobs.launch(task, name=name))
            return (job_ids or [None])[0]

        job_id = self._find(name)
        if job_id is None:
            try:
                job_id = base.with_retries(launch, retryable=retryable, attempts=3,
                                           before_retry=lambda: self._find(name))
            except Exception as exc:  # noqa: BLE001
                raise _user_error(exc, f"SkyPilot did not launch job {name}") from None
        if job_id is None:
            job_id = self._find(name)
        return JobHandle(backend="skypilot", job_name=name, provider_id=str(job_id),
                         output_uri=request.extra["outputs"], extra=dict(request.extra))

    def _find(self, name: str) -> int | None:
        """The newest managed job called `name`, or None."""
        records = [r for r in self._records(name_match=name) if _field(r, "job_name") == name]
        return max((_field(r, "job_id") for r in records), default=None)

    def _records(self, **filters: Any) -> list[Any]:
        sky = self._sdk()
        try:
            answer = sky.get(sky.jobs.queue_v2(refresh=False, skip_finished=False, fields=queue_fields(),
                                               **filters))
        except Exception as exc:  # noqa: BLE001
            if type(exc).__name__ == "ClusterNotUpError":
                return []  # no jobs controller yet: no managed jobs
            raise _user_error(exc, "cannot list SkyPilot managed jobs") from None
        return list(answer[0] if isinstance(answer, tuple) else answer)

    # ------------------------------------------------------------------ status, logs, cancel

    def status(self, handle: JobHandle) -> JobStatus:
        records = self._records(job_ids=[int(handle.provider_id)])
        if not records:
            return JobStatus(State.FAILED, f"SkyPilot has no managed job {handle.provider_id} ({handle.job_name})",
                             None)
        record = records[0]
        status = _field(record, "status")
        provider_state = str(getattr(status, "value", status))
        state = state_of(provider_state)
        reason = _field(record, "failure_reason") or (REASONS.get(provider_state) if state is not State.SUCCEEDED
                                                      else None)
        if state is State.CANCELLED and not reason:
            reason = "cancelled (sky jobs cancel)"
        duration = _field(record, "job_duration")
        cost = None
        if duration and handle.extra.get("price_per_hour") is not None and state.done:
            cost = round(duration / 3600 * handle.extra["price_per_hour"], 4)
        return JobStatus(state, reason, provider_state, actual_cost=cost)

    def logs(self, handle: JobHandle, follow: bool = False) -> Iterator[str]:
        """The job's output on every node (`sky jobs logs`), line by line; with follow, until it ends."""
        sky = self._sdk()
        try:
            chunks = sky.jobs.tail_logs(job_id=int(handle.provider_id), follow=follow, preload_content=False)
        except Exception as exc:  # noqa: BLE001
            raise _user_error(exc, f"cannot read the logs of {handle.job_name}") from None
        pending = ""
        for chunk in chunks:
            if chunk is None:
                break
            pending += chunk
            *lines, pending = pending.split("\n")
            yield from lines
        if pending:
            yield pending

    def cancel(self, handle: JobHandle) -> None:
        if self.status(handle).state.done:
            return
        sky = self._sdk()
        try:
            sky.get(sky.jobs.cancel(job_ids=[int(handle.provider_id)]))
        except Exception as exc:  # noqa: BLE001
            if self.status(handle).state.done:
                return  # it ended between the two calls
            raise _user_error(exc, f"SkyPilot did not cancel {handle.job_name}") from None

    # ------------------------------------------------------------------ fetch

    def fetch(self, handle: JobHandle, dest: Path) -> Path:
        """Downloads everything under the job's output bucket folder and verifies it against manifest.json."""
        state = self.status(handle)
        if state.state is not State.SUCCEEDED:
            raise base.no_outputs_yet(handle, state)
        return base.fetch_verified(dest, lambda staging: self.download(handle.output_uri, staging),
                                   job=handle.job_name)

    def download(self, uri: str, folder: Path) -> None:
        """Copies every object under a bucket folder (s3:// or gs://) into `folder`."""
        scheme, _, rest = uri.partition("://")
        bucket, _, prefix = rest.partition("/")
        prefix = prefix.rstrip("/") + "/"
        try:
            for key, read in self._objects(scheme, bucket, prefix):
                base.inside(folder, key[len(prefix):], key).write_bytes(read())
        except errors.UserError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise errors.UserError(f"cannot download {uri}: {type(exc).__name__}: {exc}",
                                   hint="the launching identity needs read access to FTLAUNCH_SKYPILOT_BUCKET "
                                        "(docs/clouds.md, SkyPilot section)") from None

    def _objects(self, scheme: str, bucket: str, prefix: str) -> Iterator[tuple[str, Any]]:
        if scheme == "s3":
            s3 = self._storage.get("s3")
            if s3 is None:
                try:
                    import boto3
                except ImportError:
                    raise errors.MissingExtra("boto3", "sagemaker", "fetching from s3://") from None
                s3 = self._storage["s3"] = boto3.client("s3")
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"], (lambda key=obj["Key"]: s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            return
        if scheme == "gs":
            gcs = self._storage.get("gs")
            if gcs is None:
                try:
                    from google.cloud import storage
                except ImportError:
                    raise errors.MissingExtra("google-cloud-storage", "vertex", "fetching from gs://") from None
                gcs = self._storage["gs"] = storage.Client()
            for blob in gcs.list_blobs(bucket, prefix=prefix):
                yield blob.name, blob.download_as_bytes
            return
        raise errors.UserError(f"ftlaunch cannot fetch from {scheme}:// yet.",
                               hint="use an s3:// or gs:// FTLAUNCH_SKYPILOT_BUCKET, or copy the outputs with "
                                    "the cloud's own tool")

    # ------------------------------------------------------------------ the SDK

    def _sdk(self) -> Any:
        if self._sky is None:
            os.environ.setdefault("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
            try:
                import sky
                import sky.jobs  # noqa: F401
            except ImportError:
                raise errors.MissingExtra("skypilot", "skypilot", "--cloud skypilot") from None
            self._sky = sky
        return self._sky


def retryable(exc: BaseException) -> bool:
    """The API server did not answer (a connection error); SkyPilot's own errors are final."""
    import requests

    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


def queue_fields() -> tuple[str, ...]:
    """The fields asked of the jobs queue: SkyPilot's lightweight default set leaves out failure_reason, the
    real reason a job failed; ask for it too (and for what status() reads, whatever the default becomes)."""
    try:
        from sky.jobs import constants
        default = tuple(constants.DEFAULT_MANAGED_JOB_FIELDS)
    except (ImportError, AttributeError):
        default = ()
    wanted = ("job_id", "task_id", "job_name", "status", "job_duration", "failure_reason")
    return default + tuple(name for name in wanted if name not in default)


def _field(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, dict) else getattr(record, name, None)


def _user_error(exc: BaseException, what: str) -> Exception:
    """A SkyPilot answer a person can act on, as a UserError; anything else unchanged."""
    kind = type(exc).__name__
    hints = {
        "ResourcesUnavailableError": "no capacity or quota for these resources: try another --region or --gpu, "
                                     "or drop --spot",
        "NotSupportedError": "this cloud does not support part of the task; `sky check` lists enabled clouds",
        "ApiServerConnectionError": "the SkyPilot API server did not answer: `sky api status`, `sky api start`",
        "InvalidSkyPilotConfigError": "fix ~/.sky/config.yaml",
        "StorageError": "check FTLAUNCH_SKYPILOT_BUCKET and that the cloud's credentials can reach it",
    }
    if kind in hints or kind.endswith(("CloudUserIdentityError", "NoCloudAccessError")):
        return errors.UserError(f"{what}: {str(exc).strip()[:500]}",
                                hint=hints.get(kind, "run `sky check` to enable a cloud"))
    return exc


BACKEND = SkyPilotBackend
