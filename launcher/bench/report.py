"""The bench report: a Markdown file and one self-contained HTML file with PNG plots (matplotlib).

Every number comes from the rows `bench.gather` read out of the cells' summary.json and metrics.jsonl
(and the planner's recorded predictions); nothing here measures or estimates anything itself.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from ftlaunch.bench import run as bench
from ftlaunch.core.techniques import Task

# Which technique is usually recommended per use case, and which task measures each row.
USE_CASE_METHODS = [
    ("Text Classification", "Full FT / PEFT", Task.CLASSIFICATION),
    ("Instruction Following", "Instruction FT / LoRA", Task.SFT),
    ("Conversational Agents", "RLHF / Supervised FT", Task.RL),
    ("Multimodal Applications", "Adapter / PEFT", None),
]
# relative margin within which a cheaper technique counts as "as good" as the best one
AS_GOOD = 0.02
# a cell whose 1-minute load average exceeded the CPU count ran beside other work: its time is inflated
BUSY_LOAD_PER_CPU = 1.0


def write(runner: bench.Runner, rows: list[dict[str, Any]]) -> dict[str, Path]:
    """Writes report.md, report.html and plots/*.png into the bench folder; returns their paths."""
    out = runner.out
    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    key, higher, label = bench.QUALITY[runner.base.task]
    facts = analyse(rows, higher)
    plots, titles = draw(rows, plots_dir, label, higher, facts["cost_label"])
    md = markdown(runner, rows, facts, label, higher, {k: p.relative_to(out).as_posix() for k, p in plots.items()},
                  titles)
    (out / "report.md").write_text(md, encoding="utf-8")
    (out / "report.html").write_text(to_html(runner, rows, facts, label, higher, plots, titles), encoding="utf-8")
    return {"markdown": out / "report.md", "html": out / "report.html", **plots}


# ---------------------------------------------------------------------- analysis

def analyse(rows: list[dict[str, Any]], higher: bool) -> dict[str, Any]:
    """The Pareto front and a one-line recommendation, from the rows' numbers.

    Cost is the predicted cost on the cheapest cloud offer that fits; where every cell predicts the same
    cost (small models, where start-up dominates), measured training time decides instead."""
    done = [r for r in rows if r.get("quality") is not None]
    costs = {tuple(r["predicted_cost_usd"]) for r in done if r.get("predicted_cost_usd")}
    by_cost = len(costs) > 1 and all(r.get("predicted_cost_usd") for r in done)
    cost_key = "cost_for_pareto"
    for r in rows:
        r[cost_key] = r["predicted_cost_usd"][1] if by_cost and r.get("predicted_cost_usd") else r.get("train_runtime_s")
    cost_label = "predicted cost" if by_cost else "training time"
    front = bench.pareto(rows, higher, cost_key)
    if not done:
        return {"front": [], "recommendation": "no cell finished, so there is nothing to recommend.",
                "cost_label": cost_label, "best": None}
    best = max(done, key=lambda r: r["quality"]) if higher else min(done, key=lambda r: r["quality"])
    margin = abs(best["quality"]) * AS_GOOD
    good = [r for r in done if (r["quality"] >= best["quality"] - margin if higher
                                else r["quality"] <= best["quality"] + margin)]
    cheapest = min(good, key=lambda r: (r[cost_key] if r[cost_key] is not None else math.inf,
                                        r.get("trainable_params") or 0))
    same_cost = "" if by_cost or not costs else \
        f" Every cell predicts the same cloud cost ({_cost(best, 'predicted cost')}, mostly start-up), so training time decides."
    if cheapest is best:
        text = (f"use {best['technique']}: the best quality ({_q(best['quality'])}) and the lowest "
                f"{cost_label} among techniques within {AS_GOOD:.0%} of it ({_cost(best, cost_label)}).")
    else:
        text = (f"use {cheapest['technique']}: within {AS_GOOD:.0%} of the best quality ({_q(cheapest['quality'])} vs "
                f"{_q(best['quality'])} for {best['technique']}) at {_cost(cheapest, cost_label)} instead of "
                f"{_cost(best, cost_label)}, training {_pct(cheapest)} of the parameters.")
    busy = busy_cells(rows)
    caveat = "" if not busy else (
        f" Caveat: {', '.join(busy)} ran while the machine had more runnable work than CPUs (load average above "
        f"the CPU count), so {'their' if len(busy) > 1 else 'its'} training time is inflated and the choice by "
        f"{cost_label} may not hold; rerun with --force on an idle machine to confirm.")
    return {"front": front, "recommendation": text + same_cost + caveat, "cost_label": cost_label,
            "best": best["cell"], "choice": cheapest["cell"], "busy": busy}


def busy_cells(rows: list[dict[str, Any]]) -> list[str]:
    """Cells whose recorded peak 1-minute load average exceeded the machine's CPU count."""
    return [r["cell"] for r in rows if r.get("load_average_max") and r.get("cpus")
            and r["load_average_max"] > BUSY_LOAD_PER_CPU * r["cpus"]]


def direction(higher: bool) -> str:
    return "higher is better" if higher else "lower is better"


def metric(label: str, higher: bool) -> str:
    """The quality metric's name with its direction, e.g. "eval loss (lower is better)"."""
    return f"{label} ({direction(higher)})"


def _q(value: float) -> str:
    return f"{value:.4g}"


def _pct(row: dict[str, Any]) -> str:
    p = row.get("trainable_percent")
    return "?" if p is None else f"{p:.3g}%"


def _cost(row: dict[str, Any], label: str) -> str:
    if label == "predicted cost" and row.get("predicted_cost_usd"):
        lo, hi = row["predicted_cost_usd"]
        return f"${lo:.2f}-${hi:.2f}"
    return f"{row['train_runtime_s']:.0f} s" if row.get("train_runtime_s") is not None else "?"


# ---------------------------------------------------------------------- plots

def draw(rows: list[dict[str, Any]], folder: Path, label: str, higher: bool,
         cost_label: str) -> tuple[dict[str, Path], dict[str, str]]:
    """The plots as PNG files, and each plot's title (what it shows), by plot name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    done = [r for r in rows if r.get("quality") is not None]
    paths: dict[str, Path] = {}
    titles: dict[str, str] = {}
    plain = ticker.FuncFormatter(lambda value, _: f"{value:.4g}")  # 5.98, never 5.98x10^0

    def save(fig: Any, name: str) -> None:
        ax = fig.axes[0]
        titles[name] = ax.get_title()
        ax.yaxis.set_major_formatter(plain)  # quality, loss and GB read as plain numbers
        if ax.get_yscale() == "log":
            ax.yaxis.set_minor_formatter(plain)
        if name.startswith("quality_vs_") and ax.get_xscale() != "log":
            ax.xaxis.set_major_formatter(plain)
        fig.tight_layout()
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths[name] = path

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in done:
        if r.get("trainable_params"):
            ax.scatter(r["trainable_params"], r["quality"], s=40)
            ax.annotate(r["technique"], (r["trainable_params"], r["quality"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(metric(label, higher))
    ax.set_title(f"{label} vs trainable parameters")
    ax.grid(True, alpha=0.3)
    save(fig, "quality_vs_params")

    fig, ax = plt.subplots(figsize=(6, 4))
    with_cost = [r for r in done if r.get("cost_for_pareto") is not None]
    xlabel = "predicted cost on the cheapest fitting cloud offer (USD)" if cost_label == "predicted cost" \
        else "measured training time (s)"
    for r in with_cost:
        ax.scatter(r["cost_for_pareto"], r["quality"], s=40)
        ax.annotate(r["technique"], (r["cost_for_pareto"], r["quality"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric(label, higher))
    ax.set_title(f"{label} vs {cost_label}")
    ax.grid(True, alpha=0.3)
    # named by what it shows: predicted cost, or (where every cell costs the same) measured training time
    save(fig, "quality_vs_cost" if cost_label == "predicted cost" else "quality_vs_time")

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in done:
        if r.get("losses"):
            steps, losses = zip(*r["losses"])
            ax.plot(steps, losses, label=r["technique"], linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title("training loss")
    if any(r.get("losses") for r in done):
        ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    save(fig, "loss_curves")

    fig, ax = plt.subplots(figsize=(6, 4))
    names = [r["technique"] for r in done]
    xs = range(len(done))
    ax.bar([x - 0.2 for x in xs], [r.get("predicted_peak_gb") or 0 for r in done], width=0.4, label="predicted")
    ax.bar([x + 0.2 for x in xs], [r.get("peak_memory_gb") or 0 for r in done], width=0.4, label="measured")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=30, fontsize=8)
    ax.set_ylabel("peak memory (GB)")
    ax.set_title("peak memory: predicted vs measured")
    ax.legend(fontsize=8)
    save(fig, "memory")
    return paths, titles


# ---------------------------------------------------------------------- text

COLUMNS = ("technique", "state", "quality", "trainable", "trainable %", "peak GB predicted", "peak GB measured",
           "train time s", "tokens/s", "predicted $", "actual $", "weights MB")


def columns(label: str, higher: bool) -> tuple[str, ...]:
    """The table's header, with the quality column named by its metric and direction."""
    return tuple(metric(label, higher) if c == "quality" else c for c in COLUMNS)


def terminal_table(label: str, higher: bool, rows: list[dict[str, Any]]) -> Any:
    """The table `ftlaunch bench` prints: a rich Table whose cells (reasons included) print as written."""
    from rich.table import Table

    table = Table(box=None)
    for col in columns(label, higher):
        table.add_column(col)
    for row in table_rows(rows):
        table.add_row(*row)
    return table


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        cost = r.get("predicted_cost_usd")
        out.append([
            r["technique"] + ("" if r["cloud"] == "local" else f" ({r['cloud']}{' ' + r['gpu'] if r['gpu'] else ''})"),
            r["state"] if r["state"] == "SUCCEEDED" else f"{r['state']}: {(r.get('reason') or '').splitlines()[0][:80]}",
            _fmt(r.get("quality"), "{:.4f}"),
            _fmt(r.get("trainable_params"), "{:,}"),
            _fmt(r.get("trainable_percent"), "{:.3g}"),
            _fmt(r.get("predicted_peak_gb"), "{:.2f}"),
            _fmt(r.get("peak_memory_gb"), "{:.2f}"),
            _fmt(r.get("train_runtime_s"), "{:.1f}") + (" (busy)" if r["cell"] in busy_cells([r]) else ""),
            _fmt(r.get("tokens_per_s"), "{:.0f}"),
            f"{cost[0]:.2f}-{cost[1]:.2f}" if cost else "-",
            _fmt(r.get("actual_cost_usd"), "{:.2f}"),
            _fmt((r.get("weights_bytes") or 0) / 1e6 if r.get("weights_bytes") else None, "{:.2f}"),
        ])
    return out


def _fmt(value: Any, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def use_case_rows(runner: bench.Runner, facts: dict[str, Any], rows: list[dict[str, Any]]) -> list[list[str]]:
    """Use case, the usually recommended technique, and this bench's choice in the row its task measures."""
    by_cell = {r["cell"]: r for r in rows}
    out = []
    for use_case, seed_method, task in USE_CASE_METHODS:
        measured = "not measured by this bench"
        if task is runner.base.task and facts.get("choice"):
            choice = by_cell[facts["choice"]]
            measured = f"{choice['technique']} ({_q(choice['quality'])}, {_pct(choice)} trainable)"
        out.append([use_case, seed_method, measured])
    return out


def markdown(runner: bench.Runner, rows: list[dict[str, Any]], facts: dict[str, Any], label: str, higher: bool,
             plots: dict[str, str], titles: dict[str, str] | None = None) -> str:
    base = runner.base
    lines = [f"# Bench: {base.name}", "",
             f"{base.task.value} on `{base.model}`, {len(rows)} cells. Quality is **{label}** "
             f"({'higher' if higher else 'lower'} is better) on the held-out evaluation set.", "",
             f"**Recommendation:** {facts['recommendation']}", "",
             f"**Pareto front** (quality vs {facts['cost_label']}): {', '.join(facts['front']) or '-'}", "",
             "| " + " | ".join(columns(label, higher)) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in table_rows(rows)]
    lines += ["", "Memory is in GB (10^9 bytes) throughout. "
              "Peak memory predicted is the estimator's GPU figure for this job; measured is the job's own peak "
              "(CUDA allocator on a GPU, process resident memory on a CPU). Predicted $ is the cheapest cloud offer "
              "that fits, from the planner; actual $ is what the run cost. Trainable % is trainable parameters "
              "over all parameters of the trained model, counted unquantised (so LoRA and QLoRA agree)."
              + (" (busy): the machine's load average exceeded its CPU count while the cell ran." if facts.get("busy")
                 else ""), "",
              "## Use case → technique (what is usually recommended, and what this bench measured)", "",
              "| use case | usually recommended | measured here |", "|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in use_case_rows(runner, facts, rows)]
    lines += ["", "## Plots", ""]
    lines += [f"![{(titles or {}).get(name, name)}]({path})" for name, path in plots.items()]
    lines.append("")
    return "\n".join(lines)


def to_html(runner: bench.Runner, rows: list[dict[str, Any]], facts: dict[str, Any], label: str, higher: bool,
            plots: dict[str, Path], titles: dict[str, str] | None = None) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in columns(label, higher))
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in table_rows(rows))
    seed = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                   for row in use_case_rows(runner, facts, rows))
    images = "".join(
        f'<figure><img alt="{e(name)}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'
        f"<figcaption>{e((titles or {}).get(name, name.replace('_', ' ')))}</figcaption></figure>"
        for name, path in plots.items())
    base = runner.base
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bench: {e(base.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.5rem; text-align: right; }}
th {{ background: #f0f0f0; }} td:first-child, td:nth-child(2) {{ text-align: left; }}
#use-cases td, #use-cases th {{ text-align: left; }}
figure {{ display: inline-block; margin: 0.5rem; }} img {{ width: 520px; border: 1px solid #ddd; }}
.rec {{ background: #eef6ee; padding: 0.6rem; border-left: 4px solid #3a3; }}
</style></head><body>
<h1>Bench: {e(base.name)}</h1>
<p>{e(base.task.value)} on <code>{e(base.model)}</code>, {len(rows)} cells. Quality is <b>{e(label)}</b>
({e(direction(higher))}) on the held-out evaluation set.</p>
<p class="rec"><b>Recommendation:</b> {e(facts['recommendation'])}</p>
<p><b>Pareto front</b> (quality vs {e(facts['cost_label'])}): {e(', '.join(facts['front']) or '-')}</p>
<table id="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Use case &rarr; technique</h2>
<table id="use-cases"><thead><tr><th>use case</th><th>usually recommended</th><th>measured here</th></tr></thead>
<tbody>{seed}</tbody></table>
<h2>Plots</h2>
{images}
</body></html>
"""
