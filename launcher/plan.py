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

from ftlaunch import errors, estimator, jobs, shapes
from ftlaunch.catalog import gpus as gpu_catalog
from ftlaunch.catalog import prices
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
    # added for the planner: the provider fields a backend renders from (Vertex machine_type /
    # accelerator_type / accelerator_count, SkyPilot cloud / instance_type, Azure vm_size, ...),
    # the price row's date and source, and the other pricing (spot or on-demand)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    spot_price_per_hour: float | None = None
    on_demand_price_per_hour: float | None = None
    price_date: str | None = None
    price_source: str | None = None


@dataclasses.dataclass
class Plan:
    spec: Spec
    job_name: str
    cloud: str
    offer: Offer | None  # None only from make(..., require_fit=False) when no offer fits
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


TARGETS = ("sagemaker", "vertex", "azureml", "skypilot")


def make(spec: Spec, *, name: str | None = None, targets: tuple[str, ...] | None = None,
         optimize: str | None = None, require_fit: bool = True, online: bool = False) -> Plan:
    """Plans the spec: on this machine for `resources.cloud: local`, else ranks every offer of the named
    cloud(s) (`auto`: all four) by predicted cost (or time), and chooses the cheapest that fits.

    `targets` overrides the spec's cloud (`ftlaunch estimate` passes all four). With require_fit (the
    default, as `run` needs) a plan where nothing fits raises UserError naming what would; `estimate`
    passes require_fit=False and gets a Plan with offer None and the reasons in `why`."""
    spec = spec.resolved()
    cloud = spec.resources.cloud
    name = name or job_name(spec)
    if targets is None:
        if cloud == "local":
            return _local(spec, name)
        targets = TARGETS if cloud == "auto" else (cloud,)
    return _cloud(spec, name, tuple(targets), optimize=optimize or _optimize(spec), require_fit=require_fit,
                  online=online)


def _optimize(spec: Spec) -> str:
    return getattr(spec.resources, "optimize", None) or "cost"


def _local(spec: Spec, name: str) -> Plan:
    job_dir = jobs.home() / "jobs" / name
    output_uri = str(Path(spec.output.path) / name if spec.output.path else job_dir / "outputs")
    if spec.output.path and _within(Path(spec.output.path), jobs.home() / "jobs"):
        raise errors.UserError(f"output.path {spec.output.path} is inside ftlaunch's job records "
                               f"({jobs.home() / 'jobs'}), where each job keeps its log and checkpoints.",
                               hint="set output.path to a folder outside it, or leave it out (outputs then go "
                                    "to the job's own folder there)")
    estimate = _local_estimate(spec)
    peak = estimate["memory"]["peak_gb"] if estimate else None
    offer = Offer(cloud="local", instance="this machine", gpu=spec.resources.gpu, gpus=spec.resources.gpus,
                  price_per_hour=0.0, cost=(0.0, 0.0), peak_gb_per_gpu=peak, fits=estimate and estimate["fits"],
                  note="runs on the launching machine")
    # the runtime (docker when an engine answers, else a process) is decided here, so render stays pure
    from ftlaunch.backends.local import docker as local_docker

    runtime = local_docker.plan_context(spec)
    return Plan(spec=spec, job_name=name, cloud="local", offer=offer, offers=[offer], output_uri=output_uri,
                image=runtime.get("image"), max_runtime_s=spec.resources.max_runtime,
                why=f"--cloud local runs here at no charge, {runtime['runtime_note']}", estimate=estimate,
                context={"python": sys.executable, "job_dir": str(job_dir), **runtime})


def _within(path: Path, folder: Path) -> bool:
    path, folder = path.expanduser().resolve(), folder.expanduser().resolve()
    return path == folder or folder in path.parents


def _local_estimate(spec: Spec) -> dict[str, Any] | None:
    """Peak memory for the local run, when the model's shape is known without the network; else None."""
    try:
        shape = shapes.resolve(spec.model, base_dir=spec.base_dir)
    except (errors.UserError, KeyError, TypeError, ValueError, OSError):
        return None  # an unreadable shape must not stop a local run; `estimate` reports it
    gpu = gpu_catalog.find(spec.resources.gpu)
    w = estimator.workload_from_spec(spec, gpu)
    world = max(1, spec.resources.gpus) * spec.resources.nodes
    mem = estimator.memory(shape, w, world)
    return {"model": shape.name, "params": shape.params, "size_class": shape.size_class,
            "technique": spec.technique.value, "memory": mem.to_json(), "gpu": gpu.name if gpu else None,
            "fits": estimator.fits(mem, gpu) if gpu else None}


# --------------------------------------------------------------------------- cloud offers

