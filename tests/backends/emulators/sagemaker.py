"""A local SageMaker: moto's server (S3, IAM, SageMaker, CloudWatch Logs, Secrets Manager) plus what moto
leaves out, added on the wire or in moto's own backend objects, never in ftlaunch's code:

- jobs really run: for each CreateTrainingJob, a runner thread lays out /opt/ml under a temporary
  folder (channels downloaded from S3, hyperparameters.json, resourceconfig.json), starts the job's
  ContainerEntrypoint + ContainerArguments with its Environment and SAGEMAKER_BASE_DIR pointing there,
  streams its output to CloudWatch Logs (/aws/sagemaker/TrainingJobs, `<job>/algo-1-<time>`), then tars
  /opt/ml/model into <S3OutputPath>/<job>/output/model.tar.gz and sets the job's status, FailureReason
  (from /opt/ml/output/failure), SecondaryStatus and BillableTimeInSeconds;
- in the image (`emulator.engine = <the tests' dockerd>`), as SageMaker runs a job: TrainingImage pulled
  from the 127.0.0.1 registry and run with ContainerEntrypoint + ContainerArguments, the job's Environment
  plus what SageMaker sets (TRAINING_JOB_NAME, TRAINING_JOB_ARN, the role's credentials: moto's here), the
  temporary folder mounted at /opt/ml (no SAGEMAKER_BASE_DIR relocation), as the image's default user
  (root); `ran[job]` records the image and user. Without an engine (the default) the command runs as a
  process here with SAGEMAKER_BASE_DIR pointing at the folder: test_sagemaker's failure, cancel and retry
  tests use that fast path, its end-to-end test the image;
- checkpoints: CheckpointConfig.S3Uri is downloaded into /opt/ml/checkpoints before the job starts, and
  new or changed files there are uploaded to it while the job runs and once more when it ends (SageMaker
  never deletes from the checkpoint URI);
- DescribeTrainingJob answers with the job's Environment (moto drops it) and its AlgorithmSpecification as
  sent (moto adds made-up metric definitions);
- StopTrainingJob (moto lacks it) stops the runner's process: Stopping, then Stopped;
- a second CreateTrainingJob with a taken name is refused with ResourceInUse, as SageMaker does
  (moto would silently replace the job).

Requests reach moto through `common.Proxy`, which records them and injects faults.
"""

from __future__ import annotations

import io
import logging
import json
import math
import os
import signal
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from . import common

ACCOUNT = "123456789012"
REGION = "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/ftlaunch-test"
BUCKET = "ftlaunch-test"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"


