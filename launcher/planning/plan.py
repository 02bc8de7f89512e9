"""Planning: from a validated spec to what the job takes (hardware, image, outputs, time, cost) and the offer chosen.

`make()` reads the environment (FTLAUNCH_HOME, the Python in use) so that each backend's `render()`
can stay pure: everything render needs is in the Plan.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import secrets as _random
import sys
from pathlib import Path
from typing import Any

from ftlaunch import backends
from ftlaunch.core import errors, jobs
from ftlaunch.planning import estimator, shapes
from ftlaunch.backends.base import Capability
from ftlaunch.core import gpus as gpu_catalog
from ftlaunch.planning.catalog import prices
from ftlaunch.core.spec import Spec


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
    flags: list[str] = dataclasses.field(default_factory=list)  # doubtful / derived / stale price (prices.PriceRow)
    excluded: str = ""  # why this offer is shown but never chosen (another GPU count, a doubtful price)


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


TARGETS = backends.CLOUDS  # what `auto` and `ftlaunch estimate` rank: every cloud in the registry


def make(spec: Spec, *, name: str | None = None, targets: tuple[str, ...] | None = None,
         optimize: str | None = None, require_fit: bool = True, online: bool = False, calibrate: bool = False,
         refused: dict[tuple, str] | None = None) -> Plan:
    """Plans the spec: on this machine for `resources.cloud: local`, else ranks every offer of the named
    cloud(s) (`auto`: all four) by predicted cost (or time), and chooses the cheapest that fits.

    `targets` overrides the spec's cloud (`ftlaunch estimate` passes all four). With require_fit (the
    default, as `run` needs) a plan where nothing fits raises UserError naming what would; `estimate`
    passes require_fit=False and gets a Plan with offer None and the reasons in `why`. `refused` maps
    failover_key(offer) -> the provider's refusal: those offers are shown, never chosen (a failover re-plans with
    every refusal so far). `calibrate` lets a local
    plan measure this machine's step time when no cached measurement exists (it imports torch; a dry run does
    not ask for it and shows the time only when a measurement is cached)."""
    explicit = gpus_explicit(spec)  # before resolved(), whose re-validation marks every field as set
    spec = spec.resolved()
    cloud = spec.resources.cloud
    name = name or job_name(spec)
    if targets is None:
        if cloud == "local":
            refuse_unsupported(spec, "local")
            return _local(spec, name, calibrate)
        targets = allowed_targets(spec)
    return _cloud(spec, name, tuple(targets), optimize=optimize or _optimize(spec), require_fit=require_fit,
                  online=online, explicit=explicit, refused=refused or {})


def allowed_targets(spec: Spec) -> tuple[str, ...]:
    """The clouds a cloud plan considers: `cloud: auto` every target (or those `clouds:` lists), else the one."""
    if spec.resources.cloud == "auto":
        return tuple(t for t in TARGETS if not spec.resources.clouds or t in spec.resources.clouds)
    return (spec.resources.cloud,)


def _optimize(spec: Spec) -> str:
    return getattr(spec.resources, "optimize", None) or "cost"


def _local(spec: Spec, name: str, calibrate: bool = False) -> Plan:
    job_dir = jobs.home() / "jobs" / name
    output_uri = str(Path(spec.output.path) / name if spec.output.path else job_dir / "outputs")
    if spec.output.path and _within(Path(spec.output.path), jobs.home() / "jobs"):
        raise errors.UserError(f"output.path {spec.output.path} is inside ftlaunch's job records "
                               f"({jobs.home() / 'jobs'}), where each job keeps its log and checkpoints.",
                               hint="set output.path to a folder outside it, or leave it out (outputs then go "
                                    "to the job's own folder there)")
    estimate = _local_estimate(spec, calibrate)
    peak = estimate["memory"]["peak_gb"] if estimate else None
    have = estimate["local_gpus"] if estimate else _calibrate().local_gpus()
    gpu = estimate["gpu"] if estimate else None
    hours = tuple(round(h, 4) for h in estimate["time"]["hours"]) if estimate and estimate.get("time") else None
    note = "runs on the launching machine"
    if not have:
        note = "this machine has no NVIDIA GPU: the job runs on the CPU"
        if spec.resources.gpu:
            note += f" (resources.gpu {spec.resources.gpu} is not here)"
    offer = Offer(cloud="local", instance="this machine", gpu=gpu, gpus=(len(have) and max(1, spec.resources.gpus)),
                  price_per_hour=0.0, hours=hours, cost=(0.0, 0.0), peak_gb_per_gpu=peak,
                  fits=estimate["fits"] if estimate else None, note=note)
    # the runtime (docker when an engine answers, else a process) is decided here, so render stays pure
    runtime = backends.plan_context("local", spec, name)
    why = f"--cloud local runs here at no charge, {runtime['runtime_note']}; {note}"
    if estimate and estimate.get("time"):
        h = estimate["time"]["hours"]
        why += f"; about {h[0] * 60:.1f}-{h[1] * 60:.1f} min ({estimate['time']['how']})"
    return Plan(spec=spec, job_name=name, cloud="local", offer=offer, offers=[offer], output_uri=output_uri,
                image=runtime.get("image"), max_runtime_s=spec.resources.max_runtime,
                why=why, estimate=estimate,
                context={"python": sys.executable, "job_dir": str(job_dir), **runtime})


def _within(path: Path, folder: Path) -> bool:
    path, folder = path.expanduser().resolve(), folder.expanduser().resolve()
    return path == folder or folder in path.parents


def _calibrate() -> Any:
    from ftlaunch.planning import calibrate

    return calibrate


def _local_gpu(names: list[str]) -> gpu_catalog.GPU | None:
    """The catalog GPU the driver's first model name ('NVIDIA H100 80GB HBM3') is, when we know it."""
    if not names:
        return None
    text = names[0].lower().replace("nvidia", "").replace("tesla", "")
    for g in sorted(gpu_catalog.GPUS, key=lambda g: -len(g.name)):
        if g.name.lower().split("-")[0] in text.split() or g.name.lower() in text:
            return g
    return None


