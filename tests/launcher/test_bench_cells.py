"""The bench without training: which finished cells are reused (digest of the effective spec, --force),
the busy-machine caveat, one definition of trainable %, and plot ticks a person can read."""

from __future__ import annotations

import json

import pytest

from ftlaunch.bench import run as bench, report as bench_report
from ftlaunch.core import manifest, spec

SPEC = "name: b\nmodel: a/b\ndataset: {path: d}\ntechnique: lora\nhyperparameters: {max_steps: 8}\n"


def finished_runner(tmp_path, base, **kwargs) -> tuple[bench.Runner, bench.Cell]:
    """A bench folder whose lora cell finished with `base` (its outputs verified by a real manifest)."""
    cell = bench.Cell(spec.Technique.LORA)
    folder = tmp_path / "out" / "cells" / cell.key
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text("{}")
    manifest.write(folder)
    state = {"spec": base.to_json(), "cells": {cell.key: {"technique": "lora", "cloud": "local", "gpu": None,
                                                          "state": "SUCCEEDED", "job": "j1",
                                                          "digest": bench.cell_digest(base, cell)}}}
    (tmp_path / "out" / bench.STATE_FILE).write_text(json.dumps(state))
    return bench.Runner(base, [cell], tmp_path / "out", **kwargs), cell


def test_a_cell_finished_with_the_same_spec_is_reused(tmp_path):
    runner, cell = finished_runner(tmp_path, spec.loads(SPEC))
    assert runner._rerun_reason(cell) is None


def test_a_changed_spec_reruns_the_cell(tmp_path):
    old = spec.loads(SPEC)
    _, cell = finished_runner(tmp_path, old)
    changed = spec.loads(SPEC, overrides=("hyperparameters.max_steps=12",))
    runner = bench.Runner(changed, [cell], tmp_path / "out")
    why = runner._rerun_reason(cell)
    assert why and "spec changed" in why and bench.cell_digest(changed, cell) in why


def test_force_reruns_a_finished_cell(tmp_path):
    runner, cell = finished_runner(tmp_path, spec.loads(SPEC), force=True)
    assert runner._rerun_reason(cell) == "--force"


def test_a_result_stored_without_a_digest_is_not_trusted(tmp_path):
    base = spec.loads(SPEC)
    runner, cell = finished_runner(tmp_path, base)
    del runner.state["cells"][cell.key]["digest"]
    assert "not recorded" in runner._rerun_reason(cell)


def rows(load: float | None = None) -> list[dict]:
    common = {"state": "SUCCEEDED", "cloud": "local", "gpu": None, "predicted_cost_usd": None, "cpus": 2}
    return [
        {**common, "cell": "full", "technique": "full", "quality": 1.00, "train_runtime_s": 50.0,
         "trainable_params": 100_000_000, "total_params": 100_000_000, "load_average_max": load},
        {**common, "cell": "lora", "technique": "lora", "quality": 1.01, "train_runtime_s": 20.0,
         "trainable_params": 4_884_480, "total_params": 134_515_200 + 4_884_480, "load_average_max": 1.0},
        # stored by a trainer that counted 4-bit weights packed (two per byte): total about half too small
        {**common, "cell": "qlora", "technique": "qlora", "quality": 1.02, "train_runtime_s": 30.0,
         "trainable_params": 4_884_480, "total_params": 134_515_200 // 2 + 4_884_480, "load_average_max": 1.0},
    ]


def test_trainable_percent_has_one_definition():
    table = rows()
    bench._trainable_percent(table)
    by = {r["cell"]: r["trainable_percent"] for r in table}
    assert by["full"] == 100.0
    assert by["lora"] == by["qlora"] == pytest.approx(100 * 4_884_480 / (134_515_200 + 4_884_480))


def test_busy_cells_carry_a_caveat():
    quiet = bench_report.analyse(rows(load=1.5), higher=False)
    assert "Caveat" not in quiet["recommendation"] and quiet["busy"] == []
    busy = bench_report.analyse(rows(load=7.3), higher=False)
    assert busy["busy"] == ["full"]
    assert "Caveat: full ran while the machine had more runnable work than CPUs" in busy["recommendation"]
    assert "--force" in busy["recommendation"]


def test_metric_name_and_direction_head_the_quality_column():
    assert bench_report.columns("eval loss", False)[2] == "eval loss (lower is better)"
    assert bench_report.columns("accuracy", True)[2] == "accuracy (higher is better)"


def test_plots_have_plain_ticks_and_titles_that_match(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figures to read their tick labels
    table = rows()
    for r, quality in zip(table, (5.981, 5.984, 5.986)):  # a narrow range: where 5.98x10^0 ticks appeared
        r["quality"] = quality
        r["losses"] = [(1, 6.2), (2, 6.0), (3, 5.97)]
        r["predicted_peak_gb"], r["peak_memory_gb"] = 1.0, 1.2
    facts = bench_report.analyse(table, higher=False)
    paths, titles = bench_report.draw(table, tmp_path, "eval loss", False, facts["cost_label"])
    assert set(paths) == {"quality_vs_params", "quality_vs_time", "loss_curves", "memory"}
    assert titles["quality_vs_time"] == "eval loss vs training time"
    monkeypatch.setattr(plt, "close", close)
    for fig in figures:
        fig.canvas.draw()
        ax = fig.axes[0]
        labels = [t.get_text() for t in ax.yaxis.get_ticklabels(which="both") if t.get_text()]
        assert labels, ax.get_title()
        assert not any("times" in text or "^" in text or "e+" in text for text in labels), (ax.get_title(), labels)
        plt.close(fig)
