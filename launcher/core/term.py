"""The one rich Console every command prints through, and the one place user text is made safe to print.

Strings given to the console are printed verbatim: markup (`[bold]`) and emoji codes (`:100:`) are off,
so a path, prompt, model answer or provider message can never be rewritten. Our own styling goes
through `markup()`, whose template is ours and whose values are escaped here, once.
In a pipe or a file nothing is hard-wrapped: lines are as long as their text.
"""

from __future__ import annotations

import sys
from typing import Any

# Wide enough that a table in a pipe or log file never folds a cell; tables take only the width they need.
PIPE_WIDTH = 10_000


def console(stderr: bool = False) -> Any:
    """A rich Console that prints strings verbatim; in a pipe, lines are never wrapped."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if _isatty(stream):
        return Console(stderr=stderr, highlight=False, markup=False, emoji=False)
    return Console(file=_TrimmedLines(stream), highlight=False, markup=False, emoji=False, soft_wrap=True,
                   width=PIPE_WIDTH)


def markup(template: str, *values: Any, **named: Any) -> Any:
    """A styled Text from our own markup template, with every value printed verbatim.

    `markup("[bold green]submitted[/] {} to {}", job, backend)`: the template is str.format'ed with
    the values escaped (strings only: numbers format as usual), so `[bold]` or `:100:` in a value
    prints as written.
    """
    from rich.markup import escape
    from rich.text import Text

    def safe(value: Any) -> Any:
        return escape(value) if isinstance(value, str) else value

    text = template.format(*[safe(v) for v in values], **{k: safe(v) for k, v in named.items()})
    return Text.from_markup(text, emoji=False)


def plain(text: str, style: str = "") -> Any:
    """User or provider text as a Text: printed exactly as written, on any console."""
    from rich.text import Text

    return Text(text, style=style)


def is_terminal(stream: Any = None) -> bool:
    """Whether output goes to a person at a terminal (progress bars and colour) or to a pipe or file."""
    return _isatty(stream if stream is not None else sys.stdout)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def count(n: float) -> str:
    """A parameter (or token) count a person reads at a glance: 4.88M, 7.62B, 135M, 812K, 96."""
    n = float(n)
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return f"{n:.0f}"


class _TrimmedLines:
    """A text stream that drops the spaces rich pads table lines with, so a log file has none at line ends."""

    def __init__(self, stream: Any):
        self._stream, self._pending = stream, ""

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        if lines:
            self._stream.write("".join(line.rstrip(" ") + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(self._pending)
            self._pending = ""
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
