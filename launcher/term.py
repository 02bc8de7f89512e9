"""The one rich Console every command prints through: plain wide output when stdout is not a terminal."""

from __future__ import annotations

import sys
from typing import Any

PIPE_WIDTH = 140


def console(stderr: bool = False) -> Any:
    """A rich Console; when the stream is not a terminal, wide enough that tables do not wrap mid-word."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else PIPE_WIDTH)