def _local_estimate(spec: Spec, calibrate: bool = False) -> dict[str, Any] | None:
    """Peak memory and time for the local run, when the model's shape is known without the network; else None.
    The GPU is the one this machine has (none: CPU, and no GPU claimed); the time comes from a step time
    measured once per machine and model size (ftlaunch.planning.calibrate) when `calibrate` (never with FTLAUNCH_CALIBRATE=0),
    else read from the cache when there."""
    try:
        shape = shapes.resolve(spec.model, base_dir=spec.base_dir)
    except (errors.UserError, KeyError, TypeError, ValueError, OSError):
        return None  # an unreadable shape must not stop a local run; `estimate` reports it
    cal_mod = _calibrate()
    have = cal_mod.local_gpus()
    gpu = _local_gpu(have)
    w = estimator.workload_from_spec(spec, gpu)
    world = max(1, min(spec.resources.gpus, len(have) or 1))
    mem = estimator.memory(shape, w, world)
    out = {"model": shape.name, "params": shape.params, "size_class": shape.size_class,
           "technique": spec.technique.value, "memory": mem.to_json(), "memory_unit": "GB (10^9 bytes)",
           "gpu": gpu.name if gpu else None, "local_gpus": have,
           "fits": estimator.fits(mem, gpu) if gpu else None, "time": None}
    cal = cal_mod.get(shape, w, measure_if_missing=calibrate and os.environ.get("FTLAUNCH_CALIBRATE", "1") != "0")
    if cal is not None:
        tokens = estimator.count_tokens(spec.resolve_path(spec.dataset.path), w, max_samples=spec.dataset.max_samples)
        out["time"] = cal_mod.local_hours(shape, w, tokens, cal)
        out["tokens"] = dataclasses.asdict(tokens)
    return out


# --------------------------------------------------------------------------- what the spec needs of a target

def gpus_explicit(spec: Spec) -> bool:
    """True when the user set the GPU count (`gpus:` in the spec, `--gpu x:N`, `--set resources.gpus=N`);
    False for the default of 1, which lets the planner pick an instance with more GPUs (and say so)."""
    return "gpus" in spec.resources.model_fields_set


