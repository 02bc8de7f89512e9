"""The `ftlaunch` command line: `ftlaunch --cloud vertex --gpu a100 [--dry-run] [SPEC]` and its subcommands.

Imports stay light (click, pydantic, yaml, rich): torch, transformers and cloud SDKs load only inside
the commands that need them, so `ftlaunch --help` and `ftlaunch estimate` start fast.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from ftlaunch import __version__, backends
from ftlaunch.core import errors

LAUNCH_OPTIONS = ("cloud", "gpu", "nodes", "spot", "region", "dry_run", "as_json", "overrides", "detach", "runtime",
                  "image", "resume", "skip_preflight", "no_failover")


def _console(stderr: bool = False):
    from ftlaunch.core import term

    return term.console(stderr)


# Commands that live beside their logic, loaded only when run, so `ftlaunch --help` imports no spec
# model: name -> (module, attribute, the short help --help lists; a test keeps it equal to the command's).
LAZY_COMMANDS = {
    "estimate": ("ftlaunch.cli.plan_cli", "estimate",
                 "Memory, time and cost of SPEC on every offer, and the one ftlaunch would choose."),
    "gpus": ("ftlaunch.cli.plan_cli", "gpus",
             "Which GPUs each technique needs for a model (peak GB on one GPU, fewest GPUs that fit)."),
    "recommend": ("ftlaunch.cli.plan_cli", "recommend",
                  "The technique, GPU and target for a model and use case, with the numbers behind the choice."),
    "prices": ("ftlaunch.cli.plan_cli", "prices", "The dated price tables the planner uses."),
    "check": ("ftlaunch.cli.check", "check", "Say, per backend, whether its SDK, credentials and settings are in "
              "place, and how to fix what is not."),
    "build": ("ftlaunch.cli.build_cli", "build", "Build the job image and push it, without launching."),
}


class Cli(click.Group):
    """A group whose bare form launches: `ftlaunch [OPTIONS] SPEC` is `ftlaunch launch [OPTIONS] SPEC`,
    and every user mistake is printed as one message with exit code 2, never a traceback."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else None
        if name is not None and name not in self.list_commands(ctx) and not name.startswith("-"):
            return "launch", self.commands["launch"], args
        return super().resolve_command(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in LAZY_COMMANDS:
            import importlib

            module, attribute, _ = LAZY_COMMANDS[name]
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Click's listing, with the lazy commands' short help taken from LAZY_COMMANDS (no import)."""
        from click.utils import make_default_short_help

        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in self.commands:
                if not self.commands[name].hidden:
                    rows.append((name, self.commands[name].get_short_help_str(limit)))
            else:
                rows.append((name, make_default_short_help(LAZY_COMMANDS[name][2], limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.UserError as exc:
            click.echo(click.style("error: ", fg="red", bold=True) + exc.render(), err=True)
            ctx.exit(exc.exit_code)


def _markup(template: str, *values: Any) -> Any:
    """Our styling around user text that prints verbatim (see term.markup)."""
    from ftlaunch.core import term

    return term.markup(template, *values)


def launch_options(func):
    """The options of the launch form, shared by the bare group and `ftlaunch launch`."""
    options = [
        click.option("--cloud", metavar="|".join([*backends.NAMES, "auto"]),
                     help="Where to run (default: the spec's resources.cloud); several clouds, comma-separated "
                          "(sagemaker,vertex), plan and fail over among those only.",
                     shell_complete=lambda ctx, param, incomplete: [n for n in [*backends.NAMES, "auto"]
                                                                    if n.startswith(incomplete)]),
        click.option("--gpu", help="GPU type, optionally with a count: a100, h100:8, l4.",
                     shell_complete=lambda ctx, param, incomplete: complete_gpus(incomplete)),
        click.option("--nodes", type=int, help="Number of nodes."),
        click.option("--spot/--no-spot", default=None, help="Use spot (preemptible) capacity."),
        click.option("--region", help="Cloud region."),
        click.option("--runtime", type=click.Choice(["auto", "docker", "process"]),
                     help="Local only: run in Docker or as a plain process."),
        click.option("--image", metavar="REF",
                     help="Cloud only: a prebuilt job image, used as given (nothing is built or pushed)."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a spec value, e.g. --set hyperparameters.max_steps=20 (repeatable)."),
        click.option("--dry-run", is_flag=True, default=None, help="Plan and render the job; submit nothing."),
        click.option("--json", "as_json", is_flag=True, default=None,
                     help="Print machine-readable JSON ({plan, request} with --dry-run)."),
        click.option("--detach", "-d", is_flag=True, default=None,
                     help="Return once the job is submitted instead of following its logs."),
        click.option("--skip-preflight", is_flag=True, default=None,
                     help="Launch without checking the local data first (the job still checks it as it loads)."),
        click.option("--no-failover", is_flag=True, default=None,
                     help="Cloud only: stop at the first offer's capacity or quota refusal instead of trying the "
                          "plan's next offers."),
        click.option("--resume", "resume", metavar="JOB", default=None,
                     help="Resume an ended job from its newest checkpoint instead (same as `ftlaunch resume JOB`)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(cls=Cli, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@launch_options
@click.version_option(__version__, prog_name="ftlaunch")
@click.pass_context
def main_group(ctx: click.Context, **options: Any) -> None:
    """Fine-tune a language model on any cloud from one spec file.

    \b
      ftlaunch --cloud vertex --gpu a100 --dry-run spec.yaml   # the exact job, memory, time and cost
      ftlaunch --cloud local examples/quickstart.yaml          # run it here
      ftlaunch estimate spec.yaml                              # compare offers on every cloud
      ftlaunch init --use-case instruction                     # write a starter spec

    SPEC defaults to ./ftlaunch.yaml. `ftlaunch SPEC` is the same as `ftlaunch launch SPEC`.
    """
    ctx.ensure_object(dict)
    ctx.obj["launch_defaults"] = options
    if ctx.invoked_subcommand is None:
        if all(value in (None, ()) for value in options.values()):  # bare `ftlaunch`: say what it can do
            click.echo(ctx.get_help())
            ctx.exit(0)
        ctx.invoke(launch)


# ---------------------------------------------------------------- launch

@main_group.command()
@click.argument("spec_path", metavar="[SPEC]", required=False, type=click.Path(dir_okay=False))
@launch_options
@click.pass_context
def launch(ctx: click.Context, spec_path: str | None, **options: Any) -> None:
    """Plan, render and submit SPEC (default ./ftlaunch.yaml); follow its logs unless --detach."""
    defaults = (ctx.find_root().obj or {}).get("launch_defaults", {})
    for key in LAUNCH_OPTIONS:
        if options.get(key) in (None, ()) and defaults.get(key) not in (None, ()):
            options[key] = defaults[key]
    if options.get("resume") is not None:
        resume_job(options["resume"], follow=not options.get("detach"))
        return
    spec_path = spec_path or _default_spec()
    prepared = prepare(spec_path, options)
    if options.get("dry_run"):
        show_dry_run(prepared, as_json=bool(options.get("as_json")))
        return
    ensure_image(prepared, quiet=bool(options.get("as_json")))
    submit(prepared, follow=not options.get("detach"), as_json=bool(options.get("as_json")))


def _default_spec() -> str:
    from ftlaunch.core import spec as spec_mod

    return spec_mod.DEFAULT_SPEC


def option_overrides(options: dict[str, Any]) -> list[str]:
    """The launch options as spec overrides, so the CLI and the spec share one validation path."""
    out = [f"resources.{k}={options[k]}" for k in ("cloud", "gpu", "nodes", "region", "runtime")
           if options.get(k) is not None and not (k == "cloud" and "," in options[k])]
    if options.get("cloud") and "," in options["cloud"]:  # --cloud sagemaker,vertex: auto among those
        names = [n.strip() for n in options["cloud"].split(",") if n.strip()]
        out += ["resources.cloud=auto", f"resources.clouds=[{', '.join(names)}]"]
    if options.get("spot") is not None:
        out.append(f"resources.spot={'true' if options['spot'] else 'false'}")
    return out + list(options.get("overrides") or ())


class Prepared:
    """A spec turned into a plan, a backend and the exact request that submit would send; `failover`: the
    offers a launch tries next if this one is refused for capacity or quota (clouds not configured left out),
    `skipped`: {cloud: the settings it lacks} for clouds `auto` could not consider."""

    def __init__(self, spec: Any, plan: Any, backend: Any, request: Any, options: dict[str, Any] | None = None,
                 skipped: dict[str, list[str]] | None = None):
        self.spec, self.plan, self.backend, self.request = spec, plan, backend, request
        self.options = options or {}
        self.skipped = skipped or {}

    @property
    def failover(self) -> list[dict[str, Any]]:
        if self.options.get("no_failover") or self.plan.cloud == "local":
            return []
        return [o for o in (self.plan.estimate or {}).get("failover", []) if o["target"] not in self.skipped]


def prepare(spec_path: str, options: dict[str, Any]) -> Prepared:
    """load -> plan -> render. Pure computing: prints nothing, submits nothing."""
    from ftlaunch.core import spec as spec_mod

    spec = spec_mod.load(spec_path, option_overrides(options))
    if not options.get("skip_preflight"):
        preflight_data(spec)
    skipped = _unconfigured_clouds(spec, options) if spec.resources.cloud == "auto" else {}  # or `clouds:`
    return prepare_plan(spec, options, skipped=skipped)


def prepare_plan(spec: Any, options: dict[str, Any], *, name: str | None = None, targets: tuple | None = None,
                 refused: dict[tuple, str] | None = None, skipped: dict[str, list[str]] | None = None) -> Prepared:
    """plan -> render for a loaded spec; with `refused` (failover) the offers refused so far are not chosen."""
    from ftlaunch import backends
    from ftlaunch.planning import image as plan_image
    from ftlaunch.planning import plan as plan_mod

    skipped = skipped or {}
    if targets is None and skipped:
        targets = tuple(t for t in plan_mod.allowed_targets(spec) if t not in skipped)
    plan = plan_mod.make(spec, name=name, targets=targets, refused=refused,
                         calibrate=not options.get("dry_run"))  # a real local run measures this machine once
    plan_image.choose_image(plan, options.get("image"))
    backend = backends.get(plan.cloud)  # the planner has refused every need this target lacks
    request = backend.render(plan)
    return Prepared(spec, plan, backend, request, options, skipped)


def _unconfigured_clouds(spec: Any, options: dict[str, Any]) -> dict[str, list[str]]:
    """`--cloud auto`: {cloud: settings it lacks} for the clouds whose request would still hold placeholders,
    so neither the choice nor a failover lands on a cloud this machine cannot use. When no cloud is configured
    none is left out (a dry run then shows every offer, and submit names what to set)."""
    from ftlaunch import backends
    from ftlaunch.planning import image as plan_image
    from ftlaunch.planning import plan as plan_mod
    from ftlaunch.backends import base

    out: dict[str, list[str]] = {}
    allowed = plan_mod.allowed_targets(spec)
    for target in allowed:
        try:
            plan = plan_mod.make(spec, name="probe", targets=(target,), require_fit=False)
        except errors.UserError:
            continue  # nothing priced there: the plan drops it by itself
        if plan.offer is None:
            continue
        plan_image.choose_image(plan, options.get("image"))
        missing = base.placeholders(backends.get(target).render(plan))
        if missing:
            out[target] = missing
    return {} if len(out) == len(allowed) else out


def preflight_data(spec: Any) -> None:
    """Refuses a launch (and its dry run) whose local data has errors, before anything is planned or sent:
    the same row checks as `ftlaunch validate`, without the token-length pass."""
    from ftlaunch.core import preflight

    report = preflight.before_launch(spec.resolved())
    if report is None or report.ok:
        return
    errors_ = report.errors
    shown = "\n  ".join(p.render() for p in errors_[:preflight.SHOWN])
    more = f"\n  ... and {len(errors_) - preflight.SHOWN} more" if len(errors_) > preflight.SHOWN else ""
    raise errors.UserError(f"the data has {len(errors_)} problem(s); nothing was submitted:\n  {shown}{more}",
                           hint="fix the rows listed (`ftlaunch validate SPEC` shows the full report), or launch "
                                "with --skip-preflight to let the job meet them")


def show_dry_run(prepared: Prepared, as_json: bool) -> None:
    from ftlaunch.planning import image as plan_image

    image = plan_image.dry_run(prepared.plan)  # a cloud launch's image: would it be built, pushed?
    if as_json:
        click.echo(json.dumps({"plan": prepared.plan.to_json(), "request": prepared.request.to_json(),
                               "failover": prepared.failover, "not_configured": prepared.skipped,
                               **({"image": image} if image else {})}, indent=2, default=str))
        return
    console = _console()
    print_plan(console, prepared.plan)
    _print_failover(console, prepared)
    console.print(_markup("\n[bold]The job request[/] (exactly what submit sends to {}):", prepared.request.backend))
    console.print_json(json.dumps(prepared.request.to_json(), default=str))
    if image:
        console.print(image["summary"], soft_wrap=True)
    console.print(_markup("\n[dim]Dry run: nothing was submitted. Drop --dry-run to launch.[/]"))


def _print_failover(console: Any, prepared: Prepared) -> None:
    """The offers a launch would try next, in order, if the chosen one is refused for capacity or quota."""
    for cloud, missing in prepared.skipped.items():
        console.print(_plain(f"{cloud}: not considered (not configured: {', '.join(missing)})", "dim"))
    if prepared.plan.cloud == "local":
        return
    if not prepared.failover:
        why = "--no-failover" if prepared.options.get("no_failover") else "no other offer fits within max_cost"
        console.print(f"failover: none ({why})")
        return
    console.print("failover, if the chosen offer is refused for capacity or quota:")
    for i, o in enumerate(prepared.failover, 1):
        cost = o["total_usd"]
        console.print(f"  {i}. {o['target']} {o['instance']}{' ' + o['region'] if o['region'] else ''} "
                      f"({o['gpus']} x {o['gpu']}{', spot' if o['spot'] else ''}): ${cost[0]:,.2f}-${cost[1]:,.2f}, "
                      f"{o['peak_gb_per_gpu']:.1f} GB/GPU")


def _plain(text: str, style: str) -> Any:
    from ftlaunch.core import term

    return term.plain(text, style)


def print_plan(console: Any, plan: Any) -> None:
    """The offers table (target, instance, GPUs, $/h, hours, total $, peak GB/GPU, fits) and the choice."""
    from ftlaunch.cli import plan_cli

    console.print(_markup("[bold]job[/] {}", plan.job_name))
    plan_cli.print_plan(console, plan)


def ensure_image(prepared: Prepared, quiet: bool) -> None:
    """A cloud launch is image + job: the image the request names is built and pushed first, only if missing."""
    from ftlaunch.planning import image as plan_image

    result = plan_image.ensure_image(prepared.plan, prepared.request,
                                    on_line=None if quiet else (lambda line: click.echo(line, err=True)))
    if result is not None and not quiet:
        click.echo(plan_image.describe(result), err=True)


def submit(prepared: Prepared, follow: bool, as_json: bool) -> None:
    from ftlaunch.core import jobs

    console = _console()
    if not as_json:
        print_plan(console, prepared.plan)
    failover = Failover(prepared, quiet=as_json)
    handle = failover.submit()
    plan = failover.prepared.plan
    store = jobs.JobStore()
    try:
        cost = plan.offer.cost[1] if plan.offer.cost else None
        store.add(handle=handle, spec=plan.spec, image=plan.image, state="PENDING", predicted_cost=cost,
                  plan_json={k: v for k, v in plan.to_json().items() if k != "spec"}, attempts=failover.attempts)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"job": handle.job_name, "backend": handle.backend,
                               "provider_id": handle.provider_id, "output": handle.output_uri}))
        return
    console.print(_markup("[bold green]submitted[/] {} to {}", handle.job_name, handle.backend))
    if not follow:
        _print_next_steps(console, handle.job_name)
        return
    while True:
        code, status = _follow(console, failover.prepared.backend, handle)
        if status is None or not failover.after_failure(status):
            break
        handle = failover.submit()  # the job failed before training for capacity: the next offer
        store = jobs.JobStore()
        try:
            store.move_attempt(handle.job_name, handle, failover.attempts)
        finally:
            store.close()
        console.print(_markup("[bold green]submitted[/] {} to {}", handle.job_name, handle.backend))
    if code:
        click.get_current_context().exit(code)


class Failover:
    """A launch's tries: submits the chosen offer; when the provider refuses it for capacity or quota
    (base.capacity_refusal), or a followed job fails for that reason before training, re-plans without the
    refused offers and submits the next one (its image built or pushed first if missing), up to the plan's
    failover order. Any other refusal (the user's: a role, a bucket, an image) stops at once. `attempts`:
    every try, the refused ones with their reason."""

    def __init__(self, prepared: Prepared, quiet: bool):
        self.prepared, self.quiet = prepared, quiet
        self.attempts: list[dict[str, Any]] = []
        self.refused: dict[tuple, str] = {}
        self.tries = 1 + len(prepared.failover)

    def submit(self) -> Any:
        from ftlaunch.backends import base

        while True:
            offer = self.prepared.plan.offer
            try:
                handle = self.prepared.backend.submit(self.prepared.request)
            except errors.UserError as exc:
                if not base.capacity_refusal(exc.message) or not self._next(exc.message):
                    if self.attempts:
                        exc.message += f" (after {len(self.attempts)} refused offer" \
                                       f"{'s' if len(self.attempts) > 1 else ''}: " \
                                       f"{'; '.join(a['backend'] + ' ' + a['instance'] for a in self.attempts)})"
                    raise
                continue
            self.attempts.append({"attempt": len(self.attempts) + 1, "started_at": time.time(),
                                  "backend": handle.backend, "instance": offer.instance, "region": offer.region,
                                  "provider_id": handle.provider_id})
            return handle

    def after_failure(self, status: Any) -> bool:
        """True when a followed job FAILED for capacity or quota (it never trained) and the next offer is
        planned: the caller submits it."""
        from ftlaunch.backends import base

        return status.state.value == "FAILED" and base.capacity_refusal(status.reason) and \
            self._next(status.reason, submitted=True)

    def _next(self, reason: str, submitted: bool = False) -> bool:
        """Records the refusal of the current offer and plans the next; False when none is left."""
        from ftlaunch.planning import plan as plan_mod

        offer = self.prepared.plan.offer
        if not self.prepared.failover or len(self.refused) + 1 >= self.tries:
            return False
        if submitted:
            self.attempts[-1]["refused"] = reason
        else:
            self.attempts.append({"attempt": len(self.attempts) + 1, "started_at": time.time(),
                                  "backend": offer.cloud, "instance": offer.instance, "region": offer.region,
                                  "refused": reason})
        self.refused[plan_mod.failover_key(offer)] = reason
        nxt = prepare_plan(self.prepared.spec, self.prepared.options, name=self.prepared.plan.job_name,
                           refused=self.refused, skipped=self.prepared.skipped)
        if not self.quiet:
            click.echo(f"{offer.cloud} refused {offer.instance} ({reason}); failing over to "
                       f"{nxt.plan.offer.cloud} {nxt.plan.offer.instance}", err=True)
        if self.prepared.spec.notify is not None:  # `notify:` hears of a failover as of any state change
            from ftlaunch.cli import notify

            notify.send(self.prepared.spec.notify.model_dump(exclude_none=True), {
                "job": self.prepared.plan.job_name, "backend": offer.cloud, "state": "FAILOVER",
                "previous_state": "FAILED" if submitted else "REFUSED", "reason": reason, "cost": None,
                "predicted_cost": nxt.plan.offer.cost[1] if nxt.plan.offer.cost else None,
                "output": f"next: {nxt.plan.offer.cloud} {nxt.plan.offer.instance}"})
        ensure_image(nxt, quiet=self.quiet)
        self.prepared = nxt
        return True


def _follow_or_detach(console: Any, backend: Any, handle: Any, follow: bool) -> None:
    """After a submit: print the next commands (detached), or follow the job and exit with its outcome."""
    if not follow:
        _print_next_steps(console, handle.job_name)
        return
    code = follow_job(console, backend, handle)
    if code:
        click.get_current_context().exit(code)


# What a followed launch exits with (README, "Exit codes"): the job's outcome, not only the launcher's.
EXIT_FAILED = 1
EXIT_CANCELLED = 3
EXIT_PREEMPTED = 75  # the trainer's own code for "stopped by SIGTERM after saving a checkpoint"


def follow_job(console: Any, backend: Any, handle: Any) -> int:
    """Streams the job's log until it ends and returns the exit code for its outcome (outcome_code);
    Ctrl-C detaches, leaves the job running and returns 0."""
    return _follow(console, backend, handle)[0]


def _follow(console: Any, backend: Any, handle: Any) -> tuple[int, Any]:
    """follow_job, with the job's final status (None when Ctrl-C detached)."""
    try:
        for line in backend.logs(handle, follow=True):
            click.echo(line)
    except KeyboardInterrupt:
        console.print(_markup("\n[yellow]detached[/]; {} keeps running.", handle.job_name))
        _print_next_steps(console, handle.job_name)
        return 0, None
    status = _refresh(backend, handle)
    _print_outcome(console, handle, status)
    return outcome_code(status), status


def outcome_code(status: Any) -> int:
    """0 succeeded; 75 stopped for preemption with a checkpoint saved (`ftlaunch resume JOB`); 3 cancelled;
    1 failed, or ended in a state this launcher does not know."""
    state = status.state.value
    if state == "SUCCEEDED":
        return 0
    if state == "CANCELLED":
        return EXIT_CANCELLED
    if status.exit_code == EXIT_PREEMPTED:
        return EXIT_PREEMPTED
    return EXIT_FAILED


def _print_next_steps(console: Any, job: str) -> None:
    console.print(f"  ftlaunch status {job}\n  ftlaunch logs -f {job}\n  ftlaunch fetch {job}\n"
                  f"  ftlaunch cancel {job}")


def _print_outcome(console: Any, handle: Any, status: Any) -> None:
    color = {"SUCCEEDED": "green", "FAILED": "red", "CANCELLED": "yellow"}.get(status.state.value, "white")
    console.print(_markup("[bold " + color + "]{}[/] {}{}", status.state.value, handle.job_name,
                          f": {status.reason}" if status.reason else ""))
    if status.state.value == "SUCCEEDED" and handle.backend == "local":
        _print_results(console, Path(handle.output_uri))
    if status.state.value == "SUCCEEDED":
        console.print(f"outputs: {handle.output_uri}\n  ftlaunch fetch {handle.job_name} --dest DIR")


def _print_results(console: Any, folder: Path) -> None:
    from ftlaunch.cli import report_text

    console.print(report_text.results(folder))


def _refresh(backend: Any, handle: Any) -> Any:
    """Polls the backend once and stores the state in the job records (telling `notify:` of a change)."""
    from ftlaunch.core import jobs

    status = backend.status(handle)
    store = jobs.JobStore()
    try:
        _observe(store, handle.job_name, _status_fields(status))
    finally:
        store.close()
    return status


def _observe(store: Any, job_id: str, fields: dict[str, Any]) -> None:
    """Stores a polled state; if it changed, runs the job's spec `notify:` (a failure there only warns)."""
    from ftlaunch.cli import notify

    before = store.observe(job_id, **fields)
    if before is not None:
        notify.observed(before, fields)


def _status_fields(status: Any) -> dict[str, Any]:
    """What a poll changes in a job record: state, reason, and the actual cost where the backend knows it."""
    fields = {"state": status.state.value, "reason": status.reason}
    if getattr(status, "actual_cost", None) is not None:
        fields["actual_cost"] = status.actual_cost
    return fields


# ---------------------------------------------------------------- spec tools

@main_group.command()
@click.argument("spec_path", metavar="[SPEC]", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec value.")
@click.option("--data/--no-data", "check_data", default=True, show_default=True,
              help="Also pre-flight the local data: columns, malformed rows, lengths, labels, duplicates.")
@click.option("--json", "as_json", is_flag=True, help="Print the validated spec (and data report) as JSON.")
def validate(spec_path: str | None, overrides: tuple[str, ...], check_data: bool, as_json: bool) -> None:
    """Check SPEC (and its local data) and say what is wrong, where, and how to fix it."""
    from ftlaunch.core import spec as spec_mod

    path = spec_path or spec_mod.DEFAULT_SPEC
    spec = spec_mod.load(path, overrides)
    report = None
    if check_data:
        from ftlaunch.core import preflight

        report = preflight.check(spec.resolved())
    if as_json:
        click.echo(json.dumps({"spec": spec.to_json(), "data": report.to_json() if report else None}, indent=2))
    else:
        console = _console()
        console.print(_markup("[green]ok[/] {}: {} with {} on {}", path, spec.task.value, spec.technique.value,
                              spec.model))
        if report is not None:
            preflight.print_report(console, report)
    if report is not None and not report.ok:
        raise errors.UserError(f"{path}: the data has {len(report.errors)} problem(s) (listed above).",
                               hint="fix the rows named above, or map columns with dataset.columns")


@main_group.command()
def schema() -> None:
    """Print the spec's JSON Schema (for editor completion: yaml-language-server)."""
    from ftlaunch.core import spec as spec_mod

    click.echo(json.dumps(spec_mod.json_schema(), indent=2))


@main_group.command()
@click.option("--use-case", type=click.Choice(["instruction", "chat", "classification", "domain", "preference"]),
              default="instruction", show_default=True, help="What the fine-tune is for.")
@click.option("--size", type=click.Choice(["small", "medium", "large"]), default="small", show_default=True,
              help="Model size class: small < 300M, medium 300M-3B, large > 3B parameters.")
@click.option("--model", help="Model to start from (default: a popular open model of that size).")
@click.option("--name", default=None, help="Job name (default: from the use case).")
@click.option("-o", "--output", "out_path", default="ftlaunch.yaml", show_default=True, type=click.Path())
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(use_case: str, size: str, model: str | None, name: str | None, out_path: str, force: bool) -> None:
    """Write a starter spec for a use case and model size."""
    from ftlaunch.cli import starters

    text = starters.render(use_case=use_case, size=size, model=model, name=name, filename=out_path)
    path = Path(out_path)
    if path.exists() and not force:
        raise errors.UserError(f"{path} already exists; it was left unchanged.",
                               hint="pass --force to overwrite it, or -o to write elsewhere")
    from ftlaunch.core import manifest

    manifest.atomic_write_text(path, text)
    _console().print(f"wrote {path} ({use_case}, {size} model). Next: ftlaunch estimate {path}")


@main_group.command()
@click.option("--task", type=click.Choice(["sft", "cpt", "classification", "reward", "dpo", "rl"]),
              help="Only show whether each technique supports this task.")
@click.option("--model", default="Qwen/Qwen2.5-7B", show_default=True,
              help="Model the trainable share and memory are computed for (built-in table or local path).")
@click.option("--json", "as_json", is_flag=True)
def techniques(task: str | None, model: str, as_json: bool) -> None:
    """How the techniques differ: trainable share, memory on one GPU, typical use, what each trains."""
    from rich.table import Table

    from ftlaunch.planning import estimator
    from ftlaunch.core import techniques as tech, term

    rows = tech.table()
    numbers = {r["technique"]: r for r in estimator.compare_techniques(model)}
    if as_json:
        click.echo(json.dumps([{**row, **numbers[row["technique"]]} for row in rows], indent=2))
        return
    # Task columns only where they say something: a task asked for, or a pair that is not supported.
    tasks = [task] if task else [t.value for t in tech.Task if any(r["tasks"][t.value] for r in rows)]
    table = Table(box=None, title=f"for {model}: trainable share and peak GB on one GPU "
                                  f"(micro-batch 8 x 512 tokens, bf16, gradient checkpointing)")
    table.add_column("technique", style="bold")
    table.add_column("trainable", justify="right")
    table.add_column("peak GB", justify="right")
    table.add_column("typical use")
    for name in tasks:
        table.add_column(name, justify="center")
    table.add_column("what it trains")
    for row in rows:
        n = numbers[row["technique"]]
        marks = ["yes" if row["tasks"][name] is None else term.plain("no", "dim") for name in tasks]
        table.add_row(row["technique"], f"{n['trainable_percent']:.3g}%", f"{n['peak_gb']:.1f}",
                      ", ".join(n["use_cases"]) or "-", *marks, row["description"])
    console = _console()
    console.print(table)
    for r in rows:
        for name in tasks:
            if r["tasks"][name]:
                console.print(term.markup("[dim]{} x {}: {}[/]", r["technique"], name, r["tasks"][name]))


# ---------------------------------------------------------------- jobs

def _job(job_id: str | None) -> tuple[Any, Any]:
    """The record and backend of JOB_ID (an id or a unique prefix), or of the latest job when none is given.
    An empty id (an unset $JOB) is refused, never taken as "the latest"."""
    from ftlaunch import backends
    from ftlaunch.core import jobs

    store = jobs.JobStore()
    try:
        record = store.get(_job_id(job_id)) if job_id is not None else store.latest()
    finally:
        store.close()
    return record, backends.get(record.backend)


def _job_id(job_id: str) -> str:
    if not job_id.strip():
        raise errors.UserError("the job id is empty (an unset shell variable?); refusing to guess which job.",
                               hint="pass a job id or a prefix of one (`ftlaunch ls` lists them), or leave the "
                                    "argument out to use the latest job")
    return job_id


@main_group.command()
@click.argument("job_id", required=False, shell_complete=lambda ctx, param, incomplete: complete_jobs(incomplete))
@click.option("--json", "as_json", is_flag=True)
def status(job_id: str | None, as_json: bool) -> None:
    """One job's state (default: the latest), polled from its backend."""
    record, backend = _job(job_id)
    handle = record.handle
    current = _refresh(backend, handle)
    if as_json:
        click.echo(json.dumps({"job": record.id, "backend": record.backend, "state": current.state.value,
                               "reason": current.reason, "output": record.output_uri}))
        return
    console = _console()
    console.print(_markup("{}  [bold]{}[/]  ({}){}", record.id, current.state.value, record.backend,
                          f"  {current.reason}" if current.reason else ""))
    console.print(f"  outputs: {record.output_uri}")


@main_group.command()
@click.argument("job_id", required=False, shell_complete=lambda ctx, param, incomplete: complete_jobs(incomplete))
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
def logs(job_id: str | None, follow: bool) -> None:
    """A job's stdout and stderr (default: the latest job)."""
    record, backend = _job(job_id)
    try:
        for line in backend.logs(record.handle, follow=follow):
            click.echo(line)
    except KeyboardInterrupt:
        pass


@main_group.command()
@click.argument("job_id", required=False)
def cancel(job_id: str | None) -> None:
    """Stop a job (default: the latest running one); nothing happens if it has already ended."""
    if job_id is None:
        record, backend = _latest_running()
        _console().print(f"cancelling the latest running job, {record.id}")
    else:
        record, backend = _job(job_id)
    backend.cancel(record.handle)
    current = _refresh(backend, record.handle)
    _console().print(f"{record.id}: {current.state.value}")


def _latest_running(scan: int = 20) -> tuple[Any, Any]:
    """The newest recorded job that its backend still reports as pending or running (of the last `scan`
    not recorded as ended); UserError when there is none."""
    from ftlaunch import backends
    from ftlaunch.core import jobs

    store = jobs.JobStore()
    try:
        candidates = [r for r in store.list(200) if r.state in ("PENDING", "RUNNING")][:scan]
    finally:
        store.close()
    for record in candidates:
        backend = backends.get(record.backend)
        if not _refresh(backend, record.handle).state.done:
            return record, backend
    raise errors.UserError("no running job to cancel.", hint="`ftlaunch ls` lists jobs; pass a job id to cancel one")


@main_group.command()
@click.argument("job_id", required=False, shell_complete=lambda ctx, param, incomplete: complete_jobs(incomplete))
@click.option("--dest", type=click.Path(file_okay=False), help="Folder to put the outputs in: a new or empty "
              "one, or one an earlier fetch wrote (default: ./ftlaunch-outputs/JOB).")
@click.option("--checkpoint", is_flag=True, help="Bring back the newest complete checkpoint instead (a stopped "
              "job's too); local backend (process runtime) only for now.")
def fetch(job_id: str | None, dest: str | None, checkpoint: bool) -> None:
    """Pull a job's outputs here and verify every file against manifest.json."""
    record, backend = _job(job_id)
    target = Path(dest) if dest is not None else Path("ftlaunch-outputs") / record.id
    if dest is not None and not dest.strip():
        raise errors.UserError("--dest is empty.", hint="pass --dest with a new or empty folder, or leave it out")
    if checkpoint:
        if record.backend != "local":
            raise errors.UserError(f"fetch --checkpoint is not supported for {record.backend} jobs yet.",
                                   hint="copy the newest checkpoint-N folder with a COMPLETE file from the job's "
                                        "checkpoint location")
        folder = backend.fetch_checkpoint(record.handle, target)
        _console().print(_markup("[green]fetched[/] {}'s newest complete checkpoint into {}", record.id, str(folder)))
        return
    from ftlaunch.core import manifest
    from ftlaunch.backends import base

    base.fetched_before(target)  # refuses a folder holding the user's files before anything is downloaded
    folder = backend.fetch(record.handle, target)
    data = manifest.verify(folder)
    console = _console()
    console.print(_markup("[green]fetched[/] {} into {}: {} files verified against manifest.json",
                          record.id, str(folder), len(data["files"])))
    extra = base.unlisted(folder, data)
    if extra:
        shown = ", ".join(extra[:10]) + (f" and {len(extra) - 10} more" if len(extra) > 10 else "")
        console.print(_markup("[yellow]warning[/]: {} file(s) not listed in manifest.json, so not verified: {}",
                              len(extra), shown))


@main_group.command(name="ls")
@click.option("-n", "limit", default=20, show_default=True, help="How many jobs.")
@click.option("--json", "as_json", is_flag=True)
def ls_(limit: int, as_json: bool) -> None:
    """Recorded jobs, newest first; unfinished ones are polled (a few seconds at most)."""
    from rich.table import Table

    from ftlaunch.core import jobs

    store = jobs.JobStore()
    try:
        records = store.list(limit)
    finally:
        store.close()
    records = refresh_unfinished(records)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in records], indent=2))
        return
    table = Table(box=None)
    for col in ("job", "backend", "state", "spec", "created", "predicted $", "actual $"):
        table.add_column(col)
    for r in records:
        table.add_row(r.id, r.backend, r.state, r.spec_hash, time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at)),
                      _money(r.predicted_cost), _money(r.actual_cost))
    _console().print(table)


