"""ftlaunch bench on the tiny model: cells are real jobs, the report's numbers are the runs' own,
plots are valid images, a resumed bench reruns nothing, and the HTML renders in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from ftlaunch.bench import run as bench
from ftlaunch import cli
from ftlaunch.core import jobs, spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, tiny_lm):
    import tiny

    folder = tmp_path_factory.mktemp("bench")
    tiny.write_alpaca(folder / "train.jsonl")
    (folder / "spec.yaml").write_text(f"""\
name: tiny-bench
model: {tiny_lm}
task: sft
dataset: {{path: train.jsonl, eval_split: 0.25}}
hyperparameters: {{max_steps: 8, batch_size: 8, max_length: 128}}
bench:
  learning_rates: {{full: 0.003, lora: 0.03, prompt: 0.1}}
  technique_args:
    ia3: {{target_modules: [no_such_module], feedforward_modules: []}}
""")
    home = folder / "home"
    mp = pytest.MonkeyPatch()
    mp.setenv("FTLAUNCH_HOME", str(home))
    args = ["bench", str(folder / "spec.yaml"), "--techniques", "full,lora,prompt,ia3", "--out", str(folder / "out")]
    first = CliRunner().invoke(cli.main_group, args, catch_exceptions=False)
    jobs_after_first = len(jobs.JobStore().list(100))
    state_after_first = json.loads((folder / "out" / "bench.json").read_text())
    second = CliRunner().invoke(cli.main_group, args, catch_exceptions=False)
    yield {"folder": folder, "out": folder / "out", "first": first, "second": second, "args": args,
           "jobs_after_first": jobs_after_first, "jobs_after_second": len(jobs.JobStore().list(100)),
           "state_after_first": state_after_first}
    mp.undo()


def test_cells_run_as_jobs_and_failures_are_reported(bench_run):
    assert bench_run["first"].exit_code == 0, bench_run["first"].output
    state = json.loads((bench_run["out"] / "bench.json").read_text())["cells"]
    assert {k: v["state"] for k, v in state.items()} == {"full": "SUCCEEDED", "lora": "SUCCEEDED",
                                                          "prompt": "SUCCEEDED", "ia3": "FAILED"}
    assert "no_such_module" in state["ia3"]["reason"]
    assert "1 cell(s) did not succeed" in bench_run["first"].output


def test_report_numbers_are_the_runs_own(bench_run):
    out = bench_run["out"]
    md = (out / "report.md").read_text()
    table = {cells[0]: cells for cells in
             (re.split(r"\s*\|\s*", line.strip("| ")) for line in md.splitlines() if line.startswith("| "))}
    for technique in ("full", "lora", "prompt"):
        summary = json.loads((out / "cells" / technique / "summary.json").read_text())
        row = table[technique]
        assert row[2] == f"{summary['eval_loss']:.4f}"
        assert row[4] == f"{100 * summary['trainable_params'] / summary['total_params']:.3g}"
        assert row[3] == f"{summary['trainable_params']:,}"
        # " (busy)" marks a cell that ran with more runnable work than CPUs (a loaded CI machine): a caveat, not
        # another number
        assert row[7].removesuffix(" (busy)") == f"{summary['train_runtime_s']:.1f}"
    assert "| technique | state | eval loss (lower is better) |" in md
    html = (out / "report.html").read_text()
    assert "Recommendation" in html and html.count("data:image/png;base64,") == 4
    losses = {t: json.loads((out / "cells" / t / "summary.json").read_text())["eval_loss"]
              for t in ("full", "lora", "prompt")}
    chosen = re.search(r"\*\*Recommendation:\*\* use (\w+):", md).group(1)
    assert losses[chosen] <= min(losses.values()) * 1.02  # the best, or within 2% of it


def test_plots_are_valid_pngs(bench_run):
    from PIL import Image

    names = {p.stem for p in (bench_run["out"] / "plots").glob("*.png")}
    # the local tiny cells all predict the same cloud cost, so quality is plotted against measured time
    assert names == {"quality_vs_params", "quality_vs_time", "loss_curves", "memory"}
    for name in names:
        path = bench_run["out"] / "plots" / f"{name}.png"
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.size[0] > 300 and len(set(image.convert("L").getdata())) > 10


def test_resume_reruns_nothing_finished(bench_run):
    assert bench_run["second"].exit_code == 0
    assert bench_run["second"].output.count("finished earlier with the same spec, not rerun") == 3
    # only the failed cell is tried again
    assert bench_run["jobs_after_second"] == bench_run["jobs_after_first"] + 1
    again = json.loads((bench_run["out"] / "bench.json").read_text())["cells"]
    for technique in ("full", "lora", "prompt"):
        assert again[technique]["job"] == bench_run["state_after_first"]["cells"][technique]["job"]


def test_html_report_renders_in_headless_chromium(bench_run, tmp_path):
    from PIL import Image

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (scripts/test.sh installs Debian's chromium)")
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1200,1600",
                    f"--screenshot={shot}", (bench_run["out"] / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
        assert rgb.size == (1200, 1600)
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 200  # table text and plots, not a blank page
        # the plots' matplotlib blue appears on the page
        assert any(abs(r - 31) < 25 and abs(g - 119) < 25 and abs(b - 180) < 25 for _, (r, g, b) in colours)


def test_cell_spec_uses_per_technique_settings():
    base = spec.loads("name: b\nmodel: a/b\ndataset: {path: d}\ntechnique: lora\ntechnique_args: {r: 4}\n"
                      "hyperparameters: {learning_rate: 0.001}\n"
                      "bench: {learning_rates: {prompt: 0.1}, technique_args: {prompt: {num_virtual_tokens: 5}}}\n")
    lora = bench.cell_spec(base, bench.Cell(spec.Technique.LORA))
    prompt = bench.cell_spec(base, bench.Cell(spec.Technique.PROMPT))
    full = bench.cell_spec(base, bench.Cell(spec.Technique.FULL))
    assert lora.technique_args == {"r": 4} and lora.hyperparameters.learning_rate == 0.001
    assert prompt.technique_args == {"num_virtual_tokens": 5} and prompt.hyperparameters.learning_rate == 0.1
    assert full.technique_args == {} and full.hyperparameters.learning_rate is None
    assert full.name == "b-full" and full.bench.techniques is None


def test_unsupported_technique_is_refused_with_reason(monkeypatch):
    from ftlaunch.core import techniques

    # every pair is supported today; give the table one refusal to see the bench honour it
    monkeypatch.setitem(techniques.UNSUPPORTED, (techniques.Technique.PREFIX, techniques.Task.DPO), "no reason")
    base = spec.loads("name: b\nmodel: a/b\ndataset: {path: d}\ntask: dpo\n")
    with pytest.raises(spec.errors.UserError) as info:
        bench.cells_for(base, ["lora", "prefix"])
    assert "prefix" in info.value.render() and "no reason" in info.value.render()
    assert techniques.Technique.PREFIX not in [c.technique for c in bench.cells_for(base, None)]


def test_pareto_front():
    rows = [{"cell": "a", "quality": 1.0, "c": 5.0}, {"cell": "b", "quality": 2.0, "c": 1.0},
            {"cell": "c", "quality": 0.5, "c": 9.0}, {"cell": "d", "quality": 1.5, "c": 6.0}]
    assert bench.pareto(rows, higher_is_better=False, cost_key="c") == ["a", "b", "c"]
    assert bench.pareto(rows, higher_is_better=True, cost_key="c") == ["b"]
