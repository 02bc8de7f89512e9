"""The planning commands `estimate`, `gpus`, `recommend` and `prices`: pure functions compute rows, thin Click commands print them.

`from ftlaunch.cli import plan_cli`, then `group.add_command(plan_cli.estimate)` (and gpus, recommend, prices).
Nothing here imports torch, transformers or a cloud SDK.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click

from ftlaunch import backends
from ftlaunch.core import errors, term
from ftlaunch.planning import estimator, plan, shapes
from ftlaunch.core import spec as spec_mod
from ftlaunch.core import gpus as gpu_catalog
from ftlaunch.planning.catalog import prices as price_catalog
from ftlaunch.core.techniques import USE_CASES, Technique

ALL_TARGETS = plan.TARGETS
NOTHING_FITS = 4  # `ftlaunch estimate` exit code when no offer fits (or none can be chosen); see README


# --------------------------------------------------------------------------- computing

def offers_table(p: plan.Plan) -> list[dict[str, Any]]:
    """One row per offer, best first: target, instance, gpus, usd_per_hour, hours, total_usd, peak_gb_per_gpu, fits."""
    rows = []
    for o in p.offers:
        rows.append({"target": o.cloud, "instance": o.instance, "gpu": o.gpu, "gpus": o.gpus * o.nodes,
                     "usd_per_hour": o.price_per_hour, "hours": list(o.hours) if o.hours else None,
                     "total_usd": list(o.cost) if o.cost else None, "peak_gb_per_gpu": o.peak_gb_per_gpu,
                     "fits": o.fits, "spot": o.spot, "region": o.region, "nodes": o.nodes,
                     "price_flags": list(o.flags), "excluded": o.excluded or None,
                     "chosen": p.offer is not None and o is p.offer})
    return rows


def estimate_plan(spec_path: str, overrides: tuple[str, ...] = (), cloud: str | None = None, gpu: str | None = None,
                  optimize: str | None = None, online: bool = False) -> plan.Plan:
    """The plan `ftlaunch estimate` prints: every offer on the chosen cloud(s), never raising for 'does not fit'."""
    extra = list(overrides)
    if gpu:
        extra.append(f"resources.gpu={gpu}")
    if cloud and cloud != "auto":
        extra.append(f"resources.cloud={cloud}")
    spec = spec_mod.load(spec_path, tuple(extra))
    if cloud == "local":  # this machine: its own GPUs (or none) and a measured step time, not the clouds' offers
        return plan.make(spec, name=spec.name, optimize=optimize, require_fit=False, online=online, calibrate=True)
    targets = ALL_TARGETS if cloud == "auto" or (cloud is None and spec.resources.cloud == "local") \
        else plan.allowed_targets(spec)
    return plan.make(spec, name=spec.name, targets=targets, optimize=optimize, require_fit=False, online=online)


def plan_json(p: plan.Plan) -> dict[str, Any]:
    est = p.estimate or {}
    return {"job_name": p.job_name, "cloud": p.cloud, "chosen": dataclasses.asdict(p.offer) if p.offer else None,
            "why": p.why, "max_runtime_s": p.max_runtime_s, "memory_unit": "GB", "warnings": est.get("warnings", []),
            "offers": offers_table(p), "estimate": p.estimate}


def gpus_table(model: str, params: str | None = None, seq_len: int = 2048, batch_size: int = 1,
               online: bool = False) -> dict[str, Any]:
    """For `ftlaunch gpus --model X`: the model's size class and, per technique and GPU, peak and GPUs needed."""
    shape = shapes.resolve(model or "", params=params, online=online)
    w = estimator.Workload(seq_len=seq_len, batch_size=batch_size, gradient_checkpointing=True)
    techniques = (Technique.FULL, Technique.LORA, Technique.QLORA, Technique.IA3, Technique.PROMPT)
    return {"model": shape.name, "params": shape.params, "size_class": shape.size_class,
            "source": shape.source or "built-in table", "workload": dataclasses.asdict(w) | {"technique": None},
            "rows": estimator.hardware_table(shape, techniques, w)}