@main_group.command()
@click.argument("job_id", required=False, shell_complete=lambda ctx, param, incomplete: complete_jobs(incomplete))
def show(job_id: str | None) -> None:
    """Everything recorded about a job: spec, plan, handle, state, attempts with their first and last logged
    steps (JSON)."""
    record, backend = _job(job_id)
    data = record.to_json()
    steps = backend.attempt_steps(record.handle) if hasattr(backend, "attempt_steps") else []
    ran = [a for a in data["attempts"] if "refused" not in a]  # a failover's refused offers never ran
    for attempt, (first, last) in zip(ran, steps):
        attempt.update(first_step=first, last_step=last)
    click.echo(json.dumps(data, indent=2))


@main_group.command()
@click.argument("job_id")
@click.option("--detach", "-d", is_flag=True, help="Return once the attempt is submitted instead of following it.")
def resume(job_id: str, detach: bool) -> None:
    """A new attempt of an ended job (cancelled, preempted, failed) on the same backend and offer, starting
    from the newest complete checkpoint in the job's checkpoint location."""
    resume_job(job_id, follow=not detach)


def resume_job(job_id: str, follow: bool) -> None:
    from ftlaunch.core import jobs

    record, backend = _job(_job_id(job_id))
    if record.state == "SUCCEEDED":
        raise errors.UserError(f"job {record.id} has already succeeded; there is nothing to resume.",
                               hint=f"`ftlaunch fetch {record.id}` brings back its outputs")
    if not hasattr(backend, "resume"):
        raise errors.UserError(f"resuming a {record.backend} job is not supported yet ({record.id}).",
                               hint=getattr(backend, "RESUME_HINT", "launch the spec again as a new job"))
    handle = backend.resume(record.handle)
    store = jobs.JobStore()
    try:
        attempt = store.add_attempt(record, handle)
    finally:
        store.close()
    console = _console()
    console.print(_markup("[bold green]resumed[/] {}: attempt {} on {}", record.id, attempt["attempt"], record.backend))
    _follow_or_detach(console, backend, handle, follow)


