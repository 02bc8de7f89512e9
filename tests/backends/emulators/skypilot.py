"""SkyPilot's docker mode, locally: runs a rendered SkyPilot task (ftlaunch's request payload) inside its
image the way SkyPilot runs a task with `image_id: docker:<image>` on a VM, in the tests' private dockerd.

Emulated, following sky/provision/docker_utils.py (DockerInitializer.initialize) and the task runner:
- the image is pulled (from the 127.0.0.1 registry the task names) and started as SkyPilot starts it:
  `docker run -d --entrypoint /bin/bash ... <image> -c 'sleep infinity'`, with the image's default user
  (SkyPilot passes no --user) and the host network;
- SkyPilot's own setup commands that need root run first with `docker exec` as that user: `sudo` stands
  for nothing when the user is root (SkyPilot's alias for root), the apt lock `exec 200>/var/tmp/sky_apt.lock`,
  `sudo mkdir -p /var/run/sshd`, `mkdir -p ~/.ssh`, `command -v apt-get`, then `whoami` (the docker user
  SkyPilot records). An image whose default user is not root and has no sudo fails here, as on SkyPilot;
- the task's `setup`, then `run`, through `docker exec ... /bin/bash -c` with its `envs` plus
  SKYPILOT_TASK_ID, SKYPILOT_NODE_RANK, SKYPILOT_NUM_NODES, SKYPILOT_NODE_IPS and
  SKYPILOT_NUM_GPUS_PER_NODE;
- file_mounts: a local source is bind-mounted at its target; a bucket source (MOUNT / MOUNT_CACHED) is a
  folder here standing for the bucket (`bucket_folder(uri)`), bind-mounted read-write at its target.

Not emulated: the API server, provisioning, SSH, the package installs of SkyPilot's setup (apt-get: no
network here), rclone/goofys mounting itself (a bind mount stands for it), managed-job states and
recovery. The SkyPilot tests run only the end-to-end test in the image; the rest check the task YAML.
"""

from __future__ import annotations

import dataclasses
import subprocess
import uuid
from pathlib import Path

# What SkyPilot's docker mode runs as the container's default user before the task (see the docstring).
SKYPILOT_DOCKER_INIT = (
    '[ "$(id -u)" = 0 ] && sudo() { "$@"; }; '  # SkyPilot aliases sudo to nothing for root
    "set -e; exec 200>/var/tmp/sky_apt.lock; sudo mkdir -p /var/run/sshd; mkdir -p ~/.ssh; "
    "command -v apt-get >/dev/null; whoami")


@dataclasses.dataclass
class Run:
    code: int
    log: str
    ran: dict[str, str]


class SkyPilotDocker:
    def __init__(self, engine, workdir: Path):
        self.engine = engine
        self.workdir = Path(workdir)

    def bucket_folder(self, uri: str) -> Path:
        """The folder that stands for a bucket path (s3://b/p, gs://b/p, ...)."""
        scheme, _, rest = uri.partition("://")
        return self.workdir / "buckets" / scheme / rest.strip("/")

    def run_task(self, task: dict, timeout: float = 900) -> Run:
        image = task["resources"]["image_id"].removeprefix("docker:")
        name = f"sky-emu-{uuid.uuid4().hex[:12]}"
        mounts = []
        for target, source in (task.get("file_mounts") or {}).items():
            if isinstance(source, dict):
                folder = self.bucket_folder(source["source"])
                folder.mkdir(parents=True, exist_ok=True)
                mounts += ["-v", f"{folder}:{target}"]
            else:
                mounts += ["-v", f"{Path(source).expanduser().resolve()}:{target}:ro"]
        self.engine.docker("pull", "--quiet", image)
        self.engine.docker("run", "-d", "--name", name, "--network", "host", *mounts, "--entrypoint", "/bin/bash",
                           image, "-c", "sleep infinity")
        try:
            init = self.engine.docker("exec", name, "/bin/bash", "-c", SKYPILOT_DOCKER_INIT, check=False)
            if init.returncode != 0:
                return Run(init.returncode, f"SkyPilot's docker setup failed:\n{init.stdout}{init.stderr}", {})
            user = init.stdout.strip().splitlines()[-1]
            nodes = int(task.get("num_nodes") or 1)
            env = {**(task.get("envs") or {}), "HF_HUB_OFFLINE": "1", "SKYPILOT_TASK_ID": f"sky-{name}",
                   "SKYPILOT_NODE_RANK": "0", "SKYPILOT_NUM_NODES": str(nodes),
                   "SKYPILOT_NODE_IPS": "127.0.0.1", "SKYPILOT_NUM_GPUS_PER_NODE": "0"}
            flags = [f for key in env for f in ("-e", key)]  # values by name, from the client's environment
            log, code = "", 0
            for step in ("setup", "run"):
                if not task.get(step):
                    continue
                proc = subprocess.run([*self._client(), "exec", *flags, name, "/bin/bash", "-c", task[step]],
                                      env={**self.engine.env, **env}, capture_output=True, text=True,
                                      timeout=timeout)
                log += proc.stdout + proc.stderr
                code = proc.returncode
                if code != 0:
                    break
            image_id = self.engine.docker("container", "inspect", "--format", "{{.Image}}", name).stdout.strip()
            return Run(code, log, {"image": image, "image_id": image_id, "user": user})
        finally:
            self.engine.docker("rm", "-f", name, check=False)

    @staticmethod
    def _client() -> list[str]:
        from docker_engine import docker_client

        return [docker_client()]