def recommendation(model: str, use_case: str, params: str | None = None, seq_len: int = 1024,
              online: bool = False) -> dict[str, Any]:
    """Names the technique, GPU and target for a model and use case, with the numbers behind the choice.

    Techniques are tried in the use case's order (techniques.USE_CASES), except that a large model (> 3B)
    skips full fine-tuning and a small one (< 300M) tries full first for classification; the first whose
    cheapest single-node offer fits wins."""
    if use_case not in USE_CASES:
        raise errors.UserError(f"unknown use case '{use_case}'.", hint="use one of " + ", ".join(USE_CASES))
    shape = shapes.resolve(model, params=params, online=online)
    task, order = USE_CASES[use_case]
    order = list(order)
    if shape.size_class == "large":
        order = [t for t in order if t is not Technique.FULL] + ([Technique.QLORA] if Technique.QLORA not in order else [])
    elif shape.size_class == "small" and Technique.FULL in order:
        order = [Technique.FULL] + [t for t in order if t is not Technique.FULL]
    rows = price_catalog.load()
    tried = []
    for t in order:
        w = estimator.Workload(technique=t, task=task, seq_len=seq_len, batch_size=4, gradient_checkpointing=True)
        tokens = estimator.Tokens(*(1e7, 1e7), "reference workload: 10M tokens, 1 epoch")
        best = None
        for row in rows:
            g = gpu_catalog.find(row.gpu)
            if g is None or row.usd_per_hour is None or row.doubtful:  # a doubtful price is never the choice
                continue
            mem = estimator.memory(shape, dataclasses.replace(w, precision="bf16" if g.bf16 else "fp16"), row.gpus)
            if not estimator.fits(mem, g):
                continue
            hours = estimator.time(shape, w, g, row.gpus, tokens, target=row.target).hours
            cost = row.usd_per_hour * sum(hours) / 2
            if best is None or cost < best["cost_usd"]:
                best = {"target": row.target, "instance": row.instance, "gpu": g.name, "gpus": row.gpus,
                        "usd_per_hour": row.usd_per_hour, "hours": [round(h, 2) for h in hours],
                        "cost_usd": round(cost, 2), "peak_gb_per_gpu": round(mem.peak_gb, 1),
                        "gpu_memory_gb": round(g.memory_gb, 1)}
        tried.append({"technique": t.value, "trainable_params": estimator.trainable_params(shape, w), "best": best})
        if best is not None:
            return {"model": shape.name, "params": shape.params, "size_class": shape.size_class, "use_case": use_case,
                    "task": task.value, "technique": t.value, "choice": best, "considered": tried,
                    "why": f"{shape.size_class} model ({term.count(shape.params)} parameters): {t.value} is the first "
                           f"of {', '.join(x.value for x in order)} with an offer that fits; cheapest for 10M tokens: "
                           f"{best['target']} {best['instance']} at ${best['cost_usd']:.2f}"}
    raise errors.UserError(f"no technique for {shape.name} fits any priced offer.",
                           hint="use more GPUs (ftlaunch gpus --model ...) or a smaller model")


# --------------------------------------------------------------------------- printing

