"""SageMakerBackend: submits the rendered CreateTrainingJob with boto3, and polls, streams, stops and fetches it.

Why boto3 and not sagemaker 3.x's ModelTrainer: the request ftlaunch prints in --dry-run must be the
request it sends. With boto3 the rendered payload is CreateTrainingJob's own shape, checked against
botocore's service model, and `create_training_job(**payload)` sends it unchanged. ModelTrainer builds
its own request from a pydantic object (adding defaults, uploading source code, validating the role
through IAM), takes 2.7 s to import and pulls mlflow and pyarrow. boto3 imports in 0.2 s.

Retries: botocore's own retries are off (total_max_attempts=1) so that one policy decides:
`base.with_retries` retries throttling and 5xx answers with jittered backoff, and before each new
CreateTrainingJob it asks whether an earlier, unanswered attempt created the job (names are unique),
so a retried submit never makes a second job.
"""

from __future__ import annotations

import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Iterator

from ftlaunch.core import errors
from ftlaunch.backends import base
from ftlaunch.backends.base import Backend, JobHandle, JobRequest, JobStatus, State
from ftlaunch.backends.sagemaker import render as _render

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
PROGRESS_BYTES = 8 << 20  # uploads larger than this print progress
RETRYABLE_CODES = {"Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
                   "TooManyRequestsException", "RequestLimitExceeded", "SlowDown", "ServiceUnavailable",
                   "InternalFailure", "InternalError", "InternalServerError", "InternalServerException",
                   "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"}
STARTING = {"Starting", "Pending", "LaunchingMLInstances", "PreparingTrainingStack", "Downloading",
            "DownloadingTrainingImage"}