UNFINISHED = ("PENDING", "RUNNING")
REFRESH_BUDGET_S = 5.0  # `ls` waits at most this long for all backends together
REFRESH_FRESH_S = 15.0  # a job polled this recently is shown as recorded, not polled again


def refresh_unfinished(records: list[Any], budget_s: float = REFRESH_BUDGET_S,
                       fresh_s: float = REFRESH_FRESH_S) -> list[Any]:
    """The records with unfinished jobs polled from their backends, in parallel and within budget_s in all.

    A job recorded or polled in the last fresh_s seconds is not polled again (the record is the cache);
    a backend that fails or does not answer in time leaves its record as it was. New states are stored.
    """
    import dataclasses
    import queue
    import threading

    from ftlaunch import backends
    from ftlaunch.core import jobs

    now = time.time()
    stale = [r for r in records if r.state in UNFINISHED and now - r.updated_at >= fresh_s]
    if not stale:
        return records
    answers: queue.Queue = queue.Queue()

    def poll(record: Any) -> None:
        try:
            answers.put((record.id, backends.get(record.backend).status(record.handle)))
        except Exception:  # a backend that cannot answer now (no SDK, no credentials, no network)
            answers.put((record.id, None))

    for record in stale:  # daemon threads: a backend that hangs cannot hold the command past its budget
        threading.Thread(target=poll, args=(record,), daemon=True).start()
    found: dict[str, Any] = {}
    deadline = now + budget_s
    for _ in stale:
        try:
            job_id, status_ = answers.get(timeout=max(0.0, deadline - time.time()))
        except queue.Empty:
            break
        if status_ is not None:
            found[job_id] = status_
    if not found:
        return records
    store = jobs.JobStore()
    try:
        for job_id, status_ in found.items():
            _observe(store, job_id, _status_fields(status_))
    finally:
        store.close()
    return [dataclasses.replace(r, state=found[r.id].state.value, reason=found[r.id].reason) if r.id in found else r
            for r in records]


