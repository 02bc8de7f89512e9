"""Where ftlaunch keeps its own files: $FTLAUNCH_HOME (job records, config.yaml, calibration), read by the
launcher and the backends alike, so neither has to import the other for it."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """ftlaunch's own folder: $FTLAUNCH_HOME, else ~/.ftlaunch."""
    return Path(os.environ.get("FTLAUNCH_HOME") or Path.home() / ".ftlaunch").expanduser()
