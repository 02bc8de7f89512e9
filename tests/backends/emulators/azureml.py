"""A local Azure ML: a small REST server that answers what azure-ai-ml's MLClient calls for command jobs
(through AZUREML_DEV_URL_MFE), the run history service, and Blob Storage for the workspace's datastores
(path-style, as Azurite serves it), and that really runs jobs.

Routes (under /subscriptions/S/resourceGroups/R/providers/Microsoft.MachineLearningServices/workspaces/W):
  PUT environments/N/versions/V, PUT/GET jobs/N, POST jobs/N/cancel, GET computes/N, GET datastores/N,
  POST datastores/N/listSecrets, GET (the workspace: its discoveryUrl), GET /discovery;
  GET /history/v1.0/.../runs/N/details (status, error, start and end, logFiles as blob URLs);
  /<account>/<container>/<blob>: PUT, GET (with x-ms-range), HEAD; GET ?restype=container&comp=list.

Running a job (the emulator side of Azure ML's contract): each input's datastore folder is downloaded,
each output gets a folder, `${{inputs.X}}`/`${{outputs.Y}}` in the command become those folders, the
command runs with the job's environment variables plus AZUREML_RUN_ID and friends, its output is
written to ExperimentRun/dcid.<job>/user_logs/std_log.txt in the artifact store as it comes, and the
output folders are uploaded to their datastore paths (rw_mount) when it ends.

In the image (`emulator.engine = <the tests' dockerd>`), as Azure ML runs a command job: the image of the
job's environment (PUT environments/N/versions/V, its `image`), pulled from the 127.0.0.1 registry, runs
the command through `/bin/bash -c` with the job's variables plus AZUREML_*, the inputs and outputs
bind-mounted under /mnt/azureml/cr/j/<job>/cap/data-capability/wd (where the `${{...}}` references point),
as the image's default user; `ran[job]` records the image and user. Without an engine (the default) the
command runs here on the host folders: test_azureml's failure, cancel and retry tests use that fast path,
its end-to-end test the image.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse
from xml.sax.saxutils import escape

from . import common

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "ftlaunch-rg"
WORKSPACE = "ftlaunch-ws"
COMPUTE = "gpu-cluster"
VM_SIZE = "Standard_ND96asr_v4"
ACCOUNT = "devstoreaccount1"
DATASTORES = {"workspaceblobstore": "azureml-blobstore-test", "workspaceartifactstore": "azureml"}
PROVIDER = "/providers/Microsoft.MachineLearningServices/workspaces/"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AzureMLEmulator:
    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.blob_metadata: dict[tuple[str, str], dict[str, str]] = {}  # x-ms-meta-* of each blob's last write
        self.blob_writes: dict[tuple[str, str], int] = {}  # how many times each blob was written
        self.jobs: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}  # run history: status, error, times
        self.processes: dict[str, object] = {}
        self.engine = None  # a docker_engine.Dockerd: jobs run in their environment's image
        self.ran: dict[str, dict[str, str]] = {}
        self.environments: dict[str, dict] = {}  # "environments/N/versions/V" -> the PUT body
        self.cancelling: set[str] = set()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        # MLClient sends bearer tokens only over TLS: both servers speak https with a certificate made here
        self.ca_file = self.workdir / "emulator-ca.pem"
        tls = _tls_context(self.workdir, self.ca_file)
        self.http = _server(self)
        self.http.socket = tls.wrap_socket(self.http.socket, server_side=True)
        port = self.http.server_address[1]
        self.url = f"https://127.0.0.1:{port}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        # the recording, fault-injecting proxy in front of the management API (https in, http behind)
        self.plain = _server(self)
        self.proxy = common.Proxy(f"127.0.0.1:{self.plain.server_address[1]}")
        self.proxy.server.socket = tls.wrap_socket(self.proxy.server.socket, server_side=True)
        self.proxy.url = self.proxy.url.replace("http://", "https://")
        threading.Thread(target=self.plain.serve_forever, daemon=True).start()

    def env(self) -> dict[str, str]:
        return {"AZUREML_DEV_URL_MFE": self.proxy.url, "REQUESTS_CA_BUNDLE": str(self.ca_file), "FTLAUNCH_AZURE_BLOB_ENDPOINT": f"{self.url}/{ACCOUNT}",
                "FTLAUNCH_AZURE_SUBSCRIPTION": SUBSCRIPTION, "FTLAUNCH_AZURE_RESOURCE_GROUP": RESOURCE_GROUP,
                "FTLAUNCH_AZURE_WORKSPACE": WORKSPACE, "FTLAUNCH_AZURE_COMPUTE": COMPUTE,
                "FTLAUNCH_ACR_REGISTRY": "ftlaunchtest.azurecr.io"}

    def stop(self) -> None:
        for proc in list(self.processes.values()):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for t in self.threads:
            t.join(timeout=30)
        self.proxy.stop()
        for server in (self.http, self.plain):
            server.shutdown()
            server.server_close()

    # ----------------------------------------------------------- resources

    def workspace_id(self) -> str:
        return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}{PROVIDER}{WORKSPACE}"

    def workspace(self) -> dict:
        return {"id": self.workspace_id(), "name": WORKSPACE, "type": "Microsoft.MachineLearningServices/workspaces",
                "location": "eastus", "properties": {"discoveryUrl": f"{self.url}/discovery",
                                                     "friendlyName": WORKSPACE}}

    def datastore(self, name: str) -> dict | None:
        if name not in DATASTORES:
            return None
        return {"id": f"{self.workspace_id()}/datastores/{name}", "name": name,
                "type": "Microsoft.MachineLearningServices/workspaces/datastores",
                "properties": {"datastoreType": "AzureBlob", "accountName": ACCOUNT,
                               "containerName": DATASTORES[name], "endpoint": "core.windows.net",
                               "protocol": "https", "isDefault": name == "workspaceblobstore",
                               "credentials": {"credentialsType": "AccountKey"}}}

    def compute(self, name: str) -> dict | None:
        if name != COMPUTE:
            return None
        return {"id": f"{self.workspace_id()}/computes/{name}", "name": name, "location": "eastus",
                "type": "Microsoft.MachineLearningServices/workspaces/computes",
                "properties": {"computeType": "AmlCompute", "provisioningState": "Succeeded",
                               "properties": {"vmSize": VM_SIZE, "vmPriority": "Dedicated",
                                              "scaleSettings": {"maxNodeCount": 4, "minNodeCount": 0}}}}

    def create_job(self, name: str, body: dict) -> tuple[int, dict]:
        with self.lock:
            if name in self.jobs:
                return 400, _error("UserError", f"A job with name {name} already exists and cannot be changed.")
            props = body["properties"]
            props.update(status="Starting", services={"Studio": {"endpoint": f"{self.url}/studio/{name}"}})
            job = {"id": f"{self.workspace_id()}/jobs/{name}", "name": name,
                   "type": "Microsoft.MachineLearningServices/workspaces/jobs", "properties": props}
            self.jobs[name] = job
            self.runs[name] = {"runId": name, "status": "Starting", "createdTimeUtc": _now(), "logFiles": {}}
        thread = threading.Thread(target=self._run, args=(name,), daemon=True)
        self.threads.append(thread)
        thread.start()
        return 201, job

    def cancel(self, name: str) -> tuple[int, dict]:
        job = self.jobs.get(name)
        if job is None:
            return 404, _error("UserError", f"job {name} not found")
        if job["properties"]["status"] in ("Completed", "Failed", "Canceled"):
            return 400, _error("UserError", f"job {name} has already ended ({job['properties']['status']})")
        self._set(name, "CancelRequested")
        self.cancelling.add(name)
        return 202, {}

    def _set(self, name: str, status: str, **run) -> None:
        self.jobs[name]["properties"]["status"] = status
        self.runs[name].update(status=status, **run)

    # ----------------------------------------------------------- blobs

    def put_blob(self, container: str, name: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        with self.lock:
            self.blobs[(container, name)] = data
            self.blob_metadata[(container, name)] = dict(metadata or {})
            self.blob_writes[(container, name)] = self.blob_writes.get((container, name), 0) + 1

    def datastore_files(self, uri: str) -> list[tuple[str, bytes]]:
        """(path under the folder, data) for an azureml://datastores/<ds>/paths/<folder>/ URI."""
        store, path = re.fullmatch(r"azureml://datastores/([^/]+)/paths/(.*)", uri).groups()
        container = DATASTORES[store]
        prefix = path.rstrip("/") + "/"
        with self.lock:
            return [(n[len(prefix):], d) for (c, n), d in self.blobs.items() if c == container and n.startswith(prefix)]

    # ----------------------------------------------------------- running jobs

    def _run(self, name: str) -> None:
        props = self.jobs[name]["properties"]
        root = Path(tempfile.mkdtemp(prefix=f"azureml-{name[-8:]}-", dir=self.workdir))
        places = {}
        for key, spec in (props.get("inputs") or {}).items():
            folder = root / "inputs" / key
            folder.mkdir(parents=True)
            for rel, data in self.datastore_files(spec["uri"]):
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_bytes(data)
            places[f"inputs.{key}"] = str(folder)
        for key, spec in (props.get("outputs") or {}).items():
            folder = root / "outputs" / key
            folder.mkdir(parents=True)
            if (spec.get("mode") or "ReadWriteMount").lower() in ("readwritemount", "rw_mount"):
                # a read-write mount shows what the datastore path already holds (an earlier attempt's files)
                for rel, data in self.datastore_files(spec["uri"]):
                    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                    (folder / rel).write_bytes(data)
            places[f"outputs.{key}"] = str(folder)
        inside = f"/mnt/azureml/cr/j/{name}/cap/data-capability/wd"
        if self.engine is not None:  # the references name the mounts inside the container
            places = {k: inside + v[len(str(root)):] for k, v in places.items()}
        command = re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", lambda m: places[m.group(1)], props["command"])
        env = {"HF_HUB_OFFLINE": "1", **(props.get("environmentVariables") or {}),
               "AZUREML_RUN_ID": name, "AZUREML_ARM_WORKSPACE_NAME": WORKSPACE, "AZUREML_CR_NODE_RANK": "0",
               "AZUREML_EXPERIMENT_ID": hashlib.md5(props.get("experimentName", "").encode()).hexdigest()}
        log_name = f"ExperimentRun/dcid.{name}/user_logs/std_log.txt"
        self.runs[name]["logFiles"] = {"user_logs/std_log.txt": f"{self.url}/{ACCOUNT}/azureml/{log_name}?sv=2021&sig=x"}
        self._set(name, "Running", startTimeUtc=_now())
        image = "" if self.engine is None else \
            self.environments[re.search(r"environments/.*$", props["environmentId"]).group(0)]["properties"]["image"]
        runner, proc = common.start_job(self.engine, image, ["/bin/bash", "-c", command], env, {str(root): inside},
                                        host_command=shlex.split(command))
        self.processes[name] = proc
        threading.Thread(target=self._canceller, args=(name, proc, runner), daemon=True).start()
        log, tail = [], []
        for line in proc.stdout:
            log.append(line)
            self.put_blob("azureml", log_name, "".join(log).encode())
            if line.strip():
                tail = (tail + [line.rstrip("\n")])[-5:]
        code = proc.wait()
        if runner is not None:
            runner.finish()
            self.ran[name] = runner.ran
        for key, spec in (props.get("outputs") or {}).items():
            store, path = re.fullmatch(r"azureml://datastores/([^/]+)/paths/(.*)", spec["uri"]).groups()
            folder = root / "outputs" / key
            for file in sorted(p for p in folder.rglob("*") if p.is_file()):
                self.put_blob(DATASTORES[store], path.rstrip("/") + "/" + file.relative_to(folder).as_posix(),
                              file.read_bytes())
        shutil.rmtree(root, ignore_errors=True)
        if name in self.cancelling:
            self._set(name, "Canceled", endTimeUtc=_now())
        elif code == 0:
            self._set(name, "Completed", endTimeUtc=_now())
        else:
            message = (f"Execution failed. User process 'python' exited with status code {code}. Please check log "
                       f"file 'user_logs/std_log.txt' for error details. Error: " + " | ".join(tail))
            self._set(name, "Failed", endTimeUtc=_now(),
                      error={"error": {"code": "UserError", "message": message}})

    def _canceller(self, name: str, proc, runner=None) -> None:
        while proc.poll() is None:
            if name in self.cancelling:
                if runner is not None:
                    runner.stop()
                else:
                    os.killpg(proc.pid, signal.SIGTERM)
                return
            time.sleep(0.1)


