"""The container engine on this machine (docker, or podman where docker is absent), driven through its CLI.

`detect()` finds the engine that answers; an `Engine` runs build, tag, push, inspect, run, logs and stop
as subprocesses of its own binary. Nothing here reads or writes the process environment: `env` is the
mapping the engine's commands run with (DOCKER_HOST, secrets the launcher passes by name, ...).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator, Mapping

from ftlaunch.core import errors

NAMES = ("docker", "podman")
ANSWER_TIMEOUT_S = 5.0
# what a registry says when it answers that it lacks an image (docker, podman; distribution's error codes)
MISSING = ("no such manifest", "manifest unknown", "name unknown")


@dataclasses.dataclass(frozen=True)
class Engine:
    """One container engine: `name` is docker or podman, `binary` its client, `version` the server's."""

    name: str
    binary: str
    version: str = ""
    env: Mapping[str, str] | None = None  # the environment its commands run with; None: this process's

    # ------------------------------------------------------------------ plumbing

    def argv(self, *args: str) -> list[str]:
        return [self.binary, *args]

    def call(self, *args: str, check: bool = True, input: str | None = None, timeout: float | None = None,
             env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        """Runs `<engine> args...` and captures its output; with check, a failure raises EngineError."""
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, input=input, timeout=timeout,
                              env=self._env(env), stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise EngineError(f"{self.name} {args[0]} failed (exit {proc.returncode}): "
                              f"{_tail(proc.stderr or proc.stdout)}", command=self.argv(*args))
        return proc

    def stream(self, *args: str, env: Mapping[str, str] | None = None,
               on_line: Callable[[str], None] | None = None) -> int:
        """Runs `<engine> args...`, passing each output line to on_line; returns the exit code."""
        with subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=self._env(env), stdin=subprocess.DEVNULL, errors="replace") as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            return proc.wait()

    def _env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        env = dict(self.env if self.env is not None else os.environ)
        if self.name == "docker":
            env["DOCKER_BUILDKIT"] = "0"  # the classic builder: the template uses no BuildKit-only syntax
            env.setdefault("DOCKER_CLI_HINTS", "false")
        env.update(extra or {})
        return env

    # ------------------------------------------------------------------ images

    def image_exists(self, ref: str) -> bool:
        """Whether the image `ref` is in the engine's local store."""
        return self.call("image", "inspect", "--format", "{{.Id}}", ref, check=False).returncode == 0

    def image_id(self, ref: str) -> str | None:
        proc = self.call("image", "inspect", "--format", "{{.Id}}", ref, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def remote_exists(self, ref: str) -> bool:
        """Whether a registry already holds `ref` (a manifest lookup; nothing is pulled)."""
        return self.remote_lookup(ref) is True

    def remote_lookup(self, ref: str, timeout: float = 60) -> bool | None:
        """True when the registry holds `ref`, False when it answers that it does not, None when it cannot
        be asked (unreachable, no login, refused). A manifest lookup: nothing is pulled."""
        flags = _tls_flag(self, ref) if self.name == "podman" else (["--insecure"] if _is_plain_http(ref) else [])
        try:
            proc = self.call("manifest", "inspect", *flags, ref, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if proc.returncode == 0:
            return True
        said = (proc.stderr + proc.stdout).lower()
        return False if any(s in said for s in MISSING) else None

    def build(self, context: Path, tag: str, *, dockerfile: str = "Dockerfile", network: str | None = None,
              labels: Mapping[str, str] | None = None, build_args: Mapping[str, str] | None = None,
              on_line: Callable[[str], None] | None = None) -> None:
        args = ["build", "-t", tag, "-f", str(Path(context) / dockerfile)]
        if network:
            args += ["--network", network]
        for key, value in sorted((labels or {}).items()):
            args += ["--label", f"{key}={value}"]
        for key, value in sorted((build_args or {}).items()):
            args += ["--build-arg", f"{key}={value}"]
        if self.name == "podman":
            args += ["--format", "docker"]
        lines: list[str] = []

        def keep(line: str) -> None:
            lines.append(line)
            del lines[:-40]
            if on_line is not None:
                on_line(line)

        code = self.stream(*args, str(context), on_line=keep)
        if code != 0:
            raise EngineError(f"{self.name} build of {tag} failed (exit {code}):\n" + "\n".join(lines[-15:]),
                              command=self.argv(*args, str(context)))

    def tag(self, source: str, target: str) -> None:
        self.call("tag", source, target)

    def push(self, ref: str, on_line: Callable[[str], None] | None = None) -> None:
        args = ["push", *(_tls_flag(self, ref) if self.name == "podman" else []), ref]
        code = self.stream(*args, on_line=on_line)
        if code != 0:
            raise EngineError(f"{self.name} push {ref} failed (exit {code})", command=self.argv(*args))

    def pull(self, ref: str) -> None:
        self.call("pull", *(_tls_flag(self, ref) if self.name == "podman" else []), ref, timeout=3600)

    def remove_image(self, ref: str) -> None:
        self.call("image", "rm", "--force", ref, check=False)

    def login(self, registry: str, username: str, password: str) -> None:
        """`<engine> login` with the password on stdin (never on the command line)."""
        self.call("login", "--username", username, "--password-stdin", registry, input=password, timeout=120)

    # ------------------------------------------------------------------ containers

    def container_state(self, name: str) -> dict | None:
        """The container's State object (Status, ExitCode, OOMKilled, Error, StartedAt, ...), None if none."""
        proc = self.call("container", "inspect", "--format", "{{json .State}}", name, check=False)
        if proc.returncode != 0:
            return None
        return json.loads(proc.stdout)

    def logs(self, name: str, follow: bool = False) -> Iterator[str]:
        args = ["logs", *(["--follow"] if follow else []), name]
        with subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=self._env(None), stdin=subprocess.DEVNULL, errors="replace") as proc:
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    yield line.rstrip("\n")
            finally:
                if proc.poll() is None:
                    proc.terminate()

    def stop(self, name: str, grace_s: int = 20) -> None:
        self.call("stop", "--time", str(grace_s), name, check=False, timeout=grace_s + 60)


class EngineError(errors.UserError):
    """A container engine command failed; says which and shows the end of its output."""

    def __init__(self, message: str, command: list[str] | None = None):
        super().__init__(message, hint="run the command shown to see its full output" if command else None)
        self.command = command


def detect(env: Mapping[str, str] | None = None, timeout: float = ANSWER_TIMEOUT_S) -> Engine | None:
    """The first engine whose daemon answers, or None.

    FTLAUNCH_ENGINE=docker|podman names the only one to try. Otherwise docker is tried first (always when
    DOCKER_HOST is set), then podman; a client whose server does not answer within `timeout` is skipped."""
    env = dict(os.environ if env is None else env)
    wanted = env.get("FTLAUNCH_ENGINE")
    order = (wanted,) if wanted in NAMES else NAMES
    for name in order:
        engine = probe(name, env, timeout)
        if engine is not None:
            return engine
    return None


def probe(name: str, env: Mapping[str, str], timeout: float = ANSWER_TIMEOUT_S) -> Engine | None:
    """An Engine for `name` if its client is installed and its server answers, else None."""
    binary = shutil.which(name, path=env.get("PATH"))
    if binary is None:
        return None
    try:
        proc = subprocess.run([binary, "version", "--format", "{{.Server.Version}}"], capture_output=True,
                              text=True, timeout=timeout, env=dict(env), stdin=subprocess.DEVNULL)
    except (subprocess.TimeoutExpired, OSError):
        return None
    version = proc.stdout.strip()
    if proc.returncode != 0 or not version or "<no value>" in version:
        return None
    return Engine(name=name, binary=binary, version=version)


def why_none(env: Mapping[str, str] | None = None) -> str:
    """One phrase on why no engine answered: no client installed, or which daemon did not answer."""
    env = dict(os.environ if env is None else env)
    installed = [n for n in NAMES if shutil.which(n, path=env.get("PATH"))]
    if not installed:
        return "neither docker nor podman is installed"
    where = env.get("DOCKER_HOST") or "the default socket"
    return f"{' and '.join(installed)} installed but no engine answered (DOCKER_HOST: {where})"


def _is_plain_http(ref: str) -> bool:
    """Registries on loopback speak plain HTTP unless told otherwise (docker's own default)."""
    host = ref.split("/", 1)[0] if "/" in ref else ""
    return host.startswith(("127.", "localhost")) or host == "[::1]"


def _tls_flag(engine: Engine, ref: str) -> list[str]:
    return ["--tls-verify=false"] if _is_plain_http(ref) else []


def _tail(text: str, lines: int = 6) -> str:
    rows = [r for r in (text or "").strip().splitlines() if r.strip()]
    return " | ".join(rows[-lines:]) or "no output"