def needs(spec: Spec) -> set[Capability]:
    """The capabilities a target must have to run `spec`, derived from the spec alone: several nodes, spot,
    a region, the Docker runtime (`resources.runtime: docker` asks for this machine's container engine, which
    only --cloud local has; `auto` and `process` ask for nothing), a maximum runtime (set, or implied by
    max_cost). The planner drops targets that lack one before ranking (`refusals`), with the reason.
    Secrets are not a need: every backend passes them by name."""
    r = spec.resources
    out = set()
    if r.nodes > 1:
        out.add(Capability.MULTI_NODE)
    if r.spot:
        out.add(Capability.SPOT)
    if r.region:
        out.add(Capability.REGION)
    if r.runtime == "docker":
        out.add(Capability.DOCKER)
    if r.max_runtime or r.max_cost:
        out.add(Capability.MAX_RUNTIME)
    return out


def refusals(spec: Spec, target: str) -> list[str]:
    """Why `target` would refuse `spec` (empty when it would not), from its FACTS in the registry (what it
    cannot do, which storage URIs its jobs cannot read): checked before offers are ranked."""
    return backends.facts(target).refusals(needs(spec), storage_uris(spec))


def storage_uris(spec: Spec) -> dict[str, str]:
    """{spec field: URI} for the model and data the spec names by a storage URI (s3://, gs://, azureml://...)."""
    fields = {"model": spec.model, "dataset.path": spec.dataset.path, "dataset.eval_path": spec.dataset.eval_path}
    return {k: v for k, v in fields.items() if v and "://" in v}


def data_route(spec: Spec, target: str) -> list[str]:
    """How each storage URI of the spec reaches a job on `target` (the plan prints it)."""
    reads = backends.facts(target).reads
    return [f"{field} {uri}: {reads[uri.split('://', 1)[0].lower()]}" for field, uri in storage_uris(spec).items()
            if uri.split("://", 1)[0].lower() in reads]


def refuse_unsupported(spec: Spec, target: str) -> None:
    """Raises one UserError naming every need of `spec` that `target` lacks (and every storage URI its jobs
    cannot read), with each reason and alternative."""
    facts = backends.facts(target)
    problems = [errors.Problem(message=facts.unsupported[c], field=c.value)
                for c in sorted(needs(spec), key=lambda c: c.value) if c in facts.unsupported]
    problems += [errors.Problem(message=reason, field=field) for field, uri in storage_uris(spec).items()
                 for reason in facts.refusals(set(), {field: uri})]
    if problems:
        raise errors.UserError(f"--cloud {target} cannot run this job.", problems=problems)


# --------------------------------------------------------------------------- cloud offers

MAX_RUNTIME_FACTOR = 2.0  # the default maximum runtime: twice the estimate's high end ...
MAX_RUNTIME_FLOOR_S = 3600  # ... and at least an hour, the same rule on every backend


