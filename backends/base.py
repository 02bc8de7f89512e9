"""The contract every backend implements, and the plain data that flows through it."""

from __future__ import annotations

import abc
import dataclasses
import enum
from pathlib import Path
from typing import Any, ClassVar, Iterator

from ftlaunch import errors


class State(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def done(self) -> bool:
        return self in (State.SUCCEEDED, State.FAILED, State.CANCELLED)


class Capability(str, enum.Enum):
    GPU = "gpu"
    MULTI_NODE = "multi_node"
    SPOT = "spot"
    REGION = "region"
    MAX_RUNTIME = "max_runtime"
    DOCKER = "docker"


@dataclasses.dataclass
class JobRequest:
    """Exactly what `submit` sends: the provider's own request body, plus local files it uploads first.

    `payload` is the provider's request (CreateTrainingJob JSON, a Vertex CustomJob, an Azure ML
    command job, a SkyPilot task, or the local process's argv and environment). Secrets appear only
    by name; their values are read from the launcher's environment or the provider's secret store
    at submit or run time and never stored here.
    """

    backend: str
    job_name: str
    payload: dict[str, Any]
    uploads: list[dict[str, str]] = dataclasses.field(default_factory=list)  # {"source": ..., "destination": ...}
    secrets: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JobRequest":
        return cls(**data)


@dataclasses.dataclass
class JobHandle:
    """Enough to find a submitted job again from any shell: stored in the job records."""

    backend: str
    job_name: str
    provider_id: str
    output_uri: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class JobStatus:
    state: State
    reason: str | None = None  # the provider's own words for why it is in this state
    provider_state: str | None = None
    exit_code: int | None = None


class Backend(abc.ABC):
    """One target. Subclasses are named <Provider>Backend and live in ftlaunch/backends/<name>/backend.py."""

    name: ClassVar[str]
    # What this target cannot do, each with the reason and the alternative: {Capability: "...; use ..."}.
    UNSUPPORTED: ClassVar[dict[Capability, str]] = {}

    def check_supported(self, needs: set[Capability]) -> None:
        """Raises one readable UserError naming every capability the plan needs that this target lacks."""
        missing = [(c, self.UNSUPPORTED[c]) for c in needs if c in self.UNSUPPORTED]
        if missing:
            problems = [errors.Problem(message=reason, field=cap.value) for cap, reason in missing]
            raise errors.UserError(f"--cloud {self.name} cannot run this job.", problems=problems)

    @abc.abstractmethod
    def render(self, plan: Any) -> JobRequest:
        """The request `submit` would send for this plan. Pure: no network, clock or environment reads."""

    @abc.abstractmethod
    def submit(self, request: JobRequest) -> JobHandle:
        """Sends exactly `request`; returns as soon as the provider has the job. Submitting the same
        job name twice does not create a second job."""

    @abc.abstractmethod
    def status(self, handle: JobHandle) -> JobStatus:
        """One poll, mapped onto State with the provider's reason. Does not block."""

    @abc.abstractmethod
    def logs(self, handle: JobHandle, follow: bool = False) -> Iterator[str]:
        """The job's stdout and stderr lines; with follow, keeps yielding until the job ends."""

    @abc.abstractmethod
    def cancel(self, handle: JobHandle) -> None:
        """Stops the job; returns silently if it has already ended."""

    @abc.abstractmethod
    def fetch(self, handle: JobHandle, dest: Path) -> Path:
        """Copies the job's outputs into dest, verifies every file against manifest.json, returns dest."""