class SageMakerEmulator:
    def __init__(self, workdir: Path):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.workdir = Path(workdir)
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        self.proxy = common.Proxy(f"{host}:{port}", handle=self._handle)
        self.processes: dict[str, object] = {}
        self.stopping: set[str] = set()
        self.threads: list[threading.Thread] = []
        self.seen: set[str] = set()
        self.engine = None  # a docker_engine.Dockerd: jobs run in their image
        self.ran: dict[str, dict[str, str]] = {}
        self.bodies: dict[str, dict] = {}  # CreateTrainingJob requests by job name
        self._stop = threading.Event()
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()
        self.s3 = self.client("s3")
        # moto keeps its accounts in the test process: a second emulator in one session (test_failover's, then
        # test_sagemaker's) finds the bucket, role and log group the first one made
        for make in (lambda: self.s3.create_bucket(Bucket=BUCKET),
                     lambda: self.client("iam").create_role(RoleName="ftlaunch-test", AssumeRolePolicyDocument="{}"),
                     lambda: self.client("logs").create_log_group(logGroupName=LOG_GROUP)):
            try:
                make()
            except Exception as exc:  # noqa: BLE001 - only "it is there already" is expected
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists", "EntityAlreadyExists",
                                "ResourceAlreadyExistsException"):
                    raise

    # ----------------------------------------------------------- for tests

    def env(self) -> dict[str, str]:
        """Environment for a process (the ftlaunch CLI) that should talk to this SageMaker."""
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION, "AWS_ENDPOINT_URL": self.moto_url,
                "AWS_ENDPOINT_URL_SAGEMAKER": self.proxy.url, "AWS_EC2_METADATA_DISABLED": "true",
                "FTLAUNCH_SAGEMAKER_ROLE": ROLE, "FTLAUNCH_S3_BUCKET": BUCKET,
                "FTLAUNCH_ECR_REGISTRY": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"}

    def client(self, service: str, via_proxy: bool = False):
        import boto3
        from botocore.config import Config

        return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing").client(
            service, region_name=REGION, endpoint_url=self.proxy.url if via_proxy else self.moto_url,
            config=Config(retries={"total_max_attempts": 1}))

    def job(self, name: str):
        from moto.backends import get_backend

        return get_backend("sagemaker")[ACCOUNT][REGION].training_jobs.get(name)

    def stop(self) -> None:
        self._stop.set()
        for proc in list(self.processes.values()):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for t in self.threads:
            t.join(timeout=30)
        self.proxy.stop()
        self.moto.stop()

    # ----------------------------------------------------------- what moto lacks, on the wire

    def _handle(self, request: common.Request):
        action = request.target
        if action == "CreateTrainingJob":
            name = request.json().get("TrainingJobName")
            if self.job(name) is not None:
                return common.aws_error(400, "ResourceInUse", "Training job names must be unique within an AWS "
                                        f"account and region, and a training job with this name already exists "
                                        f"(arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name})")
        if action == "DescribeTrainingJob":
            name = request.json().get("TrainingJobName")
            body = self.bodies.get(name)
            status, headers, raw = self.proxy.forward(request)
            if status == 200 and body:  # moto drops Environment and invents MetricDefinitions
                answer = json.loads(raw)
                answer.update({k: body[k] for k in ("Environment", "AlgorithmSpecification") if k in body})
                raw = json.dumps(answer).encode()
            return status, headers, raw
        if action == "StopTrainingJob":
            name = request.json()["TrainingJobName"]
            job = self.job(name)
            if job is None:
                return common.aws_error(400, "ValidationException", f"Requested resource not found: {name}")
            if job.training_job_status != "InProgress":
                return common.aws_error(400, "ValidationException",
                                        f"The job status is {job.training_job_status}; only InProgress jobs stop")
            job.training_job_status, job.secondary_status = "Stopping", "Stopping"
            self.stopping.add(name)
            return 200, {"Content-Type": "application/x-amz-json-1.1"}, b"{}"
        return None

    # ----------------------------------------------------------- running jobs

    def _watch(self) -> None:
        while not self._stop.is_set():
            for request, status in self.proxy.calls("CreateTrainingJob"):
                body = request.json()
                name = body["TrainingJobName"]
                if name in self.seen or self.job(name) is None:
                    continue
                self.seen.add(name)
                self.bodies[name] = body
                job = self.job(name)
                job.training_job_status, job.secondary_status = "InProgress", "Starting"
                job.secondary_status_transitions = [{"Status": "Starting", "StartTime": time.time(),
                                                     "StatusMessage": "Preparing the instances for training"}]
                job.training_end_time = None
                job.model_artifacts = None
                thread = threading.Thread(target=self._run, args=(body,), daemon=True)
                self.threads.append(thread)
                thread.start()
            time.sleep(0.1)

    def _run(self, body: dict) -> None:
        name = body["TrainingJobName"]
        job = self.job(name)
        root = Path(tempfile.mkdtemp(prefix=f"opt-ml-{name[:20]}-", dir=self.workdir))
        for channel in body.get("InputDataConfig", []):
            self._download(channel["DataSource"]["S3DataSource"]["S3Uri"], root / "input/data" / channel["ChannelName"])
        config = root / "input/config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "hyperparameters.json").write_text(json.dumps(body.get("HyperParameters", {})))
        (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"],
                                                                "network_interface_name": "eth0"}))
        for sub in ("model", "output", "checkpoints"):
            (root / sub).mkdir(exist_ok=True)
        checkpoint_uri = (body.get("CheckpointConfig") or {}).get("S3Uri")
        if checkpoint_uri:
            self._download(checkpoint_uri, root / "checkpoints")
        algo = body["AlgorithmSpecification"]
        env = {**body.get("Environment", {}), "TRAINING_JOB_NAME": name, "TRAINING_JOB_ARN": job.arn,
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION,
               "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": self.moto_url, "HF_HUB_OFFLINE": "1"}
        command = algo["ContainerEntrypoint"] + algo.get("ContainerArguments", [])
        stream = f"{name}/algo-1-{int(time.time())}"
        logs = self.client("logs")
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        job.secondary_status = "Training"
        started = time.time()
        container, proc = common.start_job(self.engine, algo["TrainingImage"], command, env, {str(root): "/opt/ml"},
                                           host_env={"SAGEMAKER_BASE_DIR": str(root)})
        self.processes[name] = proc
        stopper = threading.Thread(target=self._stopper, args=(name, proc, container), daemon=True)
        stopper.start()
        if checkpoint_uri:
            threading.Thread(target=self._sync_checkpoints, args=(proc, root / "checkpoints", checkpoint_uri),
                             daemon=True).start()
        batch: list[str] = []
        last = time.time()
        for line in proc.stdout:
            batch.append(line.rstrip("\n") or " ")
            if time.time() - last > 0.5:
                self._put(logs, stream, batch)
                batch, last = [], time.time()
        code = proc.wait()
        if checkpoint_uri:
            self._upload_changed(root / "checkpoints", checkpoint_uri, {})
        if container is not None:
            container.finish()
            self.ran[name] = container.ran
        self._put(logs, stream, batch)
        job.billable_time_in_seconds = max(1, math.ceil(time.time() - started))
        job.training_end_time = time.time()
        if name in self.stopping:
            job.training_job_status, job.secondary_status = "Stopped", "Stopped"
        elif code == 0:
            uri = f"{body['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{name}/output/model.tar.gz"
            job.secondary_status = "Uploading"
            self._upload_tar(root / "model", uri)
            job.model_artifacts = {"S3ModelArtifacts": uri}
            job.training_job_status, job.secondary_status = "Completed", "Completed"
        else:
            failure = root / "output/failure"
            reason = failure.read_text() if failure.exists() else f"exit code {code}"
            job.failure_reason = f"AlgorithmError: {reason}"
            job.training_job_status, job.secondary_status = "Failed", "Failed"

    def _stopper(self, name: str, proc, container=None) -> None:
        while proc.poll() is None and not self._stop.is_set():
            if name in self.stopping:
                if container is not None:
                    container.stop()
                else:
                    os.killpg(proc.pid, signal.SIGTERM)
                return
            time.sleep(0.1)

    def _sync_checkpoints(self, proc, folder: Path, uri: str) -> None:
        seen: dict[str, tuple[int, int]] = {}
        while proc.poll() is None and not self._stop.is_set():
            self._upload_changed(folder, uri, seen)
            time.sleep(0.5)

    def _upload_changed(self, folder: Path, uri: str, seen: dict[str, tuple[int, int]]) -> None:
        bucket, _, prefix = uri[5:].partition("/")
        for path in sorted(folder.rglob("*")):
            try:
                if not path.is_file():
                    continue
                stat = path.stat()
                rel = path.relative_to(folder).as_posix()
                if seen.get(rel) == (stat.st_size, stat.st_mtime_ns):
                    continue
                self.s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{rel}")
                seen[rel] = (stat.st_size, stat.st_mtime_ns)
            except (FileNotFoundError, OSError):
                continue  # written or removed while we looked: the next pass (or the final one) takes it

    def _put(self, logs, stream: str, lines: list[str]) -> None:
        if lines:
            now = int(time.time() * 1000)
            logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream,
                                logEvents=[{"timestamp": now, "message": line} for line in lines])

    def _download(self, uri: str, folder: Path) -> None:
        bucket, _, prefix = uri[5:].partition("/")
        folder.mkdir(parents=True, exist_ok=True)
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix):].lstrip("/") or obj["Key"].rsplit("/", 1)[-1]
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(bucket, obj["Key"], str(folder / rel))

    def _upload_tar(self, folder: Path, uri: str) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in sorted(folder.rglob("*")):
                tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
        bucket, _, key = uri[5:].partition("/")
        self.s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