class SageMakerBackend(Backend):
    name = "sagemaker"

    def __init__(self, clients: dict[str, Any] | None = None, backoff_s: float = 1.0, attempts: int = 6,
                 poll_s: float = 5.0, out=None):
        """`clients`: boto3 clients by service name ("sagemaker", "s3", "logs") for tests; else made on use."""
        self._clients = dict(clients or {})
        self.backoff_s = backoff_s
        self.attempts = attempts
        self.poll_s = poll_s
        self.out = out or sys.stderr

    def render(self, plan: Any) -> JobRequest:
        return _render.render(plan)

    # ------------------------------------------------------------------ submit

    def submit(self, request: JobRequest) -> JobHandle:
        base.refuse_placeholders(request)
        region = request.extra.get("region")
        self._upload(request.uploads, region)
        sm = self._client("sagemaker", region)
        name = request.job_name

        def create() -> str:
            return sm.create_training_job(**request.payload)["TrainingJobArn"]

        try:
            arn = self._retry(create, before_retry=lambda: self._existing(name, region))
        except Exception as exc:  # noqa: BLE001 - mapped below
            if not _already_exists(exc):
                raise _user_error(exc, f"SageMaker did not accept job {name}") from None
            arn = self._existing(name, region)  # submitted before (same name): the same job
            if arn is None:
                raise
        return JobHandle(backend="sagemaker", job_name=name, provider_id=arn,
                         output_uri=request.extra["model_artifact"].rsplit("/", 1)[0],
                         extra={**request.extra, "log_group": LOG_GROUP})

    def resume(self, handle: JobHandle) -> JobHandle:
        """A new attempt of a stopped or failed job: a training job `<job>-aN` with the same request (read back
        with DescribeTrainingJob), so the same CheckpointConfig.S3Uri: SageMaker copies the checkpoints into
        /opt/ml/checkpoints before the trainer starts, and it resumes from the newest complete one. (Managed spot
        training resumes by itself after an interruption, in the same job: no resume is needed there.)"""
        job = self._describe(handle)
        state = job["TrainingJobStatus"]
        if state not in ("Stopped", "Failed"):
            raise errors.UserError(f"job {handle.job_name} is {state} on SageMaker; only a stopped or failed job "
                                   "resumes.", hint=f"cancel it first (`ftlaunch cancel {handle.job_name}`), or wait")
        attempt = int(handle.extra.get("attempt", 1)) + 1
        suffix = f"-a{attempt}"
        name = handle.job_name[:63 - len(suffix)] + suffix
        payload = {key: job[key] for key in _create_fields() if key in job}
        payload["TrainingJobName"] = name
        region = handle.extra.get("region")
        sm = self._client("sagemaker", region)
        try:
            arn = self._retry(lambda: sm.create_training_job(**payload)["TrainingJobArn"],
                              before_retry=lambda: self._existing(name, region))
        except Exception as exc:  # noqa: BLE001 - mapped below
            if not _already_exists(exc) or self._existing(name, region) is None:
                raise _user_error(exc, f"SageMaker did not accept attempt {attempt} of {handle.job_name}") from None
            arn = self._existing(name, region)
        output = payload["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        return JobHandle(backend="sagemaker", job_name=handle.job_name, provider_id=arn, output_uri=f"{output}/{name}/output",
                         extra={**handle.extra, "training_job_name": name, "attempt": attempt,
                                "model_artifact": f"{output}/{name}/output/model.tar.gz"})

    def _existing(self, name: str, region: str | None) -> str | None:
        sm = self._client("sagemaker", region)
        try:
            return self._retry(lambda: sm.describe_training_job(TrainingJobName=name))["TrainingJobArn"]
        except Exception as exc:  # noqa: BLE001
            if _code(exc) in ("ValidationException", "ResourceNotFound"):
                return None
            raise

    def _upload(self, uploads: list[dict[str, str]], region: str | None) -> None:
        if not uploads:
            return
        s3 = self._client("s3", region)
        for item in uploads:
            bucket, key = split_s3(item["destination"])
            if "content" in item:
                body = item["content"].encode()
                self._retry(lambda: s3.put_object(Bucket=bucket, Key=key, Body=body))
                continue
            base.check_unchanged(item)
            source = Path(item["source"])
            size = source.stat().st_size
            callback = _Progress(source.name, size, self.out) if size > PROGRESS_BYTES else None
            try:
                found = self._head(s3, bucket, key)
                if base.uploaded_before(item, *found):
                    print(base.REUSING.format(destination=item["destination"]), file=self.out, flush=True)
                    continue
                # one call to the final key: a large file goes up as a multipart upload, which S3 shows
                # under the key only once CompleteMultipartUpload succeeds
                extra = {"Metadata": {"sha256": item["sha256"]}} if "sha256" in item else None
                self._retry(lambda: s3.upload_file(str(source), bucket, key, Callback=callback, ExtraArgs=extra))
            except Exception as exc:  # noqa: BLE001
                raise _user_error(exc, f"uploading {source} to {item['destination']} failed") from None

    def _head(self, s3: Any, bucket: str, key: str) -> tuple[int | None, dict[str, str] | None]:
        """(size, metadata) of the object at key, or (None, None) if there is none."""
        try:
            head = self._retry(lambda: s3.head_object(Bucket=bucket, Key=key))
        except Exception as exc:  # noqa: BLE001
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None, None
            raise
        return head["ContentLength"], head.get("Metadata") or {}

    # ------------------------------------------------------------------ status, logs, cancel

    def status(self, handle: JobHandle) -> JobStatus:
        job = self._describe(handle)
        state, secondary = job["TrainingJobStatus"], job.get("SecondaryStatus")
        provider_state = f"{state} ({secondary})" if secondary else state
        cost = actual_cost(job, handle.extra)
        reason = job.get("FailureReason")
        if state == "Completed":
            return JobStatus(State.SUCCEEDED, None, provider_state, actual_cost=cost)
        if state == "Failed":
            return JobStatus(State.FAILED, reason or _last_message(job), provider_state, actual_cost=cost)
        if state == "Stopped":
            if secondary in ("MaxRuntimeExceeded", "MaxWaitTimeExceeded"):
                why = {"MaxRuntimeExceeded": "the job ran past MaxRuntimeInSeconds (resources.max_runtime or "
                       "max_cost) and was stopped", "MaxWaitTimeExceeded": "spot capacity did not come within "
                       "MaxWaitTimeInSeconds"}[secondary]
                return JobStatus(State.FAILED, why, provider_state, actual_cost=cost)
            return JobStatus(State.CANCELLED, reason or _last_message(job) or "stopped (StopTrainingJob)",
                             provider_state, actual_cost=cost)
        if state == "Stopping":
            return JobStatus(State.RUNNING, "stopping", provider_state)
        if state in ("Deleting", "Deleted"):  # only an ended job can be deleted; its outcome is gone with it
            return JobStatus(State.CANCELLED, f"the training job was deleted in SageMaker ({state}); its outcome "
                             "can no longer be read", provider_state, actual_cost=cost)
        if secondary in STARTING:
            return JobStatus(State.PENDING, _last_message(job), provider_state)
        return JobStatus(State.RUNNING, None, provider_state)

    def _describe(self, handle: JobHandle) -> dict[str, Any]:
        sm = self._client("sagemaker", handle.extra.get("region"))
        try:
            return self._retry(lambda: sm.describe_training_job(TrainingJobName=training_job(handle)))
        except Exception as exc:  # noqa: BLE001
            raise _user_error(exc, f"cannot read SageMaker job {training_job(handle)}") from None

    def logs(self, handle: JobHandle, follow: bool = False) -> Iterator[str]:
        """Every CloudWatch stream of the job (one per instance, `<job>/algo-N-...`), in order; with follow,
        polls until the job has ended and its streams are drained."""
        logs = self._client("logs", handle.extra.get("region"))
        tokens: dict[str, str | None] = {}
        while True:
            done = follow and self.status(handle).state.done  # read before draining: nothing is missed
            streams = self._streams(logs, training_job(handle))
            for stream in streams:
                for line in self._drain(logs, stream, tokens):
                    yield f"[{stream.split('/', 1)[-1]}] {line}" if len(streams) > 1 else line
            if not follow or done:
                return
            time.sleep(self.poll_s)

    def _streams(self, logs: Any, job: str) -> list[str]:
        names, token = [], None
        while True:
            kwargs = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{job}/"}
            if token:
                kwargs["nextToken"] = token
            try:
                page = self._retry(lambda: logs.describe_log_streams(**kwargs))
            except Exception as exc:  # noqa: BLE001
                if _code(exc) == "ResourceNotFoundException":  # no job has logged in this account yet
                    return []
                raise _user_error(exc, f"cannot read CloudWatch logs of {job}") from None
            names += [s["logStreamName"] for s in page.get("logStreams", [])]
            token = page.get("nextToken")
            if not token:
                return sorted(names)

    def _drain(self, logs: Any, stream: str, tokens: dict[str, str | None]) -> Iterator[str]:
        while True:
            kwargs = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
            if tokens.get(stream):
                kwargs["nextToken"] = tokens[stream]
            page = self._retry(lambda: logs.get_log_events(**kwargs))
            for event in page.get("events", []):
                yield event["message"].rstrip("\n")
            token = page.get("nextForwardToken")
            if not page.get("events") or token == tokens.get(stream):
                tokens[stream] = token or tokens.get(stream)
                return
            tokens[stream] = token

    def cancel(self, handle: JobHandle) -> None:
        if self._describe(handle)["TrainingJobStatus"] in ("Completed", "Failed", "Stopped", "Stopping"):
            return
        sm = self._client("sagemaker", handle.extra.get("region"))
        try:
            self._retry(lambda: sm.stop_training_job(TrainingJobName=training_job(handle)))
        except Exception as exc:  # noqa: BLE001
            if _code(exc) == "ValidationException" and self._describe(handle)["TrainingJobStatus"] in (
                    "Completed", "Failed", "Stopped", "Stopping"):
                return  # it ended between the two calls
            raise _user_error(exc, f"SageMaker did not stop {training_job(handle)}") from None

    # ------------------------------------------------------------------ fetch

    def fetch(self, handle: JobHandle, dest: Path) -> Path:
        """Downloads model.tar.gz (what SageMaker made of /opt/ml/model), unpacks it and verifies it."""
        job = self._describe(handle)
        uri = (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts") or handle.extra["model_artifact"]
        if job["TrainingJobStatus"] != "Completed":
            raise base.no_outputs_yet(handle, self.status(handle))
        bucket, key = split_s3(uri)
        s3 = self._client("s3", handle.extra.get("region"))

        def unpack(staging: Path) -> None:
            # streamed to a file beside the staging folder, then unpacked member by member: memory stays
            # bounded whatever the size of the model (a merged 8B model is 16 GB)
            archive = staging.parent / f".{staging.name}.model.tar.gz"
            try:
                try:
                    self._retry(lambda: s3.download_file(bucket, key, str(archive)))
                except Exception as exc:  # noqa: BLE001
                    raise _user_error(exc, f"cannot download {uri}") from None
                with tarfile.open(archive, mode="r:gz") as tar:
                    tar.extractall(staging, filter="data")
            finally:
                archive.unlink(missing_ok=True)

        return base.fetch_verified(dest, unpack, job=handle.job_name)

    # ------------------------------------------------------------------ clients

    def _client(self, service: str, region: str | None) -> Any:
        if service not in self._clients:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise errors.MissingExtra("boto3", "sagemaker", "--cloud sagemaker") from None
            config = Config(retries={"total_max_attempts": 1}, user_agent_extra="ftlaunch")
            self._clients[service] = boto3.session.Session().client(service, region_name=region, config=config)
        return self._clients[service]

    def _retry(self, call, before_retry=None):
        return base.with_retries(call, retryable=retryable, attempts=self.attempts, base_s=self.backoff_s,
                                 before_retry=before_retry)


def retryable(exc: BaseException) -> bool:
    """Throttling, 5xx answers and dropped connections: worth another try."""
    try:
        from botocore import exceptions as bx
    except ImportError:
        return False
    if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError)):
        return True
    if isinstance(exc, bx.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return _code(exc) in RETRYABLE_CODES or status == 429 or status >= 500
    return False


def actual_cost(job: dict[str, Any], extra: dict[str, Any]) -> float | None:
    """USD so far: BillableTimeInSeconds (wall-clock per instance; for managed spot already net of the spot
    savings) at the on-demand price for all instances. A spot job's billable time is not discounted again;
    for a record without the on-demand price, a spot job's TrainingTimeInSeconds at the spot price."""
    billable, price = job.get("BillableTimeInSeconds"), extra.get("price_per_hour")
    if billable is None:
        return None
    if job.get("EnableManagedSpotTraining"):
        on_demand = extra.get("on_demand_price_per_hour")
        if on_demand is not None:
            return round(billable / 3600 * on_demand, 4)
        trained = job.get("TrainingTimeInSeconds")
        return None if trained is None or price is None else round(trained / 3600 * price, 4)
    return None if price is None else round(billable / 3600 * price, 4)


def split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise errors.UserError(f"{uri} is not an s3:// URI.")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def _code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    return (response or {}).get("Error", {}).get("Code") if isinstance(response, dict) else None


def _already_exists(exc: BaseException) -> bool:
    message = str(exc).lower()
    return _code(exc) == "ResourceInUse" or (_code(exc) == "ValidationException" and "already exists" in message)


def _last_message(job: dict[str, Any]) -> str | None:
    transitions = job.get("SecondaryStatusTransitions") or []
    return transitions[-1].get("StatusMessage") if transitions else None


def training_job(handle: JobHandle) -> str:
    """The SageMaker training job of the job's current attempt (the job's own name, or `<job>-aN` after a
    resume)."""
    return handle.extra.get("training_job_name") or handle.job_name


def _create_fields() -> list[str]:
    """CreateTrainingJob's request fields, from botocore's service model: what a resume copies from
    DescribeTrainingJob (which returns those and more)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.operation_model("CreateTrainingJob").input_shape.members)


def _user_error(exc: BaseException, what: str) -> Exception:
    """An AWS answer a person can act on, as a UserError; anything else unchanged."""
    kind = type(exc).__name__
    if kind in ("NoCredentialsError", "PartialCredentialsError", "NoRegionError"):
        return errors.UserError(f"{what}: {exc}.", hint="configure AWS credentials (aws configure, AWS_PROFILE "
                                "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY); `ftlaunch check` says what is missing")
    code = _code(exc)
    if code:
        message = exc.response.get("Error", {}).get("Message", "")
        hint = {"AccessDeniedException": "the caller needs the permissions in docs/clouds.md (SageMaker section)",
                "AccessDenied": "the caller needs s3:PutObject/GetObject on the bucket (docs/clouds.md)",
                "NoSuchBucket": "create the bucket or set FTLAUNCH_S3_BUCKET to one you own",
                "ResourceLimitExceeded": "ask AWS for a higher SageMaker training quota for this instance "
                                         "type, or pick another GPU (--gpu)"}.get(code)
        return errors.UserError(f"{what}: {code}: {message}", hint=hint)
    return exc


class _Progress:
    """boto3 upload callback: prints every 10% of a large file."""

    def __init__(self, name: str, size: int, out):
        self.name, self.size, self.out = name, size, out
        self.done = 0
        self.shown = -1

    def __call__(self, chunk: int) -> None:
        self.done += chunk
        tenth = int(10 * self.done / self.size)
        if tenth != self.shown:
            self.shown = tenth
            print(f"uploading {self.name}: {100 * self.done / self.size:.0f}% of {self.size / 1e6:,.1f} MB",
                  file=self.out, flush=True)


BACKEND = SageMakerBackend