def complete_gpus(incomplete: str) -> list[str]:
    """Shell completion for --gpu: the catalog's GPU names (after a comma too, for comma-separated lists)."""
    from ftlaunch.core import gpus

    return _complete_list(incomplete, [g.name.lower() for g in gpus.GPUS])


def complete_clouds(incomplete: str) -> list[str]:
    """Shell completion for comma-separated --cloud lists."""
    from ftlaunch import backends

    return _complete_list(incomplete, list(backends.NAMES))


def complete_jobs(incomplete: str) -> list[str]:
    """Shell completion for JOB: recorded job ids, newest first."""
    from ftlaunch.core import jobs

    try:
        store = jobs.JobStore()
        try:
            return [r.id for r in store.list(200) if r.id.startswith(incomplete)]
        finally:
            store.close()
    except Exception:  # completion must never print a traceback into the user's shell
        return []


def _complete_list(incomplete: str, names: list[str]) -> list[str]:
    head, comma, last = incomplete.rpartition(",")
    return [head + comma + name for name in names if name.startswith(last.lower())]


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# ---------------------------------------------------------------- bench

@main_group.command(name="bench")
@click.argument("spec_path", metavar="[SPEC]", required=False, type=click.Path(dir_okay=False))
@click.option("--techniques", help="Comma-separated techniques (default: the spec's bench.techniques, "
              "else every technique the task supports).")
