"""A private Docker engine and registry for tests: dockerd on its own socket (no bridge, no iptables),
a Debian base image made with mmdebstrap (cached between runs), and Debian's docker-registry on 127.0.0.1.

The fixtures (imported by tests/conftest.py, so a session has one of each): dockerd, job_base, wheelhouse,
docker_env, local_registry, and job_image, the ONE job image build of the session, pushed to the registry,
that the emulators' end-to-end tests run.

Recipe: ../shared/docker/README.md. Packages come from .ci/docker-setup.sh. What cannot start makes the
tests that need it skip with the reason; nothing here stops a process it did not start, and dockerd is
stopped by its pid.

Also runnable by hand: `python tests/docker_engine.py` starts an engine, prints `export DOCKER_HOST=...`
and waits for Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

DEBIAN_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
TARBALL = f"debian-{SUITE}-python.tar"
DEBIAN_IMAGE = f"ftlaunch-test-debian:{SUITE}"
TORCH_VERSION = "2.13.0"
# The stand-in for a PyTorch base image: Debian's Python 3.11 in a venv at /opt/venv with the CPU torch wheel.
BASE_IMAGE = f"ftlaunch-test-base:torch{TORCH_VERSION}-cpu"
DOCKER_CLIENT_CANDIDATES = ("/usr/local/bin/docker", "/usr/bin/docker")


class Unavailable(Exception):
    """Why the engine (or registry) cannot start here: the tests print this when they skip."""


def cache_dir() -> Path:
    path = Path(os.environ.get("FTLAUNCH_TEST_CACHE") or Path.home() / ".cache" / "ftlaunch-test")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclasses.dataclass
class Dockerd:
    """A running private dockerd: its folder, pid and the environment that talks to it."""

    root: Path
    pid: int
    proc: subprocess.Popen
    env: dict[str, str]

    @property
    def host(self) -> str:
        return self.env["DOCKER_HOST"]

    def docker(self, *args: str, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
        env = kw.pop("env", self.env)
        proc = subprocess.run([docker_client(), *args], capture_output=True, text=True, env=env,
                              timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def stop(self) -> None:
        """SIGTERM by pid, SIGKILL after 30 s, then unmount what dockerd mounted under its exec root."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for mount in _mounts_under(self.root):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def docker_client() -> str:
    for path in DOCKER_CLIENT_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("docker")
    if not found:
        raise Unavailable("no docker client (run .ci/docker-setup.sh)")
    return found