def _tls_context(workdir: Path, ca_file: Path):
    """A server TLS context with a self-signed certificate for 127.0.0.1, written to ca_file for clients."""
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(hours=1))
            .not_valid_after(now + _dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = workdir / "emulator-key.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca_file, key_file)
    return context


def _error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def _server(emulator: AzureMLEmulator) -> http.server.ThreadingHTTPServer:
    ws = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+" + PROVIDER + r"[^/]+(/.*)?$", re.IGNORECASE)
    history = re.compile(r"^/history/v1\.0/subscriptions/.*/runs/([^/]+)/details$")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None, head: bool = False):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def _json(self, status: int, body: dict) -> None:
            self._send(status, json.dumps(body).encode(), {"Content-Type": "application/json",
                                                           "x-ms-request-id": "emulator"})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _any(self):
            url = urlparse(self.path)
            body = self._body()
            if url.path.startswith(f"/{ACCOUNT}/"):
                return self._blob(url, body)
            if url.path == "/discovery":
                return self._json(200, {"api": emulator.url, "catalog": emulator.url, "experimentation": emulator.url,
                                        "history": emulator.url, "mms": emulator.url})
            if m := history.match(url.path):
                run = emulator.runs.get(m.group(1))
                return self._json(200, run) if run else self._json(404, _error("NotFound", "no such run"))
            m = ws.match(url.path)
            if not m:
                return self._json(404, _error("NotFound", f"no route {url.path}"))
            rest = m.group(1) or ""
            parts = [p for p in rest.split("/") if p]
            if not parts and self.command == "GET":
                return self._json(200, emulator.workspace())
            if parts[:1] == ["environments"] and self.command == "PUT":
                env = json.loads(body)
                emulator.environments["/".join(parts[:4])] = env
                return self._json(200, {"id": f"{emulator.workspace_id()}{rest}", "name": parts[-1], **env})
            if parts[:1] == ["jobs"] and len(parts) == 2:
                if self.command == "PUT":
                    return self._json(*emulator.create_job(parts[1], json.loads(body)))
                job = emulator.jobs.get(parts[1])
                return self._json(200, job) if job else self._json(404, _error("UserError", f"job {parts[1]} not found"))
            if parts[:1] == ["jobs"] and parts[2:] == ["cancel"]:
                return self._json(*emulator.cancel(parts[1]))
            if parts[:1] == ["computes"] and len(parts) == 2:
                found = emulator.compute(parts[1])
                return self._json(200, found) if found else self._json(404, _error("NotFound", "no such compute"))
            if parts[:1] == ["datastores"] and len(parts) == 2:
                found = emulator.datastore(parts[1])
                return self._json(200, found) if found else self._json(404, _error("NotFound", "no such datastore"))
            if parts[:1] == ["datastores"] and parts[2:] == ["listSecrets"]:
                return self._json(200, {"secretsType": "AccountKey", "key": "ZW11bGF0b3Itb25seS1rZXk="})
            return self._json(404, _error("NotFound", f"no route {self.command} {url.path}"))

        def _blob(self, url, body: bytes) -> None:
            _, _account, container, *rest = url.path.split("/", 3)
            name = unquote(rest[0]) if rest else ""
            query = parse_qs(url.query)
            stamp = {"ETag": '"0x1"', "Last-Modified": email.utils.formatdate(usegmt=True),
                     "x-ms-version": "2025-01-05", "x-ms-request-id": "emulator"}
            if self.command == "GET" and query.get("comp") == ["list"]:
                prefix = query.get("prefix", [""])[0]
                with emulator.lock:
                    rows = sorted((n, len(d)) for (c, n), d in emulator.blobs.items()
                                  if c == container and n.startswith(prefix))
                xml = "".join(f"<Blob><Name>{escape(n)}</Name><Properties><Content-Length>{size}</Content-Length>"
                              f"<BlobType>BlockBlob</BlobType><Etag>0x1</Etag></Properties></Blob>" for n, size in rows)
                data = (f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="{emulator.url}/" '
                        f'ContainerName="{container}"><Prefix>{escape(prefix)}</Prefix><Blobs>{xml}</Blobs>'
                        f"<NextMarker /></EnumerationResults>").encode()
                return self._send(200, data, {**stamp, "Content-Type": "application/xml"})
            if self.command == "PUT":
                emulator.put_blob(container, name, body, {k.lower()[len("x-ms-meta-"):]: v for k, v in self.headers.items()
                                                          if k.lower().startswith("x-ms-meta-")})
                return self._send(201, b"", {**stamp, "Content-MD5": "", "x-ms-request-server-encrypted": "true"})
            if self.command in ("GET", "HEAD"):
                with emulator.lock:
                    data = emulator.blobs.get((container, name))
                if data is None:
                    return self._send(404, b"", {**stamp, "x-ms-error-code": "BlobNotFound"}, head=self.command == "HEAD")
                headers = {**stamp, "Content-Type": "application/octet-stream", "x-ms-blob-type": "BlockBlob",
                           "Accept-Ranges": "bytes",
                           **{f"x-ms-meta-{k}": v for k, v in emulator.blob_metadata.get((container, name), {}).items()}}
                wanted = self.headers.get("x-ms-range") or self.headers.get("Range")
                if wanted and data:
                    start, _, end = wanted.split("=", 1)[1].partition("-")
                    start, end = int(start), min(int(end or len(data) - 1), len(data) - 1)
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                    return self._send(206, data[start:end + 1], headers, head=self.command == "HEAD")
                return self._send(200, data, headers, head=self.command == "HEAD")
            return self._send(405, b"", stamp)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _any

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server