def _cloud(spec: Spec, name: str, targets: tuple[str, ...], *, optimize: str, require_fit: bool,
           online: bool) -> Plan:
    if optimize not in ("cost", "time"):
        raise errors.UserError(f"--optimize {optimize}: expected cost or time.")
    res = spec.resources
    shape = shapes.resolve(spec.model, base_dir=spec.base_dir, online=online)
    want = gpu_catalog.get(res.gpu) if res.gpu else None
    rows = [r for r in prices.load() if r.target in targets and gpu_catalog.find(r.gpu) is not None]
    if want is not None:
        rows = [r for r in rows if gpu_catalog.find(r.gpu) is want]
    if res.gpus > 1 or (want is not None and res.gpus != 1):
        rows = [r for r in rows if r.gpus == res.gpus]
    if res.region:
        rows = [r for r in rows if r.region == res.region]
    if res.spot:
        rows = [r for r in rows if r.spot_usd_per_hour is not None]
    if not rows:
        raise errors.UserError(
            f"no priced offer matches: targets {', '.join(targets)}, gpu {res.gpu or 'any'} x {res.gpus}"
            f"{', region ' + res.region if res.region else ''}{', spot' if res.spot else ''}.",
            hint="`ftlaunch prices show` lists what is priced; drop --gpu/region or pick another cloud")
    tokens = estimator.count_tokens(spec.resolve_path(spec.dataset.path), estimator.workload_from_spec(spec),
                                    max_samples=spec.dataset.max_samples)
    offers = [_offer(spec, shape, row, tokens) for row in rows]
    offers.sort(key=lambda o: _rank_key(o, optimize))
    budget = res.max_cost
    fitting = [o for o in offers if o.fits and (budget is None or o.cost[0] <= budget)]
    chosen = fitting[0] if fitting else None
    first = offers[0]
    w = estimator.workload_from_spec(spec, gpu_catalog.find(first.gpu))
    suggestions = [dataclasses.asdict(c) for c in
                   estimator.make_fit(shape, w, gpu_catalog.get(first.gpu), first.gpus * first.nodes)] \
        if not any(o.fits for o in offers) else []
    est = {"model": shape.name, "shape_source": shape.source or "built-in table", "params": shape.params,
           "size_class": shape.size_class, "technique": spec.technique.value, "tokens": dataclasses.asdict(tokens),
           "epochs": spec.hyperparameters.epochs, "optimize": optimize, "suggestions": suggestions,
           "assumptions": _assumptions(spec, w), "one_gpu": _one_gpu(shape, spec)}
    if chosen is None:
        why = _no_fit_reason(offers, budget, suggestions)
        if require_fit:
            raise errors.UserError(why, hint=suggestions[0]["spec_change"] if suggestions else
                                   "run `ftlaunch estimate` to see every offer")
        return Plan(spec=spec, job_name=name, cloud="+".join(targets), offer=None, offers=offers,
                    output_uri="", max_runtime_s=res.max_runtime, why=why, estimate=est)
    max_runtime = res.max_runtime
    if budget is not None and chosen.price_per_hour:
        by_budget = int(budget / chosen.price_per_hour * 3600)
        max_runtime = min(max_runtime, by_budget) if max_runtime else by_budget
    est["memory"] = chosen.details.get("memory")
    return Plan(spec=spec, job_name=name, cloud=chosen.cloud, offer=chosen, offers=offers,
                output_uri=spec.output.path or "", max_runtime_s=max_runtime,
                why=_why(chosen, offers, optimize, budget), estimate=est,
                context=_backend_context(chosen.cloud, spec, name))


def _backend_context(cloud: str, spec: Spec, name: str) -> dict[str, Any]:
    """The chosen target's settings (account, bucket, role, registry...) and facts about local inputs, read
    here so that its render() stays pure: `ftlaunch.backends.<cloud>.settings.resolve`, where it exists."""
    import importlib

    module_name = f"ftlaunch.backends.{cloud}.settings"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name in (module_name, f"ftlaunch.backends.{cloud}"):
            return {}
        raise
    return module.resolve(spec, name)


