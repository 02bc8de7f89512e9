"""A local Vertex AI: a small REST server for the custom-jobs API (and Cloud Logging's entries:list), with
gcp-storage-emulator for GCS, that really runs jobs.

Routes: POST/GET /v1/projects/P/locations/L/customJobs (create, list with `display_name="..."`),
GET .../customJobs/ID, POST .../customJobs/ID:cancel, POST /v2/entries:list. Bodies are parsed and
answered through the real protobuf type (aiplatform_v1.CustomJob), so a request the type rejects fails.

Running a job: the runner copies the job's GCS objects into a folder that stands for the /gcs Cloud
Storage FUSE mount (FTLAUNCH_GCS_MOUNT), starts the container command with its env plus AIP_MODEL_DIR,
AIP_CHECKPOINT_DIR, AIP_TENSORBOARD_LOG_DIR and CLUSTER_SPEC, records each output line as a log entry,
then copies what the job wrote under base_output_directory back to GCS and sets the job's state.

In the image (`emulator.engine = <the tests' dockerd>`), as Vertex runs a worker pool: containerSpec
imageUri pulled from the 127.0.0.1 registry, `command` as the entrypoint with `args`, the spec's env plus
AIP_* and CLUSTER_SPEC, the folder bind-mounted at /gcs (standing for Cloud Storage FUSE), the image's
default user; `ran[job_id]` records the image and user. Without an engine (the default) the command runs
here with FTLAUNCH_GCS_MOUNT pointing at the folder: test_vertex's failure, cancel and retry tests use that
fast path, its end-to-end test the image.
"""

from __future__ import annotations

import datetime as _dt
import http.server
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from . import common

