"""Backends: one package per target (local, sagemaker, vertex, azureml, skypilot), each with the same files.

`get(name)` imports only the backend asked for; cloud SDKs load later still, inside its methods.
"""

from __future__ import annotations

import importlib

from ftlaunch import errors
from ftlaunch.backends.base import Backend

NAMES = ("local", "sagemaker", "vertex", "azureml", "skypilot")


def get(name: str, **kwargs) -> Backend:
    """The backend called `name`, constructed with kwargs (e.g. `client=` for tests)."""
    if name not in NAMES:
        raise errors.UserError(f"unknown cloud '{name}'.", hint=f"use one of: {', '.join(NAMES)}")
    try:
        module = importlib.import_module(f"ftlaunch.backends.{name}.backend")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(f"ftlaunch.backends.{name}"):
            raise errors.UserError(f"the '{name}' backend is not available in this version of ftlaunch.",
                                   hint="use --cloud local, or see `ftlaunch check`") from None
        raise
    return module.BACKEND(**kwargs)
