"""Plain-text results of a finished job for the terminal: loss curve, final metrics, sample answers."""

from __future__ import annotations

import json
from pathlib import Path

HEIGHT = 8
WIDTH = 60


def results(folder: Path) -> str:
    """A loss chart from metrics.jsonl and the headline numbers from summary.json."""
    folder = Path(folder)
    lines: list[str] = []
    losses = [(r["step"], r["loss"]) for r in read_metrics(folder / "metrics.jsonl") if "loss" in r]
    if losses:
        lines += ["training loss by step:", *chart([v for _, v in losses]),
                  f"        step {losses[0][0]} .. {losses[-1][0]}"]
    summary_path = folder / "summary.json"
    if summary_path.exists():
        s = json.loads(summary_path.read_text())
        headline = [f"{k} {s[k]:.4g}" for k in ("final_train_loss", "eval_loss", "perplexity", "accuracy",
                                                 "macro_f1", "reward_accuracy", "mean_reward") if s.get(k) is not None]
        if headline:
            lines.append("results: " + ", ".join(headline))
        if s.get("trainable_params") is not None:
            lines.append(f"trainable parameters: {s['trainable_params']:,} of {s['total_params']:,} "
                         f"({s.get('trainable_percent', 0):.3f}%)")
        if s.get("train_runtime_s") is not None:
            lines.append(f"training time: {s['train_runtime_s']:.1f} s; peak memory "
                         f"{s.get('peak_memory_bytes', 0) / 1e9:.2f} GB")
        for sample in s.get("samples", []):
            lines += [f"prompt: {sample['prompt']!r}", f"  before: {sample['before']!r}",
                      f"  after:  {sample['after']!r}"]
    return "\n".join(lines)


def read_metrics(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def chart(values: list[float], height: int = HEIGHT, width: int = WIDTH) -> list[str]:
    """A small text chart of values (resampled to width columns), highest value at the top."""
    if not values:
        return []
    if len(values) > width:
        step = len(values) / width
        values = [values[int(i * step)] for i in range(width)]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    levels = [round((v - lo) / span * (height - 1)) for v in values]
    rows = []
    for level in range(height - 1, -1, -1):
        label = f"{lo + span * level / (height - 1):7.3f} "
        rows.append(label + "".join("•" if l == level else " " for l in levels))
    return rows