def _cloud(spec: Spec, name: str, targets: tuple[str, ...], *, optimize: str, require_fit: bool,
           online: bool, explicit: bool, refused: dict[tuple, str]) -> Plan:
    if optimize not in ("cost", "time"):
        raise errors.UserError(f"--optimize {optimize}: expected cost or time.")
    res = spec.resources
    shape = shapes.resolve(spec.model, base_dir=spec.base_dir, online=online)
    want = gpu_catalog.get(res.gpu) if res.gpu else None
    warnings: list[str] = []
    dropped: list[dict[str, str]] = []
    allowed = []
    for t in targets:
        why_not = refusals(spec, t)
        if why_not:
            dropped.append({"target": t, "reason": "; ".join(why_not)})
        else:
            allowed.append(t)
    if not allowed:
        raise errors.UserError(f"no target can run this job: {'; '.join(d['reason'] for d in dropped)}.",
                               hint="change the spec as each reason says, or pick another --cloud")
    rows = [r for r in prices.load() if r.target in allowed and gpu_catalog.find(r.gpu) is not None]
    if want is not None:
        rows = [r for r in rows if gpu_catalog.find(r.gpu) is want]
    if res.region:
        rows = [r for r in rows if r.region == res.region]
    if res.spot:
        rows = [r for r in rows if r.spot_usd_per_hour is not None]
    if not rows:
        refused = "".join(f"; {d['reason']}" for d in dropped)
        raise errors.UserError(
            f"no priced offer matches: targets {', '.join(targets)}, gpu {res.gpu or 'any'} x {res.gpus}"
            f"{', region ' + res.region if res.region else ''}{', spot' if res.spot else ''}{refused}.",
            hint="`ftlaunch prices show` lists what is priced; drop --gpu/region or pick another cloud")
    if explicit:
        for t in dict.fromkeys(r.target for r in rows):
            mine = [r for r in rows if r.target == t]
            if not any(r.gpus == res.gpus for r in mine):
                sizes = sorted({r.gpus for r in mine})
                warnings.append(f"{t} has no instance with {res.gpus} x {want.name if want else 'GPU'}"
                                f" (it offers {', '.join(map(str, sizes))} GPUs): its offers are shown, not chosen")
    tokens = estimator.count_tokens(spec.resolve_path(spec.dataset.path), estimator.workload_from_spec(spec),
                                    max_samples=spec.dataset.max_samples)
    today = _dt.date.today()
    offers = []
    for row in rows:
        o = _offer(spec, shape, row, tokens)
        o.flags = row.flags(today)
        if explicit and row.gpus != res.gpus:
            o.excluded = f"{row.gpus} GPUs per node; you asked for {res.gpus}"
        elif row.doubtful:
            o.excluded = "doubtful price (see its source; `ftlaunch prices refresh` replaces it)"
        elif failover_key(o) in refused:
            o.excluded = f"refused by {o.cloud}: {refused[failover_key(o)]}"
        offers.append(o)
    offers.sort(key=lambda o: _rank_key(o, optimize))
    budget = res.max_cost
    eligible = [o for o in offers if o.fits and not o.excluded]
    fitting = [o for o in eligible if budget is None or o.cost[0] <= budget]
    chosen = fitting[0] if fitting else None
    first = next((o for o in offers if not o.excluded), offers[0])
    w = estimator.workload_from_spec(spec, gpu_catalog.find(first.gpu))
    suggestions = _suggestions(spec, shape, w, first) if not any(o.fits for o in offers) else []
    est = {"model": shape.name, "shape_source": shape.source or "built-in table", "params": shape.params,
           "size_class": shape.size_class, "technique": spec.technique.value, "tokens": dataclasses.asdict(tokens),
           "epochs": spec.hyperparameters.epochs, "optimize": optimize, "suggestions": suggestions,
           "assumptions": _assumptions(spec, w), "one_gpu": _one_gpu(shape, spec), "memory_unit": "GB (10^9 bytes)",
           "headroom": estimator.HEADROOM, "dropped": dropped, "warnings": warnings,
           "global_batch": _global_batch(spec, res.gpus * res.nodes)}
    if chosen is None:
        why = _no_fit_reason(offers, budget, suggestions)
        if require_fit:
            raise errors.UserError(why, hint=suggestions[0]["spec_change"] if suggestions else
                                   "run `ftlaunch estimate` to see every offer")
        return Plan(spec=spec, job_name=name, cloud="+".join(targets), offer=None, offers=offers,
                    output_uri="", max_runtime_s=res.max_runtime, why=why, estimate=est)
    fitted, batch_note = _fit_spec_to_offer(spec, chosen, explicit)
    if fitted is not spec:  # re-plan the chosen offer as it will run (its GPU count, micro-batch, sharding)
        row = next(r for r in rows if (r.target, r.instance, r.region) == (chosen.cloud, chosen.instance, chosen.region))
        again = _offer(fitted, shape, row, tokens)
        again.flags, again.excluded = chosen.flags, chosen.excluded
        if again.fits:
            offers[offers.index(chosen)] = chosen = again
        spec = fitted
    est["global_batch"] = _global_batch(spec, chosen.gpus * chosen.nodes)
    if batch_note:
        warnings.append(batch_note)
    for flag, text in (("derived", "the chosen price is derived from a VM price and a factor, not quoted"),
                       ("stale", f"the chosen price dates from {chosen.price_date}, more than "
                                 f"{prices.STALE_DAYS} days ago: `ftlaunch prices refresh`")):
        if flag in chosen.flags:
            warnings.append(text)
    max_runtime, runtime_how = _max_runtime(res.max_runtime, chosen, budget)
    if budget is not None and chosen.cost[1] > budget:
        warnings.append(
            f"max_cost ${budget:,.2f} is below the estimate's high end ${chosen.cost[1]:,.2f}: the run stops after "
            f"{budget / chosen.price_per_hour:.2f} h of the up to {chosen.hours[1]:.2f} h it may need. Fix: raise "
            f"resources.max_cost to {_round_money(chosen.cost[1])}, use --spot, or a smaller offer")
    est["memory"] = chosen.details.get("memory")
    est["max_runtime"] = runtime_how
    est["failover"] = [_offer_line(o) for o in failover_order(offers, chosen, budget)]
    est["data"] = data_route(spec, chosen.cloud)
    return Plan(spec=spec, job_name=name, cloud=chosen.cloud, offer=chosen, offers=offers,
                output_uri=spec.output.path or "", max_runtime_s=max_runtime,
                why=_why(chosen, offers, optimize, budget), estimate=est,
                context=backends.plan_context(chosen.cloud, spec, name))


