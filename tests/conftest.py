"""Shared fixtures: an isolated FTLAUNCH_HOME per test, and tiny models built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tiny  # noqa: E402
# the Docker fixtures live here so that a session has one dockerd, one registry and one job image build
from docker_engine import (dockerd, docker_env, job_base, job_image, local_registry,  # noqa: E402,F401
                           wheelhouse)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def ftlaunch_home(tmp_path, monkeypatch):
    home = tmp_path / "ftlaunch-home"
    monkeypatch.setenv("FTLAUNCH_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    return tiny.build_causal_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> Path:
    return tiny.build_classifier(tmp_path_factory.mktemp("tiny-cls"))


@pytest.fixture
def alpaca_file(tmp_path) -> Path:
    return tiny.write_alpaca(tmp_path / "train.jsonl")


@pytest.fixture
def tiny_spec(tmp_path, tiny_lm, alpaca_file) -> Path:
    """A spec file that fine-tunes the tiny LM with LoRA for a few steps."""
    path = tmp_path / "spec.yaml"
    path.write_text(f"""\
name: tiny-sft
model: {tiny_lm}
technique: lora
task: sft
dataset:
  path: {alpaca_file.name}
  eval_split: 0.25
hyperparameters:
  max_steps: 6
  batch_size: 4
  learning_rate: 0.01
  max_length: 128
""")
    return path


def python_env() -> dict[str, str]:
    """The environment for a subprocess that runs the real ftlaunch command."""
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env
