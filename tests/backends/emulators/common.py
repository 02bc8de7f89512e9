"""Pieces the emulators share: free ports, a fault-injecting HTTP proxy, and running "the container":
either the job's command as a process here (`start_container`, fast: failure, cancel and retry tests) or,
as the provider does, `docker run` of the image the request names, pulled from the tests' 127.0.0.1
registry, with the provider's entrypoint, environment, mounts and user (`Container.start`).

The proxy sits between a real SDK and an emulator: it records every request, and can answer a request
itself (429/503 throttling) or forward it and replace the answer (a 500 after the job was created), so
tests exercise the SDK's and the backend's retry paths over real HTTP.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from typing import Any, Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Request:
    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes):
        self.method, self.path, self.headers, self.body = method, path, headers, body

    @property
    def target(self) -> str:
        """The AWS JSON action (X-Amz-Target, e.g. SageMaker.CreateTrainingJob), or the path."""
        return self.headers.get("X-Amz-Target", "").split(".")[-1] or self.path

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


Reply = tuple[int, dict[str, str], bytes]


class Fault:
    """Answers matching requests `times` times: before forwarding (`after=False`) or after it."""

    def __init__(self, match: Callable[[Request], bool], reply: Reply, times: int = 1, after: bool = False):
        self.match, self.reply, self.times, self.after = match, reply, times, after

    def take(self, request: Request, after: bool) -> Reply | None:
        if self.after == after and self.times > 0 and self.match(request):
            self.times -= 1
            return self.reply
        return None


class Proxy:
    """A recording, fault-injecting HTTP proxy to `upstream` ("127.0.0.1:PORT"). `handle(request)` may
    answer a request itself (an emulator feature the upstream lacks) by returning a Reply."""

    def __init__(self, upstream: str, handle: Callable[[Request], Reply | None] | None = None):
        self.upstream = upstream
        self.handle = handle
        self.faults: list[Fault] = []
        self.requests: list[tuple[Request, int]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
                reply = proxy._before(request) or (proxy.handle(request) if proxy.handle else None)
                if reply is None:
                    reply = proxy._forward(request)
                    reply = proxy._after(request) or reply
                with proxy.lock:
                    proxy.requests.append((request, reply[0]))
                status, headers, body = reply
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _before(self, request: Request) -> Reply | None:
        with self.lock:
            return next((r for f in self.faults if (r := f.take(request, after=False))), None)

    def _after(self, request: Request) -> Reply | None:
        with self.lock:
            return next((r for f in self.faults if (r := f.take(request, after=True))), None)

    def forward(self, request: Request) -> Reply:
        """The upstream's answer to `request` (for an emulator's `handle` that amends it)."""
        return self._forward(request)

    def _forward(self, request: Request) -> Reply:
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("connection",)}
        conn.request(request.method, request.path, body=request.body, headers=headers)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response.status, dict(response.getheaders()), body

    def calls(self, target: str) -> list[tuple[Request, int]]:
        with self.lock:
            return [(r, s) for r, s in self.requests if r.target == target]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def aws_error(status: int, code: str, message: str) -> Reply:
    return status, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code}, \
        json.dumps({"__type": code, "message": message}).encode()


def start_container(command: list[str], env: dict[str, str], cwd: str) -> subprocess.Popen:
    """Runs a job's container command here: `python` is this interpreter (the image's would be)."""
    argv = [sys.executable if i == 0 and c == "python" else c for i, c in enumerate(command)]
    return subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True)


def start_job(engine, image: str, command: list[str], env: dict[str, str], mounts: dict[str, str],
              host_env: dict[str, str] | None = None, host_command: list[str] | None = None):
    """Starts a job: in its image when the emulator has an engine (as the provider runs it), else on the host
    (the fast tests of failure, cancel and retry paths), with env plus PATH, HOME and `host_env` (the
    relocations that stand in for the mounts), in the first mount's host folder. Returns (Container or None,
    the process whose output is the job's log)."""
    if engine is not None:
        container = Container(engine, image, command, env, mounts)
        return container, container.start()
    host = {**env, "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **(host_env or {})}
    return None, start_container(host_command or command, host, next(iter(mounts)))


class Container:
    """Starts a job the way a provider does, in the tests' private dockerd (classic client): pulls `image`
    from the registry the request names, then `docker run --network host` (dockerd runs with --bridge=none;
    the emulators listen on 127.0.0.1, nothing leaves the machine) with the provider's entrypoint override,
    environment, bind mounts and user. Values reach the container by name (`-e KEY`, taken from the client's
    environment), so none appears in a command line. What ran is recorded: `ran` = {image, image_id, user}."""

    def __init__(self, engine, image: str, command: list[str], env: dict[str, str],
                 mounts: dict[str, str], user: str | None = None, workdir: str | None = None):
        self.engine, self.image, self.command, self.env = engine, image, command, env
        self.mounts, self.user, self.workdir = mounts, user, workdir
        self.name = f"ftl-emu-{uuid.uuid4().hex[:12]}"
        self.ran: dict[str, str] = {}

    def start(self) -> subprocess.Popen:
        self.engine.docker("pull", "--quiet", self.image)
        argv = [_client(), "run", "--name", self.name, "--network", "host", "--entrypoint", self.command[0]]
        for key in self.env:
            argv += ["-e", key]
        for host, inside in self.mounts.items():
            argv += ["-v", f"{host}:{inside}"]
        if self.user is not None:
            argv += ["--user", self.user]
        if self.workdir is not None:
            argv += ["--workdir", self.workdir]
        argv += [self.image, *self.command[1:]]
        return subprocess.Popen(argv, env={**self.engine.env, **self.env}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)

    def finish(self) -> None:
        """Records the image and user that ran (from the container itself), then removes the container."""
        found = self.engine.docker("container", "inspect", "--format", "{{.Image}} {{.Config.User}}", self.name,
                                   check=False)
        if found.returncode == 0:
            image_id, _, user = found.stdout.strip().partition(" ")
            self.ran = {"image": self.image, "image_id": image_id, "user": user or "root"}  # "" is docker's root
        self.engine.docker("rm", "-f", self.name, check=False)

    def stop(self, grace: int = 10) -> None:
        """SIGTERM to the container's process, SIGKILL after `grace` seconds, as the providers stop a job."""
        self.engine.docker("stop", "--time", str(grace), self.name, check=False)


def _client() -> str:
    from docker_engine import docker_client

    return docker_client()