def print_plan(console: Any, p: plan.Plan, max_rows: int = 20) -> None:
    """Prints the offers table (rich, best `max_rows`), then the chosen offer and why (or why nothing fits)."""
    from rich.table import Table

    est = p.estimate or {}
    if est:
        tokens = est.get("tokens")
        line = (f"{term.count(est.get('params', 0))} parameters ({est.get('size_class')}), "
                f"technique {est.get('technique')}")
        if tokens:
            line += (f"; tokens per epoch {tokens.get('low', 0):,.0f}-{tokens.get('high', 0):,.0f}"
                     f" ({tokens.get('how', '')})")
        console.print(term.markup("[bold]{}[/]: {}", str(est.get("model")), line))
    table = Table(show_lines=False, title="offers (best first)")
    for col, justify in (("target", "left"), ("instance", "left"), ("GPUs", "right"), ("$/h", "right"),
                         ("hours", "right"), ("total $", "right"), ("peak GB/GPU", "right"), ("fits", "center")):
        table.add_column(col, justify=justify, overflow="fold")
    rows = offers_table(p)
    marks = {"doubtful": "!", "derived": "d", "stale": "s"}
    for row in rows[:max_rows]:
        if row["chosen"]:
            mark = term.markup("[bold green]*[/] {}", row["target"])
        elif row["excluded"]:
            mark = term.markup("[dim]x[/] {}", row["target"])
        else:
            mark = row["target"]
        hours, cost = row["hours"], row["total_usd"]
        price_marks = "".join(marks[f] for f in row["price_flags"] if f in marks)
        gpus = (f"{row['nodes']} x {row['gpus'] // row['nodes']} x {row['gpu']}" if row["nodes"] > 1
                else f"{row['gpus']} x {row['gpu']}") if row["gpu"] else "CPU"
        table.add_row(mark, row["instance"] + (" (spot)" if row["spot"] else ""), gpus,
                      f"{row['usd_per_hour']:,.2f}" + (f" {price_marks}" if price_marks else ""),
                      f"{hours[0]:.2f}-{hours[1]:.2f}" if hours else "-",
                      f"{cost[0]:,.2f}-{cost[1]:,.2f}" if cost else "-",
                      f"{row['peak_gb_per_gpu']:.1f}" if row["peak_gb_per_gpu"] is not None else "?",
                      "yes" if row["fits"] else term.plain("no", "red") if row["fits"] is False else "?")
    console.print(table)
    if len(rows) > max_rows:
        console.print(f"... {len(rows) - max_rows} more offers (--json lists all)")
    console.print(term.plain(f"memory in GB (10^9 bytes); an offer fits within {estimator.HEADROOM:.0%} of GPU "
                             "memory; x: shown, not chosen (--json says why); $/h marks: ! doubtful (never chosen), "
                             f"d derived from a VM price, s older than {price_catalog.STALE_DAYS} days", "dim"))
    for d in est.get("dropped") or []:
        console.print(f"dropped {d['target']} before ranking: {d['reason']}")
    excluded = sorted({r["excluded"] for r in rows if r["excluded"] and r["fits"]})
    for why in excluded[:3]:
        console.print(term.plain(f"not chosen ({why})", "dim"))
    one = est.get("one_gpu")
    if one:
        where = ", ".join(one["fits_on"]) if one["fits_on"] else "none of the catalog's GPUs"
        console.print(f"on one GPU it needs {one['peak_gb']:.1f} GB: fits {where}")
    batch = est.get("global_batch")
    if batch:
        console.print(f"global batch {batch['global']} = micro-batch {batch['per_device']} x {batch['devices']} GPUs x "
                      f"grad_accum {batch['grad_accum']}")
    for line in est.get("data") or []:
        console.print(term.plain(f"data: {line}", ""))
    if p.offer is not None:
        console.print(term.markup("[bold]chosen:[/] {}", p.why))
        if p.max_runtime_s:
            console.print(f"maximum runtime: {est.get('max_runtime') or f'{p.max_runtime_s} s'}")
    else:
        console.print(term.markup("[bold red]nothing chosen:[/] {}", p.why))
    for line in est.get("warnings") or []:
        console.print(term.markup("[yellow]warning:[/] {}", line))


def _console() -> Any:
    from ftlaunch.core import term

    return term.console()


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _run(fn: Any) -> Any:
    try:
        return fn()
    except errors.UserError as exc:
        click.echo(exc.render(), err=True)
        raise SystemExit(exc.exit_code) from None


# --------------------------------------------------------------------------- commands

