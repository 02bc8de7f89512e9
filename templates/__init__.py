"""Jinja templates shipped as package data: starter specs by use case (and the job image's Dockerfile)."""

from __future__ import annotations

from importlib import resources


def text(name: str) -> str:
    """The template file `name` (e.g. 'specs/instruction.yaml.j2') as text."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def render(template: str, **values: object) -> str:
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    return env.from_string(text(template)).render(**values)


def names(folder: str) -> list[str]:
    return sorted(p.name for p in resources.files(__name__).joinpath(folder).iterdir() if p.name.endswith(".j2"))
