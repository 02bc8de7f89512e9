"""Fixtures for the trainer's tests: a data folder per task, shared by every technique."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import taskdata  # noqa: E402


@pytest.fixture(scope="session")
def task_data(tmp_path_factory):
    """task -> data file (written once per session)."""
    made: dict[str, Path] = {}

    def get(task: str) -> Path:
        if task not in made:
            made[task] = taskdata.write_task_data(tmp_path_factory.mktemp(f"data-{task}"), task)
        return made[task]

    return get