PROJECT = "ftlaunch-test"
BUCKET = "ftlaunch-test-bucket"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class VertexEmulator:
    def __init__(self, workdir: Path):
        from gcp_storage_emulator.server import create_server

        self.workdir = Path(workdir)
        self.stockouts = 0  # how many of the next jobs fail at once for want of GPUs in the zone
        gcs_port = common.free_port()
        self.gcs = create_server("127.0.0.1", gcs_port, in_memory=True, default_bucket=BUCKET)
        self.gcs.start()
        self.gcs_url = f"http://127.0.0.1:{gcs_port}"
        self.jobs: dict[str, dict] = {}
        self.entries: list[dict] = []
        self.processes: dict[str, object] = {}
        self.engine = None  # a docker_engine.Dockerd: jobs run in their image
        self.ran: dict[str, dict[str, str]] = {}
        self.cancelling: set[str] = set()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.counter = 1000
        self.http = _server(self)
        self.api_url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.proxy = common.Proxy(f"127.0.0.1:{self.http.server_address[1]}")
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def env(self) -> dict[str, str]:
        return {"FTLAUNCH_VERTEX_API_ENDPOINT": self.proxy.url, "FTLAUNCH_GCP_LOGGING_ENDPOINT": self.proxy.url,
                "STORAGE_EMULATOR_HOST": self.gcs_url, "FTLAUNCH_GCP_PROJECT": PROJECT, "FTLAUNCH_GCS_BUCKET": BUCKET,
                "FTLAUNCH_ARTIFACT_REGISTRY": f"us-central1-docker.pkg.dev/{PROJECT}/ftlaunch"}

    def storage(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        os.environ["STORAGE_EMULATOR_HOST"] = self.gcs_url
        return storage.Client(project=PROJECT, credentials=AnonymousCredentials())

    def stop(self) -> None:
        for proc in list(self.processes.values()):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for t in self.threads:
            t.join(timeout=30)
        self.proxy.stop()
        self.http.shutdown()
        self.http.server_close()
        self.gcs.stop()

    # ----------------------------------------------------------- the API

    def create(self, parent: str, body: bytes) -> dict:
        from google.cloud import aiplatform_v1

        job = json.loads(aiplatform_v1.CustomJob.to_json(aiplatform_v1.CustomJob.from_json(body)))
        with self.lock:
            self.counter += 1
            job_id = str(self.counter)
        job.update(name=f"{parent}/customJobs/{job_id}", state="JOB_STATE_PENDING", createTime=_now(),
                   updateTime=_now())
        self.jobs[job["name"]] = job
        thread = threading.Thread(target=self._run, args=(job["name"],), daemon=True)
        self.threads.append(thread)
        thread.start()
        return job

    def cancel(self, name: str) -> tuple[int, dict]:
        job = self.jobs.get(name)
        if job is None:
            return 404, {"error": {"code": 404, "message": f"{name} not found", "status": "NOT_FOUND"}}
        if job["state"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            return 400, {"error": {"code": 400, "status": "FAILED_PRECONDITION",
                                   "message": f"Cannot cancel job {name} in state {job['state']}."}}
        job["state"] = "JOB_STATE_CANCELLING"
        self.cancelling.add(name)
        return 200, {}

    def list_entries(self, body: dict) -> dict:
        flt = body.get("filter", "")
        job_id = re.search(r'resource\.labels\.job_id="([^"]+)"', flt).group(1)
        since = re.search(r'timestamp>"([^"]+)"', flt)
        rows = [e for e in self.entries if e["resource"]["labels"]["job_id"] == job_id
                and (since is None or e["timestamp"] > since.group(1))]
        return {"entries": rows}

    # ----------------------------------------------------------- running jobs

    def _run(self, name: str) -> None:
        job = self.jobs[name]
        if self.stockouts > 0:  # the zone has no GPU of the job's kind: it fails before its container starts
            self.stockouts -= 1
            job.update(state="JOB_STATE_FAILED", endTime=_now(), updateTime=_now(), error={"code": 8, "message": (
                "The zone 'us-central1-a' does not have enough resources available to fulfill the request. "
                "Try a different zone, or try again later. '(resource type:compute)'.")})
            return
        job_id = name.rsplit("/", 1)[-1]
        spec = job["jobSpec"]
        pool = spec["workerPoolSpecs"][0]
        container = pool["containerSpec"]
        base = spec["baseOutputDirectory"]["outputUriPrefix"].rstrip("/")
        mount = Path(tempfile.mkdtemp(prefix=f"gcs-{job_id}-", dir=self.workdir))
        bucket_name, _, base_path = base[5:].partition("/")
        job_root = base_path.rsplit("/", 1)[0]  # <prefix>/jobs/<job>: inputs and outputs
        client = self.storage()
        # what the job reads through its /gcs mount (all of the bucket on Vertex): its own folder and the
        # content-addressed inputs shared by every job under the prefix
        inputs_root = job_root.rsplit("/jobs/", 1)[0] + "/inputs/"
        blobs = [*client.list_blobs(bucket_name, prefix=job_root + "/"), *client.list_blobs(bucket_name, prefix=inputs_root)]
        for blob in blobs:
            target = mount / bucket_name / blob.name
            target.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(target))
        env = {"HF_HUB_OFFLINE": "1", **{e["name"]: e["value"] for e in container.get("env", [])},
               "AIP_MODEL_DIR": f"{base}/model/", "AIP_CHECKPOINT_DIR": f"{base}/checkpoints/",
               "AIP_TENSORBOARD_LOG_DIR": f"{base}/logs/", "CLOUD_ML_JOB_ID": job_id,
               "CLUSTER_SPEC": json.dumps({"cluster": {"workerpool0": ["workerpool0-0:2222"]},
                                           "environment": "cloud", "task": {"type": "workerpool0", "index": 0}})}
        command = container["command"] + container.get("args", [])
        job.update(state="JOB_STATE_RUNNING", startTime=_now(), updateTime=_now())
        runner, proc = common.start_job(self.engine, container["imageUri"], command, env, {str(mount): "/gcs"},
                                        host_env={"FTLAUNCH_GCS_MOUNT": str(mount)})
        self.processes[name] = proc
        threading.Thread(target=self._canceller, args=(name, proc, runner), daemon=True).start()
        tail = []
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail = (tail + [line])[-5:] if line.strip() else tail
            self.entries.append({"logName": f"projects/{PROJECT}/logs/workerpool0-0", "timestamp": _now(),
                                 "resource": {"type": "ml_job", "labels": {"job_id": job_id, "task_name": "workerpool0-0"}},
                                 "textPayload": line, "severity": "INFO"})
        code = proc.wait()
        if runner is not None:
            runner.finish()
            self.ran[job_id] = runner.ran
        local_base = mount / bucket_name / base_path
        if local_base.exists():
            for path in sorted(p for p in local_base.rglob("*") if p.is_file()):
                client.bucket(bucket_name).blob(f"{base_path}/{path.relative_to(local_base).as_posix()}") \
                    .upload_from_filename(str(path))
        shutil.rmtree(mount, ignore_errors=True)
        if name in self.cancelling:
            job.update(state="JOB_STATE_CANCELLED", error={"code": 1, "message": "CANCELED"})
        elif code == 0:
            job.update(state="JOB_STATE_SUCCEEDED")
        else:
            job.update(state="JOB_STATE_FAILED", error={"code": 3, "message": (
                f"The replica workerpool0-0 exited with a non-zero status of {code}. Termination reason: Error. "
                "Last lines: " + " | ".join(tail))})
        job.update(endTime=_now(), updateTime=_now())

    def _canceller(self, name: str, proc, runner=None) -> None:
        while proc.poll() is None:
            if name in self.cancelling:
                if runner is not None:
                    runner.stop()
                else:
                    os.killpg(proc.pid, signal.SIGTERM)
                return
            time.sleep(0.1)


def _server(emulator: VertexEmulator) -> http.server.ThreadingHTTPServer:
    jobs_path = re.compile(r"^/v1/(projects/[^/]+/locations/[^/]+)/customJobs$")
    job_path = re.compile(r"^/v1/(projects/[^/]+/locations/[^/]+/customJobs/[^/:]+)(:cancel)?$")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_POST(self):
            url = urlparse(self.path)
            body = self._body()
            if url.path == "/v2/entries:list":
                return self._reply(200, emulator.list_entries(json.loads(body or b"{}")))
            if m := jobs_path.match(url.path):
                try:
                    return self._reply(200, emulator.create(m.group(1), body))
                except Exception as exc:  # noqa: BLE001 - the protobuf type refused the body
                    return self._reply(400, {"error": {"code": 400, "message": str(exc), "status": "INVALID_ARGUMENT"}})
            if (m := job_path.match(url.path)) and m.group(2):
                return self._reply(*emulator.cancel(m.group(1)))
            self._reply(404, {"error": {"code": 404, "message": f"no route {url.path}", "status": "NOT_FOUND"}})

        def do_GET(self):
            url = urlparse(self.path)
            if m := jobs_path.match(url.path):
                flt = parse_qs(url.query).get("filter", [""])[0]
                want = re.search(r'display_name="([^"]+)"', flt)
                rows = [j for j in emulator.jobs.values() if j["name"].startswith(m.group(1))
                        and (want is None or j["displayName"] == want.group(1))]
                return self._reply(200, {"customJobs": rows})
            if (m := job_path.match(url.path)) and not m.group(2):
                job = emulator.jobs.get(m.group(1))
                if job is None:
                    return self._reply(404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})
                return self._reply(200, job)
            self._reply(404, {"error": {"code": 404, "message": f"no route {url.path}", "status": "NOT_FOUND"}})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server