def _offer(spec: Spec, shape: shapes.Shape, row: prices.PriceRow, tokens: estimator.Tokens) -> Offer:
    gpu = gpu_catalog.get(row.gpu)
    nodes = spec.resources.nodes
    world = row.gpus * nodes
    w = estimator.workload_from_spec(spec, gpu)
    mem = estimator.memory(shape, w, world)
    t = estimator.time(shape, w, gpu, world, tokens, target=row.target, nodes=nodes)
    spot = spec.resources.spot
    hourly = (row.spot_usd_per_hour if spot else row.usd_per_hour) * nodes
    hours = t.hours
    fits = estimator.fits(mem, gpu)
    return Offer(cloud=row.target, instance=row.instance, gpu=gpu.name, gpus=row.gpus, nodes=nodes, region=row.region,
                 spot=spot, price_per_hour=round(hourly, 4), hours=(round(hours[0], 3), round(hours[1], 3)),
                 cost=(round(hourly * hours[0], 2), round(hourly * hours[1], 2)),
                 peak_gb_per_gpu=round(mem.peak_gb, 2), fits=fits,
                 note="" if fits else f"needs {mem.peak_gb:.1f} GB per GPU, has {gpu.memory_gb:.1f}",
                 details=dict(row.details, gpu_memory_gb=round(gpu.memory_gb, 1), memory=mem.to_json(),
                              mfu=[round(x, 3) for x in t.mfu], startup_hours=[round(x, 3) for x in t.startup_hours],
                              flops=[float(f"{x:.3g}") for x in t.flops]),
                 spot_price_per_hour=row.spot_usd_per_hour * nodes if row.spot_usd_per_hour else None,
                 on_demand_price_per_hour=row.usd_per_hour * nodes if row.usd_per_hour else None,
                 price_date=row.date, price_source=row.source)


def _one_gpu(shape: shapes.Shape, spec: Spec) -> dict[str, Any]:
    """Peak on a single GPU and the catalog GPUs it fits on (for 'does not fit on one GPU')."""
    fits_on, peak = [], 0.0
    for g in gpu_catalog.GPUS:
        mem = estimator.memory(shape, estimator.workload_from_spec(spec, g), 1)
        peak = max(peak, mem.peak_gb)
        if estimator.fits(mem, g):
            fits_on.append(g.name)
    return {"peak_gb": round(peak, 2), "fits_on": fits_on}


def _rank_key(o: Offer, optimize: str) -> tuple:
    mid_cost = sum(o.cost) / 2
    mid_hours = sum(o.hours) / 2
    primary = (mid_cost, mid_hours) if optimize == "cost" else (mid_hours, mid_cost)
    return (not o.fits, *primary, o.cloud, o.instance)


def _why(chosen: Offer, offers: list[Offer], optimize: str, budget: float | None) -> str:
    n_fit = sum(1 for o in offers if o.fits)
    word = "cheapest" if optimize == "cost" else "fastest"
    text = (f"{chosen.cloud} {chosen.instance} ({chosen.gpus} x {chosen.gpu}) is the {word} of {n_fit} offers that fit "
            f"({len(offers)} priced): ${chosen.cost[0]:,.2f}-${chosen.cost[1]:,.2f} over {chosen.hours[0]:.2f}-"
            f"{chosen.hours[1]:.2f} h at ${chosen.price_per_hour:,.2f}/h, peak {chosen.peak_gb_per_gpu:.1f} GB per GPU "
            f"of {chosen.details.get('gpu_memory_gb')}")
    if budget is not None:
        text += f"; max_cost ${budget:,.2f} caps the run at {budget / chosen.price_per_hour:.2f} h"
    return text


def _no_fit_reason(offers: list[Offer], budget: float | None, suggestions: list[dict[str, Any]]) -> str:
    if any(o.fits for o in offers):
        cheapest = min((o for o in offers if o.fits), key=lambda o: o.cost[0])
        return (f"every offer that fits costs more than max_cost ${budget:,.2f} (cheapest: {cheapest.cloud} "
                f"{cheapest.instance}, ${cheapest.cost[0]:,.2f}-${cheapest.cost[1]:,.2f}).")
    best = min(offers, key=lambda o: o.peak_gb_per_gpu or 0)
    text = (f"the job does not fit on any offer: it needs {best.peak_gb_per_gpu:.1f} GB per GPU at best "
            f"({best.gpus} x {best.gpu}).")
    if suggestions:
        text += " What would fit: " + "; ".join(f"{c['what']} -> {c['peak_gb']:.1f} GB per GPU on {c['gpus']} x "
                                                  f"{c['gpu']} ({c['spec_change']})" for c in suggestions[:4])
    return text


def _assumptions(spec: Spec, w: estimator.Workload) -> list[str]:
    return [
        f"precision {w.precision}; gradient checkpointing {'on' if w.gradient_checkpointing else 'off'}; "
        f"micro-batch {w.batch_size} x {w.seq_len} tokens; optimizer {w.optimizer}",
        "full fine-tuning keeps fp32 weights, gradients and AdamW states (16 bytes/parameter); peft keeps the "
        "base in the compute dtype and adapters in fp32",
        f"utilisation (MFU) {estimator.MFU}; start-up: provisioning, an {estimator.IMAGE_GB:.0f} GB image pull "
        "and the model download",
        "prices are list prices on the dates in `ftlaunch prices show`; derived managed-service prices say so",
    ]
