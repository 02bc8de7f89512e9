"""ftlaunch: one fine-tuning spec -> a job on any cloud, with its memory, time and cost known first."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`from ftlaunch import spec`: the spec API keeps its public name (it lives in ftlaunch.core.spec)."""
    if name == "spec":
        import importlib

        return importlib.import_module("ftlaunch.core.spec")
    raise AttributeError(f"module 'ftlaunch' has no attribute {name!r}")
