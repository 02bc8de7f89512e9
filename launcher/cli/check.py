"""`ftlaunch check`: per backend, whether its SDK extra, credentials and settings are present, and what to do
about each one missing. Looks without importing the SDKs where it can, and never submits anything."""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

import click

from ftlaunch import backends
from ftlaunch.backends import base


def gather(env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per backend in the registry: {backend, ready, items: [{what, ok, detail, fix}]}."""
    env = dict(os.environ if env is None else env)
    rows = [row(facts, env) for facts in backends.all_facts()]
    for r in rows:
        r["ready"] = all(item["ok"] for item in r["items"])
    return rows


def row(facts: base.BackendFacts, env: dict[str, str]) -> dict[str, Any]:
    """One backend's findings, from its FACTS (the SDK extra) and its settings module (`credentials(env)`,
    the settings in CHECK with their FALLBACKS), where it has them."""
    install = f"pip install 'ftlaunch[{facts.extra}]'"
    items = [base.finding(f"{facts.sdk_label} (extra `{facts.extra}`)", all(_has(m) for m in facts.sdk), fix=install)]
    settings = backends.settings_module(facts.name)
    if hasattr(settings, "credentials"):
        items.append(settings.credentials(env))
    rows = tuple((key, settings.TABLE[key][0], what) for key, what in getattr(settings, "CHECK", ()))
    items += _settings(env, facts.name, rows, getattr(settings, "FALLBACKS", {}))
    return {"backend": facts.name, "items": items}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def check(as_json: bool) -> None:
    """Say, per backend, whether its SDK, credentials and settings are in place, and how to fix what is not."""
    rows = gather()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from ftlaunch.core import term

    console = term.console()
    for row in rows:
        mark = "[green]ready[/]" if row["ready"] else "[yellow]not ready[/]"
        console.print(term.markup("[bold]{}[/]: " + mark, row["backend"]))
        for item in row["items"]:
            sign = "[green]ok[/]  " if item["ok"] else "[red]missing[/]"
            console.print(term.markup("  " + sign + " {}{}", item["what"], f": {item['detail']}" if item["detail"] else ""))
            if not item["ok"] and item["fix"]:
                console.print(term.plain(f"          fix: {item['fix']}"))


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _setting(env: dict[str, str], section: str, key: str, var: str) -> tuple[bool, str]:
    value = base.settings(section, {key: (var, None)}, env)[key]
    return value is not None, str(value) if value is not None else ""


def _settings(env: dict[str, str], section: str, rows: tuple[tuple[str, str, str], ...],
              fallbacks: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """One row per setting a backend needs, (key, variable, what it is): found in the environment or
    `section` of $FTLAUNCH_HOME/config.yaml, else how to set it. `fallbacks`: key -> (key, variable) that
    stands in when the first is unset (a full image reference instead of a registry, say)."""
    items = []
    for key, var, what in rows:
        ok, value = _setting(env, section, key, var)
        if not ok and key in fallbacks:
            ok, value = _setting(env, section, *fallbacks[key])
        items.append(base.finding(var, ok, value, f"export {var}=... ({what}) or set it under `{section}:` in "
                                            "$FTLAUNCH_HOME/config.yaml"))
    return items


