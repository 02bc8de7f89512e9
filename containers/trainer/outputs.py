"""The trainer's outputs: metrics.jsonl per logging step, summary.json, weights/, and manifest.json last."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from ftlaunch.core import manifest

SPARK = "▁▂▃▄▅▆▇█"


def peak_memory_bytes() -> int:
    """Peak accelerator memory when training on a GPU, else the process's peak resident memory."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return int(torch.cuda.max_memory_allocated())
    except ImportError:
        pass
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss_kb * 1024)


def sparkline(values: list[float], width: int = 40) -> str:
    values = values[-width:]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))] for v in values)


def make_metrics_callback(path: Path, total_steps_hint: int | None = None, is_main: bool = True) -> Any:
    """A transformers TrainerCallback that appends one JSON line per log event and prints a loss line."""
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def __init__(self) -> None:
            self.path = Path(path)
            self.losses: list[float] = []
            self.last_time = time.monotonic()
            self.last_tokens: float | None = None
            self.tokens_seen = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.last_time = time.monotonic()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not is_main or not logs:
                return
            now = time.monotonic()
            row: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
            tokens = logs.get("num_tokens", getattr(state, "num_input_tokens_seen", None))
            if tokens:
                self.tokens_seen = float(tokens)
                if self.last_tokens is not None and now > self.last_time and tokens > self.last_tokens:
                    row["tokens_per_s"] = round((tokens - self.last_tokens) / (now - self.last_time), 2)
                self.last_tokens = float(tokens)
                row["tokens"] = int(tokens)
            self.last_time = now
            for key, value in logs.items():
                if key in ("epoch", "num_tokens"):
                    continue
                name = "learning_rate" if key == "learning_rate" else key
                row[name] = value
            row["memory_bytes"] = peak_memory_bytes()
            row["time"] = time.time()
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            if "loss" in logs:
                self.losses.append(float(logs["loss"]))
                total = state.max_steps or total_steps_hint or "?"
                speed = f"  {row['tokens_per_s']:.0f} tok/s" if "tokens_per_s" in row else ""
                print(f"step {state.global_step:>4}/{total}  loss {logs['loss']:.4f}  "
                      f"{sparkline(self.losses)}{speed}", flush=True)
            elif "eval_loss" in logs:
                print(f"step {state.global_step:>4}  eval_loss {logs['eval_loss']:.4f}", flush=True)

    return MetricsCallback()


def save_weights(model: Any, tokenizer: Any, folder: Path, merge: bool = False) -> None:
    """safetensors weights (the adapter for peft models, the full model otherwise) and the tokenizer."""
    folder = Path(folder)
    weights = folder / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(weights, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(weights)
    if merge and hasattr(model, "merge_and_unload"):
        merged = model.merge_and_unload()
        merged.save_pretrained(folder / "merged", safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder / "merged")


def write_summary(folder: Path, summary: dict[str, Any]) -> None:
    manifest.atomic_write_text(Path(folder) / "summary.json", json.dumps(summary, indent=2, default=_plain))


def finish(folder: Path) -> dict[str, Any]:
    """Writes manifest.json last: the outputs are complete once it exists."""
    return manifest.write(Path(folder))


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def log(message: str) -> None:
    print(f"[ftlaunch] {message}", file=sys.stdout, flush=True)


def on_terminal() -> bool:
    """Whether the job's stdout is a terminal (progress bars welcome) rather than a log file or pipe."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
