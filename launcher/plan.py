"""Planning: from a validated spec to what the job takes (hardware, image, outputs, time, cost) and the offer chosen.

`make()` reads the environment (FTLAUNCH_HOME, the Python in use) so that each backend's `render()`
can stay pure: everything render needs is in the Plan.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import secrets as _random
import sys
from pathlib import Path
from typing import Any

from ftlaunch import errors, jobs
from ftlaunch.spec import Spec


@dataclasses.dataclass
class Offer:
    """One way to run the job: a target, an instance, its price and what the estimator predicts there."""

    cloud: str
    instance: str
    gpu: str | None
    gpus: int
    nodes: int = 1
    region: str | None = None
    spot: bool = False
    price_per_hour: float | None = None  # USD for all nodes, with the managed-service price where it applies
    hours: tuple[float, float] | None = None  # low, high
    cost: tuple[float, float] | None = None  # USD, low, high
    peak_gb_per_gpu: float | None = None
    fits: bool | None = None
    note: str = ""


@dataclasses.dataclass
class Plan:
    spec: Spec
    job_name: str
    cloud: str
    offer: Offer
    offers: list[Offer]
    output_uri: str
    image: str | None = None
    max_runtime_s: int | None = None
    why: str = ""
    estimate: dict[str, Any] | None = None
    # facts about the launching machine that a backend's render needs (so render reads no environment)
    context: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["spec"] = self.spec.to_json()
        return data


def job_name(spec: Spec, now: _dt.datetime | None = None) -> str:
    """`<spec name>-<yyyymmdd-hhmmss>-<4 hex>`: unique, sortable, within every provider's 63-character limit."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return f"{spec.name}-{now:%Y%m%d-%H%M%S}-{_random.token_hex(2)}"


def make(spec: Spec, *, name: str | None = None) -> Plan:
    """Plans the spec on the cloud it names (resources.cloud)."""
    spec = spec.resolved()
    cloud = spec.resources.cloud
    name = name or job_name(spec)
    if cloud != "local":
        raise errors.UserError(f"--cloud {cloud} is not available in this version of ftlaunch yet.",
                               hint="use --cloud local")
    return _local(spec, name)


def _local(spec: Spec, name: str) -> Plan:
    job_dir = jobs.home() / "jobs" / name
    output_uri = str(Path(spec.output.path) / name if spec.output.path else job_dir / "outputs")
    offer = Offer(cloud="local", instance="this machine", gpu=spec.resources.gpu, gpus=spec.resources.gpus,
                  price_per_hour=0.0, note="runs on the launching machine")
    return Plan(spec=spec, job_name=name, cloud="local", offer=offer, offers=[offer], output_uri=output_uri,
                max_runtime_s=spec.resources.max_runtime, why="--cloud local runs here at no charge",
                context={"python": sys.executable, "job_dir": str(job_dir)})
