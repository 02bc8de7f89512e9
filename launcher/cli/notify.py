"""Tells the spec's `notify:` command or URL when the launcher sees a job change state.

The launcher sees a change when it polls a job (`ftlaunch status`, `ls`, the end of a followed launch or
`resume`) and the state differs from the recorded one; each change is told once, even with several shells
polling (jobs.JobStore.observe). A command gets the event as FTLAUNCH_NOTIFY_* environment variables on top
of a small base environment (PATH, HOME, locale): nothing else of the launcher's environment, so no
credentials or secret values reach it. A URL gets the event as a JSON POST. Either way a failure to notify
is a warning: it never fails the command that saw the change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Callable

TIMEOUT_S = 5.0  # a URL's answer
COMMAND_TIMEOUT_S = 30.0
# what a notify command inherits from the launcher's environment; everything else is left out
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SYSTEMROOT", "TZ")
# the event, in this order: job id, backend, new and previous state, the provider's reason, actual cost so far
# (USD, empty if unknown), predicted cost (USD), outputs location
FIELDS = ("job", "backend", "state", "previous_state", "reason", "cost", "predicted_cost", "output")


def observed(before: Any, fields: dict[str, Any], warn: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Notifies about a state change the launcher saw: `before` is the job record as it was (JobStore.observe),
    `fields` what the poll stored. Returns the event sent, or None if the job's spec has no `notify:`."""
    settings = (json.loads(before.spec_json or "{}") or {}).get("notify")
    if not settings:
        return None
    cost = fields.get("actual_cost", before.actual_cost)
    event = {"job": before.id, "backend": before.backend, "state": fields["state"], "previous_state": before.state,
             "reason": fields.get("reason"), "cost": cost, "predicted_cost": before.predicted_cost,
             "output": before.output_uri}
    send(settings, event, warn or _warn)
    return event


def send(settings: dict[str, Any], event: dict[str, Any], warn: Callable[[str], None] | None = None) -> None:
    """Runs the command and posts to the URL that `settings` (the spec's notify section) name."""
    warn = warn or _warn
    if settings.get("command"):
        run_command(settings["command"], event, warn)
    url = settings.get("url")
    where = "notify.url"
    if settings.get("url_from"):
        where = f"notify.url_from ({settings['url_from']})"
        url = os.environ.get(settings["url_from"])
        if not url:
            warn(f"{where} is not set in this shell's environment, so nothing was posted for {event['job']} "
                 f"({event['state']}); export it where you run ftlaunch")
            return
    if url:
        post(url, event, warn, where)


def command_env(event: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a notify command gets: BASE_ENV from the launcher's, plus FTLAUNCH_NOTIFY_<FIELD>."""
    env = os.environ if env is None else env
    out = {k: env[k] for k in BASE_ENV if k in env}
    for key in FIELDS:
        value = event.get(key)
        out[f"FTLAUNCH_NOTIFY_{key.upper()}"] = "" if value is None else str(value)
    return out


def run_command(argv: list[str], event: dict[str, Any], warn: Callable[[str], None]) -> None:
    try:
        proc = subprocess.run(argv, env=command_env(event), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT_S)
    except FileNotFoundError:
        warn(f"notify.command {argv[0]} was not found; fix notify.command in the spec (argv, no shell)")
        return
    except (OSError, subprocess.TimeoutExpired) as exc:
        warn(f"notify.command {argv[0]} did not run to the end ({type(exc).__name__}); check it by hand")
        return
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        warn(f"notify.command {argv[0]} exited {proc.returncode} for {event['job']} ({event['state']})"
             f"{': ' + last[0][:200] if last[0] else ''}")


def post(url: str, event: dict[str, Any], warn: Callable[[str], None], where: str = "notify.url") -> None:
    """POSTs the event as JSON. Warnings name where the URL came from, never the URL (it may hold a token)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(event).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "ftlaunch"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            answer.read()
    except urllib.error.HTTPError as exc:
        warn(f"{where} answered HTTP {exc.code} for {event['job']} ({event['state']}); check the endpoint")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        warn(f"{where} could not be reached for {event['job']} ({event['state']}): {reason}; check the URL "
             f"and the network")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)
