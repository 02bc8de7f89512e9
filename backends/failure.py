"""Why a job failed, in one line: the last exception's message in the trainer's output, and where the full log is.

Every backend that reads a failed trainer's output (the local process and docker runtimes, SageMaker's
in-job entry writing /opt/ml/output/failure) builds its reason here, so `ftlaunch status`, `show` and `ls`
say the same kind of thing for every target: never traceback frames joined together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TRACEBACK = "Traceback (most recent call last):"
# Exceptions that only wrap the real one printed above them (torchrun's, once per failed rank).
WRAPPERS = ("ChildFailedError",)
ERROR_PREFIX = "error: "  # how the trainer prints a UserError (containers/trainer/run.py), without a traceback
MAX_CHARS = 500
NOTHING = "exited with an error and printed nothing"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def clean_lines(text: str) -> list[str]:
    """The output's non-blank lines (a progress bar's \\r states each a line), without colour codes."""
    return [line for line in (_ANSI.sub("", raw).rstrip() for raw in text.splitlines()) if line.strip()]


def last_error(lines: Iterable[str]) -> str | None:
    """The last exception's one-line message (`torch.OutOfMemoryError: CUDA out of memory ...`), or the
    trainer's last `error: ...` line (a UserError) with its first detail; None when the output has neither."""
    lines = list(lines)
    found: tuple[int, str] | None = None
    for i, line in enumerate(lines):
        if line.startswith(TRACEBACK):
            exc = next((l for l in lines[i + 1:] if not l[:1].isspace()), None)
            if exc is not None and not exc.startswith(TRACEBACK) and not exc.split(":", 1)[0].endswith(WRAPPERS):
                found = (i, exc.strip())
        elif line.startswith(ERROR_PREFIX):
            detail = next((l.strip() for l in lines[i + 1:i + 2] if l[:1].isspace()
                           and not l.strip().startswith("fix:")), None)
            message = line[len(ERROR_PREFIX):].strip()
            found = (i, f"{message} {detail}" if detail else message)
    return _short(found[1]) if found else None


def reason(lines: Iterable[str], headline: str | None = None, log: str | None = None) -> str:
    """One line for a failed job: `headline: last error`, or `headline; last output: ...` when the output
    holds no error, then `(full log: LOG)`. `headline` is what the runner knows (a signal, max_runtime, an
    exit code); `log` says where the whole output is (a path, or the provider's log location)."""
    lines = [l for l in lines if l.strip()]
    error = last_error(lines)
    if error:
        text = f"{headline}: {error}" if headline else error
    elif lines:
        last = _short(lines[-1].strip())
        text = f"{headline}; last output: {last}" if headline else last
    else:
        text = headline or NOTHING
    return f"{text} (full log: {log})" if log else text


def _short(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS - 3] + "..."