def start_dockerd(root: Path | None = None, timeout: float = 60) -> Dockerd:
    """Starts dockerd on a socket in its own folder; raises Unavailable with the reason if it cannot."""
    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if os.path.exists("/usr/sbin/dockerd") else None)
    if dockerd is None:
        raise Unavailable("dockerd is not installed (run .ci/docker-setup.sh, which installs docker.io)")
    if os.geteuid() != 0:
        raise Unavailable("dockerd needs root here (rootless mode is not set up)")
    docker_client()
    # a short path: the socket path must stay under the 108-byte limit of unix sockets
    root = Path(root or tempfile.mkdtemp(prefix="ftl-dockerd-", dir="/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    sock = root / "docker.sock"
    log = open(root / "dockerd.log", "wb")
    argv = [dockerd, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
            "--pidfile", str(root / "dockerd.pid"), "-H", f"unix://{sock}", "--bridge=none",
            "--iptables=false", "--ip6tables=false", "--storage-driver=overlay2"]
    proc = _spawn(argv, log)
    if _exited_quickly(proc):  # no overlayfs here: vfs works everywhere, only slower
        argv[-1] = "--storage-driver=vfs"
        proc = _spawn(argv, log)
    env = dict(os.environ, DOCKER_HOST=f"unix://{sock}")
    env.pop("DOCKER_CONTEXT", None)
    engine = Dockerd(root=root, pid=proc.pid, proc=proc, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (root / "dockerd.log").read_text(errors="replace").strip().splitlines()[-5:]
            engine.stop()
            raise Unavailable("dockerd exited at start: " + " | ".join(tail))
        probe = subprocess.run([docker_client(), "info", "--format", "{{.ServerVersion}}"], env=env,
                               capture_output=True, text=True)
        if probe.returncode == 0:
            return engine
        time.sleep(0.3)
    engine.stop()
    raise Unavailable(f"dockerd did not answer within {timeout:.0f} s")


def _spawn(argv: list[str], log) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def _exited_quickly(proc: subprocess.Popen, wait: float = 1.5) -> bool:
    try:
        proc.wait(timeout=wait)
        return True
    except subprocess.TimeoutExpired:
        return False


def _mounts_under(root: Path) -> list[str]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1] for line in lines if len(line.split()) > 1]
    prefix = str(root.resolve()) + "/"
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


# ---------------------------------------------------------------------------- base images

def debian_tarball() -> Path:
    """bookworm minbase with python3 and python3-venv, made once and kept in the cache (~45 s)."""
    path = cache_dir() / TARBALL
    if path.exists():
        return path
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise Unavailable("mmdebstrap is not installed (run .ci/docker-setup.sh)")
    partial = path.with_name(f".{path.stem}.partial.tar")
    proc = subprocess.run([mmdebstrap, "--quiet", "--format=tar", "--variant=minbase",
                           "--include=ca-certificates,python3,python3-venv", SUITE, str(partial), DEBIAN_MIRROR],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise Unavailable(f"mmdebstrap failed (is {DEBIAN_MIRROR} reachable?): {proc.stderr.strip()[-400:]}")
    os.replace(partial, path)
    return path


def torch_wheels() -> Path:
    """The CPU torch wheel and its dependencies, downloaded once into the cache."""
    folder = cache_dir() / f"torch-{TORCH_VERSION}-wheels"
    if (folder / ".complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
                           "--python-version", "3.11", "-d", str(folder), f"torch=={TORCH_VERSION}"],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise Unavailable(f"pip download torch=={TORCH_VERSION} failed: {proc.stderr.strip()[-400:]}")
    (folder / ".complete").touch()
    return folder


def job_wheelhouse(lock: Path) -> Path:
    """Wheels for every line of the trainer's requirements.lock, downloaded once per lock content."""
    import hashlib

    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:12]
    folder = cache_dir() / f"wheelhouse-{digest}"
    if (folder / ".complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                           "--python-version", "3.11", "-d", str(folder), "-r", str(lock)],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise Unavailable(f"pip download of the trainer's requirements failed: {proc.stderr.strip()[-600:]}")
    (folder / ".complete").touch()
    return folder


def base_image(engine: Dockerd) -> str:
    """BASE_IMAGE in this engine: the Debian tarball imported, plus a venv with the CPU torch wheel."""
    if engine.docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    if engine.docker("image", "inspect", DEBIAN_IMAGE, check=False).returncode != 0:
        engine.docker("import", str(debian_tarball()), DEBIAN_IMAGE)
    from ftlaunch.containers import image

    # the wheels are served over HTTP on 127.0.0.1 rather than copied in, so they add no 200 MB layer
    with tempfile.TemporaryDirectory(prefix="ftl-base-") as tmp, image.serve_folder(torch_wheels()) as url:
        context = Path(tmp)
        (context / "Dockerfile").write_text(f"""\
FROM {DEBIAN_IMAGE}
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv \\
 && pip install --no-index --find-links {url} --trusted-host 127.0.0.1 torch=={TORCH_VERSION} \\
 && python -c "import torch; print(torch.__version__)"
""")
        engine.docker("build", "--network", "host", "-t", BASE_IMAGE, str(context),
                      env={**engine.env, "DOCKER_BUILDKIT": "0"})
    return BASE_IMAGE


# ---------------------------------------------------------------------------- a local registry

@dataclasses.dataclass
class Registry:
    address: str  # 127.0.0.1:PORT
    proc: subprocess.Popen
    root: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_registry(timeout: float = 20) -> Registry:
    """Debian's docker-registry on 127.0.0.1 at a free port, storing into a temporary folder."""
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not os.access(binary, os.X_OK):
        raise Unavailable("docker-registry is not installed (run .ci/docker-setup.sh)")
    root = Path(tempfile.mkdtemp(prefix="ftl-registry-"))
    port = _free_port()
    config = root / "config.yml"
    config.write_text(f"""\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root / 'data'}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
""")
    log = open(root / "registry.log", "wb")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    registry = Registry(address=f"127.0.0.1:{port}", proc=proc, root=root)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (root / "registry.log").read_text(errors="replace")[-400:]
            registry.stop()
            raise Unavailable(f"docker-registry exited at start: {tail}")
        try:
            with urllib.request.urlopen(f"http://{registry.address}/v2/", timeout=2) as response:
                if response.status == 200:
                    return registry
        except OSError:
            time.sleep(0.2)
    registry.stop()
    raise Unavailable(f"docker-registry did not answer within {timeout:.0f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- pytest fixtures
# tests/conftest.py imports these, so every module shares one session instance of each (a module that
# imported them itself would get its own dockerd and build).

@pytest.fixture(scope="session")
def dockerd():
    """A private dockerd for the session, stopped by pid at the end; skips with the reason if it cannot start."""
    try:
        engine = start_dockerd()
    except Unavailable as exc:
        pytest.skip(f"no Docker engine could start here: {exc}")
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def job_base(dockerd) -> str:
    """The stand-in PyTorch base (Debian + CPU torch) in the session's engine."""
    try:
        return base_image(dockerd)
    except Unavailable as exc:
        pytest.skip(f"the test base image cannot be made here: {exc}")


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    from ftlaunch.containers import image

    try:
        return job_wheelhouse(Path(image.__file__).with_name(image.LOCK_FILE))
    except Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def docker_env(dockerd, job_base, wheelhouse) -> dict[str, str]:
    """What an `ftlaunch` subprocess needs to build and run in the session's engine: its socket, the local
    base, wheels instead of an index (builds stay offline and fast), host network for builds, none for jobs."""
    return {"DOCKER_HOST": dockerd.host, "FTLAUNCH_BASE_IMAGE": job_base, "FTLAUNCH_WHEELHOUSE": str(wheelhouse),
            "FTLAUNCH_BUILD_NETWORK": "host", "FTLAUNCH_DOCKER_NETWORK": "none", "FTLAUNCH_ENGINE": "docker"}


@pytest.fixture(scope="session")
def local_registry():
    try:
        registry = start_registry()
    except Unavailable as exc:
        pytest.skip(f"no local registry could start here: {exc}")
    yield registry
    registry.stop()


@dataclasses.dataclass
class JobImage:
    """The session's one job image, pushed to the local registry: its reference there, the registry's
    address (what the clouds' FTLAUNCH_*_REGISTRY settings name in tests), and the environment an `ftlaunch`
    subprocess needs to find it (docker_env)."""

    ref: str
    registry: str
    env: dict[str, str]
    image_id: str


@pytest.fixture(scope="session")
def job_image(dockerd, docker_env, local_registry, tmp_path_factory) -> JobImage:
    """ONE job image build for the whole session: `ftlaunch build --registry 127.0.0.1:PORT` from the stand-in
    base with the wheelhouse, as a launch would build it; every image-based test shares it, and a launch in
    a test finds its content tag in the registry and builds nothing."""
    env = {**os.environ, **docker_env, "FTLAUNCH_HOME": str(tmp_path_factory.mktemp("job-image-home"))}
    proc = subprocess.run([sys.executable, "-m", "ftlaunch", "build", "--cloud", "skypilot", "--registry",
                           local_registry.address, "--json", "--quiet"], env=env, capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"ftlaunch build exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    import json

    result = json.loads(proc.stdout)
    ref = result["image"]
    assert ref.startswith(local_registry.address + "/"), ref
    image_id = dockerd.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    return JobImage(ref=ref, registry=local_registry.address, env=dict(docker_env), image_id=image_id)


if __name__ == "__main__":
    engine = start_dockerd()
    print(f"export DOCKER_HOST={engine.host}  # dockerd pid {engine.pid}; Ctrl-C stops it", flush=True)
    try:
        if "--base" in sys.argv:
            print("base image:", base_image(engine), flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        engine.stop()