@click.option("--cloud", "clouds", help="Comma-separated targets to compare too (default: the spec's cloud).",
              shell_complete=lambda ctx, param, incomplete: complete_clouds(incomplete))
@click.option("--gpu", "gpus", help="Comma-separated GPU types to compare too.",
              shell_complete=lambda ctx, param, incomplete: complete_gpus(incomplete))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec value.")
@click.option("--out", type=click.Path(file_okay=False), help="Bench folder (default: ./bench-<name>); "
              "running again resumes it, rerunning only cells whose spec changed.")
@click.option("--force", is_flag=True, help="Rerun every cell, even those finished with the same spec.")
def bench_command(spec_path: str | None, techniques: str | None, clouds: str | None, gpus: str | None,
                  overrides: tuple[str, ...], out: str | None, force: bool) -> None:
    """Run SPEC once per technique and write a report: quality, trainable parameters, memory, time, cost."""
    from ftlaunch.bench import run as bench, report as bench_report

    console = _console()
    runner, rows = bench.run(spec_path or _default_spec(), techniques=_split(techniques), clouds=_split(clouds),
                             gpus=_split(gpus), overrides=overrides, out=out, force=force,
                             on_event=lambda message: console.print(_markup("[dim]bench[/] {}", message)))
    paths = bench_report.write(runner, rows)
    _, higher, label = bench.QUALITY[runner.base.task]
    console.print(bench_report.terminal_table(label, higher, rows))
    console.print(f"report: {paths['markdown']}\n        {paths['html']}")
    failed = [r["cell"] for r in rows if r["state"] != "SUCCEEDED"]
    if failed:
        console.print(_markup("[yellow]{} cell(s) did not succeed[/]: {}; run the same command again to retry "
                              "them (finished cells are kept).", len(failed), ", ".join(failed)))


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


# ---------------------------------------------------------------- shell completion

@main_group.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(ftlaunch completion bash)"."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    comp = cls(main_group, {}, "ftlaunch", "_FTLAUNCH_COMPLETE")
    click.echo(comp.source())


def main() -> None:
    main_group(prog_name="ftlaunch")


if __name__ == "__main__":
    sys.exit(main())