# --------------------------------------------------------------------------- failover

FAILOVER_LIMIT = 4  # offers tried after the chosen one, at most, before a launch gives up


def failover_key(offer: Offer) -> tuple:
    """What a capacity or quota refusal is about: one GPU type in one region of one provider. After a refusal
    no other offer with the same key is tried (another instance size of the same GPU there would meet the same
    quota or the same empty pool)."""
    return (offer.cloud, offer.region, offer.gpu, offer.spot)


def failover_order(offers: list[Offer], chosen: Offer, budget: float | None) -> list[Offer]:
    """The offers a launch tries, in order, if the chosen one is refused for capacity or quota: the next ones
    that fit, are not excluded and are within max_cost, one per failover_key, at most FAILOVER_LIMIT."""
    seen = {failover_key(chosen)}
    out = []
    for o in offers:
        key = failover_key(o)
        if o is chosen or key in seen or not o.fits or o.excluded or (budget is not None and o.cost[0] > budget):
            continue
        seen.add(key)
        out.append(o)
        if len(out) == FAILOVER_LIMIT:
            break
    return out


def _offer_line(o: Offer) -> dict[str, Any]:
    return {"target": o.cloud, "instance": o.instance, "region": o.region, "gpu": o.gpu, "gpus": o.gpus,
            "spot": o.spot, "total_usd": list(o.cost) if o.cost else None, "peak_gb_per_gpu": o.peak_gb_per_gpu}


def _round_money(x: float) -> str:
    return f"{math.ceil(x):,}" if x >= 10 else f"{math.ceil(x * 100) / 100:.2f}"


def _max_runtime(set_s: int | None, chosen: Offer, budget: float | None) -> tuple[int, str]:
    """One rule for every backend: the spec's max_runtime, else MAX_RUNTIME_FACTOR x the estimate's high end
    (at least MAX_RUNTIME_FLOOR_S); max_cost caps either."""
    if set_s:
        value, how = int(set_s), "resources.max_runtime"
    else:
        value = max(MAX_RUNTIME_FLOOR_S, int(math.ceil(chosen.hours[1] * MAX_RUNTIME_FACTOR * 3600)))
        how = f"default: {MAX_RUNTIME_FACTOR:g} x the estimate's high end ({chosen.hours[1]:.2f} h), at least 1 h"
    if budget is not None and chosen.price_per_hour:
        by_budget = int(budget / chosen.price_per_hour * 3600)
        if by_budget < value:
            value, how = by_budget, f"max_cost ${budget:,.2f} / ${chosen.price_per_hour:,.2f} per hour"
    return value, f"{value} s ({value / 3600:.2f} h): {how}"


def _global_batch(spec: Spec, devices: int) -> dict[str, int]:
    hp = spec.hyperparameters
    return {"per_device": hp.batch_size, "devices": devices, "grad_accum": hp.grad_accum,
            "global": hp.batch_size * devices * hp.grad_accum}


