"""Backends: one package per target, each with the same files, and the one registry of their facts.

Each package's `__init__.py` declares its `FACTS` (base.BackendFacts: name, settings module, start-up time,
SDK extra, what it cannot do) without importing its SDK; `REGISTRY` below lists them in order, and every
place that needs a backend's name or facts (the spec, the CLI's choices, `check`, the planner, the estimator,
the catalog) reads them here. `get(name)` imports only the backend asked for; cloud SDKs load later still,
inside its methods.
"""

from __future__ import annotations

import importlib
from typing import Any

from ftlaunch.core import errors
from ftlaunch.backends import azureml, local, sagemaker, skypilot, vertex
from ftlaunch.backends.base import Backend, BackendFacts

# The registry: one line per backend, in the order people see them (`--cloud` choices, `check`, `auto`).
REGISTRY: dict[str, BackendFacts] = {f.name: f for f in (
    local.FACTS, sagemaker.FACTS, vertex.FACTS, azureml.FACTS, skypilot.FACTS)}
NAMES = tuple(REGISTRY)
CLOUDS = tuple(name for name, f in REGISTRY.items() if f.cloud)  # the targets priced in the catalog


def facts(name: str) -> BackendFacts:
    """The facts of the backend called `name`; UserError naming the known ones for any other name."""
    if name not in REGISTRY:
        raise errors.UserError(f"unknown cloud '{name}'.", hint=f"use one of: {', '.join(NAMES)}")
    return REGISTRY[name]


def all_facts() -> tuple[BackendFacts, ...]:
    return tuple(REGISTRY.values())


def get(name: str, **kwargs) -> Backend:
    """The backend called `name`, constructed with kwargs (e.g. `client=` for tests)."""
    facts(name)
    try:
        module = importlib.import_module(f"ftlaunch.backends.{name}.backend")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(f"ftlaunch.backends.{name}"):
            raise errors.UserError(f"the '{name}' backend is not available in this version of ftlaunch.",
                                   hint="use --cloud local, or see `ftlaunch check`") from None
        raise
    return module.BACKEND(**kwargs)


def settings_module(name: str) -> Any:
    """The backend's settings module (FACTS.settings): TABLE, resolve(), and what `check` reports."""
    return importlib.import_module(facts(name).settings)


def plan_context(name: str, spec: Any, job_name: str) -> dict[str, Any]:
    """What the backend's render needs from the launching machine (settings, local inputs, the local
    runtime), read at plan time by its settings module's `resolve(spec, job_name)` so render stays pure."""
    return settings_module(name).resolve(spec, job_name)
