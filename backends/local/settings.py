"""Local settings: the runtime this machine gives the job (Docker when an engine answers, else a process) and
what render needs for it, decided at plan time so that render() stays pure. The planner calls `resolve`
through the registry (FACTS.settings); the local backend has no cloud settings or credentials to check."""

from __future__ import annotations

from typing import Any, Mapping

from ftlaunch.backends.local import docker


def resolve(spec: Any, job_name: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The plan's runtime context for --cloud local: docker.plan_context (runtime, runtime_note, image, ...)."""
    return docker.plan_context(spec, env)
