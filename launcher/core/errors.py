"""Errors a person can cause and fix: each says what was wrong, where, and how to fix it."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Problem:
    """One mistake at one place: `where` is a file:line or an option, `field` the dotted spec key."""

    message: str
    where: str | None = None
    field: str | None = None
    hint: str | None = None

    def render(self) -> str:
        head = ": ".join(p for p in (self.where, self.field) if p)
        text = f"{head}: {self.message}" if head else self.message
        if self.hint:
            text += f"\n  fix: {self.hint}"
        return text


class UserError(Exception):
    """A mistake in the user's input or environment. The CLI prints it without a traceback, exit 2."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, *, problems: list[Problem] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.problems = problems or []

    def render(self) -> str:
        lines = [self.message]
        lines += ["  " + p.render().replace("\n", "\n  ") for p in self.problems]
        if self.hint:
            lines.append(f"  fix: {self.hint}")
        return "\n".join(lines)


class MissingExtra(UserError):
    """An optional dependency is not installed; names the extra that brings it."""

    def __init__(self, module: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package '{module}', which is not installed.",
            hint=f"pip install 'ftlaunch[{extra}]'",
        )
        self.module = module
        self.extra = extra
