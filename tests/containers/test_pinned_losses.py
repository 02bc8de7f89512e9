"""The trainer's exact losses, pinned (torchtune's habit): fixed-seed runs of the real trainer on the tiny models
compare every logged training loss (and rl's reward), step by step, and the final eval loss with the values
recorded in pinned_losses.json. The "loss goes down" tests (test_trainer_grid.py) say the trainer learns; these
say it still computes exactly what it computed, so a change to seeding, data order, batching, masking, a
technique's set-up or a default hyperparameter cannot pass unnoticed.

Measured on CPU with torch 2.13, transformers 5.17, trl 1.16, peft 0.21 (2 busy cores): three runs of this file in
three processes, and the same job run twice in one process, gave bit-identical losses for every case, and so did
cpt, reward, rl and the adapter, prefix, DoRA and IA3 techniques. Only the number of intra-op threads moved a
value: 1 against 2 threads changed one classification loss by 1.5e-8 (relative 8e-8), the order of a sum. So the
tests run torch with one thread (the same order on any machine, and faster on busy cores) and compare with
rel 1e-4 / abs 1e-6: room for another CPU's kernels, nothing like the percent-level moves a changed seed,
learning rate or data order makes. On a GPU the low bits differ, so the file skips there.

After a deliberate change to what the trainer computes (or a torch, transformers, trl or peft upgrade), re-record:

    FTLAUNCH_RECORD_LOSSES=1 .venv/bin/python -m pytest -q tests/containers/test_pinned_losses.py

and commit pinned_losses.json with the change that moved it, saying why in the commit message.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import pytest
import taskdata

from ftlaunch.core import spec
from ftlaunch.containers.trainer import contract, run

pytestmark = pytest.mark.slow

PINNED = Path(__file__).with_name("pinned_losses.json")
RECORD = os.environ.get("FTLAUNCH_RECORD_LOSSES") == "1"
RECORD_COMMAND = "FTLAUNCH_RECORD_LOSSES=1 .venv/bin/python -m pytest -q tests/containers/test_pinned_losses.py"
REL, ABS = 1e-4, 1e-6
LIBRARIES = ("torch", "transformers", "trl", "peft")

# case -> (technique, task, max_steps, learning rate, batch size); learning rates low enough that no loss
# collapses below the absolute tolerance, where a pin would say nothing
CASES = {
    "sft-lora": ("lora", "sft", 6, 0.02, 8),
    "sft-full": ("full", "sft", 6, 0.003, 8),
    "classification-lora": ("lora", "classification", 6, 0.005, 8),
    "dpo-lora": ("lora", "dpo", 6, 0.002, 8),
    "cpt-lora": ("lora", "cpt", 6, 0.02, 8),
    "reward-lora": ("lora", "reward", 6, 0.001, 8),
    "rl-lora": ("lora", "rl", 3, 0.06, 16),  # sampled completions: pins the generation's seeding too
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """torch with one intra-op thread for this file: the same summation order on any machine."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("the pinned losses were recorded on CPU; a GPU computes different low bits")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("case", list(CASES))
def test_losses_match_the_recorded_ones(case, tiny_lm, tiny_classifier, task_data, tmp_path):
    got = observe(case, tiny_lm, tiny_classifier, task_data, tmp_path)
    pinned = json.loads(PINNED.read_text()) if PINNED.exists() else {"recorded_with": {}, "cases": {}}
    if RECORD:
        pinned["recorded_with"] = versions()
        pinned["cases"][case] = got
        PINNED.write_text(json.dumps(pinned, indent=2, sort_keys=True) + "\n")
    want = pinned["cases"].get(case)
    assert want is not None, f"no losses recorded for {case} in {PINNED.name}; record them with: {RECORD_COMMAND}"
    problems = differences(want, got)
    assert not problems, failure_message(case, problems, pinned["recorded_with"])


def test_a_job_repeats_exactly_in_one_process(tiny_lm, tiny_classifier, task_data, tmp_path):
    """The trainer seeds everything itself (weights of the new head, LoRA, dropout, data order): the process's
    random state before a run does not reach its losses."""
    import numpy
    import torch

    first = observe("classification-lora", tiny_lm, tiny_classifier, task_data, tmp_path / "first")
    torch.manual_seed(1234)
    random.seed(1234)
    numpy.random.seed(1234)
    second = observe("classification-lora", tiny_lm, tiny_classifier, task_data, tmp_path / "second")
    assert second == first


def observe(case, tiny_lm, tiny_classifier, task_data, folder: Path) -> dict:
    """Runs the case's job and returns what is pinned: {"loss": {step: loss}, "eval_loss": x} (rl: "reward" too)."""
    technique, task, steps, lr, batch = CASES[case]
    model = tiny_classifier if task == "classification" else tiny_lm
    s = spec.loads(taskdata.spec_text(model, technique, task, task_data(task), steps, lr, batch=batch))
    out = folder / "out"
    summary = run.train(s, contract.Paths(str(out), str(folder / "ckpt"), None, "local"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    pinned: dict = {"loss": {str(r["step"]): r["loss"] for r in rows if "loss" in r}}
    if task == "rl":
        pinned["reward"] = {str(r["step"]): r["reward"] for r in rows if "reward" in r}
    else:
        pinned["eval_loss"] = summary["eval_loss"]
    assert len(pinned["loss"]) == steps, rows  # one logged loss per step (logging_steps defaults to 1)
    return pinned


def differences(want: dict, got: dict) -> list[str]:
    """One line per value that moved beyond the tolerance: what, which step, expected and got."""
    problems = []
    for key in sorted(want.keys() | got.keys()):
        expected, actual = want.get(key), got.get(key)
        if not isinstance(expected, dict) or not isinstance(actual, dict):
            if not _close(expected, actual):
                problems.append(f"{key}: expected {expected!r}, got {actual!r}")
            continue
        for step in sorted(expected.keys() | actual.keys(), key=int):
            if not _close(expected.get(step), actual.get(step)):
                problems.append(f"{key} at step {step}: expected {expected.get(step)!r}, got {actual.get(step)!r}")
    return problems


def failure_message(case: str, problems: list[str], recorded_with: dict) -> str:
    now = versions()
    moved = [f"{name} {recorded_with.get(name)} -> {now[name]}" for name in LIBRARIES
             if recorded_with.get(name) != now[name]]
    return "\n".join([
        f"{case}: the trainer no longer computes the recorded losses (rel {REL:g}, abs {ABS:g}):",
        *(f"  {p}" for p in problems),
        ("libraries changed since recording: " + ", ".join(moved)) if moved else
        "same library versions as when recorded, so the trainer's computation changed.",
        "If the change is deliberate (a trainer change or a library upgrade), re-record and commit "
        f"{PINNED.name} with it: {RECORD_COMMAND}",
    ])


def versions() -> dict[str, str]:
    import importlib.metadata

    return {name: importlib.metadata.version(name) for name in LIBRARIES}


def _close(expected, actual) -> bool:
    if expected is None or actual is None:
        return expected is None and actual is None
    return math.isclose(actual, expected, rel_tol=REL, abs_tol=ABS)