@click.command("estimate")
@click.argument("spec", default=spec_mod.DEFAULT_SPEC, required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a spec field")
@click.option("--cloud", type=click.Choice(["auto", *backends.NAMES]),
              help="rank offers on one target (default: the spec's cloud; all four when it is local or auto)")
@click.option("--gpu", help="GPU type, or type:count, e.g. a100 or a100:8")
@click.option("--optimize", type=click.Choice(["cost", "time"]), help="choose the cheapest (default) or fastest")
@click.option("--online", is_flag=True, help="read model configs from the Hugging Face hub when not built in")
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON")
def estimate(spec: str, overrides: tuple[str, ...], cloud: str | None, gpu: str | None, optimize: str | None,
             online: bool, as_json: bool) -> None:
    """Memory, time and cost of SPEC on every offer, and the one ftlaunch would choose."""
    p = _run(lambda: estimate_plan(spec, overrides, cloud, gpu, optimize, online))
    if as_json:
        _print_json(plan_json(p))
    else:
        print_plan(_console(), p)
    if p.offer is None or p.offer.fits is False:
        raise SystemExit(NOTHING_FITS)


@click.command("gpus")
@click.option("--model", help="hub id, local folder, .gguf, or pkg:<package>/<file>")
@click.option("--params", help="parameter count instead of a model, e.g. 7B")
@click.option("--seq-len", default=2048, show_default=True)
@click.option("--batch-size", default=1, show_default=True)
@click.option("--online", is_flag=True, help="read the config from the hub when not built in")
@click.option("--json", "as_json", is_flag=True)
def gpus(model: str | None, params: str | None, seq_len: int, batch_size: int, online: bool, as_json: bool) -> None:
    """Which GPUs each technique needs for a model (peak GB on one GPU, fewest GPUs that fit)."""
    if not model and not params:
        _run(lambda: (_ for _ in ()).throw(errors.UserError("give --model or --params.")))
    data = _run(lambda: gpus_table(model or "", params, seq_len, batch_size, online))
    if as_json:
        _print_json(data)
        return
    from rich.table import Table

    console = _console()
    console.print(term.markup("[bold]{}[/]: {} parameters, {} (micro-batch {} x {} tokens, gradient checkpointing, "
                              "bf16)", data["model"], term.count(data["params"]), data["size_class"], batch_size,
                              seq_len))
    table = Table(title=f"peak GB per GPU / GPUs needed (1, 2, 4, 8; sharded; fits within {estimator.HEADROOM:.0%})")
    techniques = list(dict.fromkeys(r["technique"] for r in data["rows"]))
    table.add_column("GPU")
    for t in techniques:
        table.add_column(t, justify="right")
    for g in dict.fromkeys(r["gpu"] for r in data["rows"]):
        cells = []
        for t in techniques:
            r = next(x for x in data["rows"] if x["gpu"] == g and x["technique"] == t)
            cells.append(f"{r['peak_gb_one_gpu']:.1f} / {r['gpus_needed'] or '>8'}")
        mem = next(x for x in data["rows"] if x["gpu"] == g)["gpu_memory_gb"]
        table.add_row(f"{g} ({mem:.1f} GB)", *cells)
    console.print(table)


@click.command("recommend")
@click.option("--model", help="hub id, local folder, .gguf, or pkg:<package>/<file>")
@click.option("--params", help="parameter count instead of a model, e.g. 7B")
@click.option("--use-case", required=True, type=click.Choice(list(USE_CASES)))
@click.option("--online", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def recommend(model: str | None, params: str | None, use_case: str, online: bool, as_json: bool) -> None:
    """The technique, GPU and target for a model and use case, with the numbers behind the choice."""
    data = _run(lambda: recommendation(model or "", use_case, params, online=online))
    if as_json:
        _print_json(data)
        return
    console = _console()
    c = data["choice"]
    console.print(term.markup("[bold]{}[/] on {} {} ({} x {}): peak {} of {} GB per GPU, ${:.2f}/h", data["technique"],
                              c["target"], c["instance"], c["gpus"], c["gpu"], c["peak_gb_per_gpu"],
                              c["gpu_memory_gb"], c["usd_per_hour"]))
    console.print(data["why"])
    for t in data["considered"]:
        best = t["best"]
        console.print(f"  {t['technique']}: {t['trainable_params']:,} trainable parameters; " +
                      (f"cheapest fit {best['target']} {best['instance']} ${best['cost_usd']:.2f}" if best
                       else "no offer fits"))


@click.group("prices")
def prices() -> None:
    """The dated price tables the planner uses."""


@prices.command("show")
@click.option("--target", type=click.Choice(list(ALL_TARGETS)))
@click.option("--gpu")
@click.option("--json", "as_json", is_flag=True)
def prices_show(target: str | None, gpu: str | None, as_json: bool) -> None:
    """Prices per target with their date and source."""
    rows = price_catalog.table(_run(price_catalog.load), target, gpu)
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    table = Table(box=None)  # one line a row: long cells end in an ellipsis on a terminal, in full in a pipe
    for col in ("target", "instance", "GPUs", "region", "$/h", "spot $/h", "date", "flags", "source"):
        table.add_column(col, no_wrap=True, overflow="ellipsis")
    for r in rows:
        table.add_row(r["target"], r["instance"], f"{r['gpus']} x {r['gpu']}", r["region"],
                      f"{r['usd_per_hour']:.4f}" if r["usd_per_hour"] is not None else "-",
                      f"{r['spot_usd_per_hour']:.4f}" if r["spot_usd_per_hour"] is not None else "-",
                      r["date"], ", ".join(r["flags"]), r["source"])
    _console().print(table)


@prices.command("refresh")
@click.option("--offline", is_flag=True, help="use only SkyPilot catalog files on this machine")
@click.option("--skypilot-dir", help="folder with <cloud>/vms.csv (default: ~/.sky/catalogs/v8 ...)")
@click.option("--gcp-api-key", envvar="GOOGLE_API_KEY", help="API key for the Cloud Billing Catalog")
def prices_refresh(offline: bool, skypilot_dir: str | None, gcp_api_key: str | None) -> None:
    """Updates the price table from the providers' public price APIs or SkyPilot's catalog files."""
    _, report = _run(lambda: price_catalog.refresh(online=not offline, skypilot_dir=skypilot_dir,
                                                   gcp_api_key=gcp_api_key))
    for source, n in report.updated.items():
        click.echo(f"updated {n} rows from {source}")
    for source, why in report.skipped.items():
        click.echo(f"skipped {source}: {why}")
    click.echo(f"wrote {report.path}")