def _fit_spec_to_offer(spec: Spec, chosen: Offer, explicit: bool) -> tuple[Spec, str]:
    """The spec the chosen offer runs: its GPU count (so the uploaded spec and the request agree), FSDP when the
    offer fits only sharded, and the global batch (per-device x devices x grad_accum) the user planned kept
    where whole numbers allow it. Returns the spec and a line saying what changed ('' when nothing did)."""
    res, hp = spec.resources, spec.hyperparameters
    planned = hp.batch_size * max(1, res.gpus) * res.nodes * hp.grad_accum
    res_update: dict[str, Any] = {}
    note = ""
    if chosen.details.get("distributed") == "fsdp" and res.distributed == "auto" and spec.technique.value != "full":
        res_update["distributed"] = "fsdp"
    if chosen.gpus != res.gpus and not explicit:
        res_update["gpus"] = chosen.gpus
        world = chosen.gpus * res.nodes
        b, ga = hp.batch_size, hp.grad_accum
        kept = next(((b2, planned // (world * b2)) for b2 in range(b, 0, -1)
                     if planned % (world * b2) == 0), None)
        if kept:
            b, ga = kept
            note = (f"{chosen.instance} has {chosen.gpus} GPUs where the spec left 1: micro-batch {b} x {world} GPUs "
                    f"x grad_accum {ga} keeps the global batch of {planned}")
        else:
            note = (f"{chosen.instance} has {chosen.gpus} GPUs where the spec left 1: the global batch grows from "
                    f"{planned} to {b * world * ga} (set resources.gpus to keep one GPU)")
        if (b, ga) != (hp.batch_size, hp.grad_accum):
            spec = spec.model_copy(update={"hyperparameters": hp.model_copy(update={"batch_size": b,
                                                                                      "grad_accum": ga})})
    if res_update:
        spec = spec.model_copy(update={"resources": res.model_copy(update=res_update)})
    return spec, note


def _suggestions(spec: Spec, shape: shapes.Shape, w: estimator.Workload, first: Offer) -> list[dict[str, Any]]:
    """make_fit's changes, each re-planned from the spec with its overrides applied (what following the hint
    gives): dropped when the re-planned job does not fit, printed with the re-planned peak."""
    from ftlaunch.core import spec as spec_mod

    out = []
    for c in estimator.make_fit(shape, w, gpu_catalog.get(first.gpu), first.gpus * first.nodes):
        data = spec.to_json()
        data["base_dir"] = spec.base_dir
        try:
            for item in c.overrides:
                spec_mod.apply_override(data, item)
            again = spec_mod.validate(data)
        except errors.UserError:
            continue
        gpu = gpu_catalog.get(again.resources.gpu or c.gpu)
        world = again.resources.gpus * again.resources.nodes
        mem = estimator.memory(shape, estimator.workload_from_spec(again, gpu), world)
        if estimator.fits(mem, gpu):
            out.append(dataclasses.asdict(c) | {"peak_gb": round(mem.peak_gb, 2), "gpu": gpu.name, "gpus": world,
                                               "nodes": again.resources.nodes, "replanned": True})
    return out


def _offer(spec: Spec, shape: shapes.Shape, row: prices.PriceRow, tokens: estimator.Tokens) -> Offer:
    gpu = gpu_catalog.get(row.gpu)
    nodes = spec.resources.nodes
    world = row.gpus * nodes
    w = estimator.workload_from_spec(spec, gpu)
    mem = estimator.memory(shape, w, world)
    sharded = False
    if world > 1 and w.distributed == "auto" and not estimator.fits(mem, gpu):
        fsdp = estimator.memory(shape, w, world, "zero3")  # LoRA/QLoRA sharded too, where replicas do not fit
        if estimator.fits(fsdp, gpu):
            mem, sharded = fsdp, True
    t = estimator.time(shape, w, gpu, world, tokens, target=row.target, nodes=nodes)
    spot = spec.resources.spot
    hourly = (row.spot_usd_per_hour if spot else row.usd_per_hour) * nodes
    hours = t.hours
    fits = estimator.fits(mem, gpu)
    return Offer(cloud=row.target, instance=row.instance, gpu=gpu.name, gpus=row.gpus, nodes=nodes, region=row.region,
                 spot=spot, price_per_hour=round(hourly, 4), hours=(round(hours[0], 3), round(hours[1], 3)),
                 cost=(round(hourly * hours[0], 2), round(hourly * hours[1], 2)),
                 peak_gb_per_gpu=round(mem.peak_gb, 2), fits=fits,
                 note=("sharded (FSDP)" if sharded else "") if fits else
                 f"needs {mem.peak_gb:.1f} GB per GPU, fits {estimator.usable_gb(gpu):.1f} of {gpu.memory_gb:.1f} GB",
                 details=dict(row.details, gpu_memory_gb=round(gpu.memory_gb, 1),
                              usable_gb=round(estimator.usable_gb(gpu), 1), memory=mem.to_json(),
                              **({"distributed": "fsdp"} if sharded or mem.strategy == "zero3" else {}),
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
    return (not o.fits, bool(o.excluded), *primary, o.cloud, o.instance)


def _why(chosen: Offer, offers: list[Offer], optimize: str, budget: float | None) -> str:
    n_fit = sum(1 for o in offers if o.fits and not o.excluded)
    word = "cheapest" if optimize == "cost" else "fastest"
    hardware = (f"{chosen.nodes} nodes x {chosen.gpus} x {chosen.gpu} = {chosen.nodes * chosen.gpus} GPUs"
                if chosen.nodes > 1 else f"1 node x {chosen.gpus} x {chosen.gpu}")
    text = (f"{chosen.cloud} {chosen.instance} ({hardware}) is the {word} of {n_fit} offers that fit "
            f"({len(offers)} priced): ${chosen.cost[0]:,.2f}-${chosen.cost[1]:,.2f} over {chosen.hours[0]:.2f}-"
            f"{chosen.hours[1]:.2f} h at ${chosen.price_per_hour:,.2f}/h, peak {chosen.peak_gb_per_gpu:.1f} GB per GPU "
            f"of {chosen.details.get('gpu_memory_gb')} GB (fits within {estimator.HEADROOM:.0%})")
    if chosen.details.get("distributed") == "fsdp":
        text += ", sharded with FSDP"
    if budget is not None:
        text += f"; max_cost ${budget:,.2f} stops the run after {budget / chosen.price_per_hour:.2f} h"
    return text


def _no_fit_reason(offers: list[Offer], budget: float | None, suggestions: list[dict[str, Any]]) -> str:
    if any(o.fits and not o.excluded for o in offers):
        cheapest = min((o for o in offers if o.fits and not o.excluded), key=lambda o: o.cost[0])
        return (f"every offer that fits costs more than max_cost ${budget:,.2f} (cheapest: {cheapest.cloud} "
                f"{cheapest.instance}, ${cheapest.cost[0]:,.2f}-${cheapest.cost[1]:,.2f}).")
    fit_excluded = [o for o in offers if o.fits]
    if fit_excluded:
        o = fit_excluded[0]
        text = (f"no offer that fits can be chosen: {len(fit_excluded)} fit but are excluded (e.g. {o.cloud} "
                f"{o.instance}: {o.excluded}).")
        if "GPUs per node" in o.excluded:
            text += (f" To accept it: --gpu {(o.gpu or '').lower()}:{o.gpus} (the global batch grows with the GPU "
                     f"count unless you lower batch_size or grad_accum); or try another --cloud.")
    else:
        best = min([o for o in offers if not o.excluded] or offers, key=lambda o: o.peak_gb_per_gpu or 0)
        text = (f"the job does not fit on any offer: it needs {best.peak_gb_per_gpu:.1f} GB per GPU at best "
                f"({best.gpus} x {best.gpu}; an offer fits within {estimator.HEADROOM:.0%} of GPU memory).")
    if suggestions:
        text += " What would fit (re-planned): " + "; ".join(
            f"{c['what']} -> {c['peak_gb']:.1f} GB per GPU on {c['gpus']} x {c['gpu']} ({c['spec_change']})"
            for c in suggestions[:4])
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
