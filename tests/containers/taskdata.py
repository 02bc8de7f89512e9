"""Small data files for every task, written the way users write theirs, and specs that train on them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import tiny

CITIES = [("Paris", "France"), ("Tokyo", "Japan"), ("Berlin", "Germany"), ("Madrid", "Spain"),
          ("Rome", "Italy"), ("Oslo", "Norway"), ("Vienna", "Austria"), ("Lisbon", "Portugal")]

# a reward a tiny policy can learn in a few steps: the share of vowels in the completion
REWARD_PY = '''
def vowels(completions, **kwargs):
    def text(c):
        return c if isinstance(c, str) else c[-1]["content"]
    return [sum(ch in "aeiou" for ch in text(c)) / max(1, len(text(c))) for c in completions]
'''


def write_text(path: Path, n: int = 64) -> Path:
    lines = [f"Last spring I flew to {c} in {k} for a week and loved the food." for c, k in CITIES] + tiny.CORPUS[:8]
    path.write_text("\n".join(lines[i % len(lines)] for i in range(n)) + "\n")
    return path


def write_classification(path: Path, n: int = 64) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for i in range(n):
            city = CITIES[i % len(CITIES)][0]
            if i % 2:
                w.writerow([f"great food in {city}, great review", "positive"])
            else:
                w.writerow([f"awful trip to {city}, awful review", "negative"])
    return path


def write_preference(path: Path, n: int = 48) -> Path:
    rows = []
    for i in range(n):
        city, country = CITIES[i % len(CITIES)]
        rows.append({"prompt": f"Where is {city}?", "chosen": json.dumps({"city": city, "country": country}),
                     "rejected": "The quick brown fox jumps over the lazy dog."})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_prompts(path: Path, n: int = 32) -> Path:
    rows = [{"prompt": f"Where is {CITIES[i % len(CITIES)][0]}?"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_reward_function(path: Path) -> Path:
    path.write_text(REWARD_PY)
    return path


# (data writer, file name, spec lines) per task; learning rates high enough for a tiny model to move
TASKS = {
    "sft": (tiny.write_alpaca, "train.jsonl", ""),
    "cpt": (write_text, "corpus.txt", ""),
    "classification": (write_classification, "reviews.csv", "  columns: {text: review, label: sentiment}\n"),
    "reward": (write_preference, "pairs.jsonl", ""),
    "dpo": (write_preference, "pairs.jsonl", ""),
    "rl": (write_prompts, "prompts.jsonl", ""),
}


def spec_text(model: Path, technique: str, task: str, data: Path, steps: int, lr: float, batch: int = 8,
              extra: str = "", eval_split: float = 0.25) -> str:
    columns = TASKS[task][2]
    task_args = ""
    if task == "rl":
        task_args = (f"task_args: {{reward_function: '{data.parent / 'reward.py'}:vowels', num_generations: 8, "
                     f"max_completion_length: 8, temperature: 1.0}}\n")
    return f"""\
name: t
model: {model}
technique: {technique}
task: {task}
{task_args}dataset:
  path: {data}
  eval_split: {eval_split}
{columns}hyperparameters: {{max_steps: {steps}, batch_size: {batch}, learning_rate: {lr}, max_length: 128, warmup_ratio: 0.0, lr_scheduler: constant}}
{extra}"""


def write_task_data(folder: Path, task: str) -> Path:
    writer, name, _ = TASKS[task]
    if task == "rl":
        write_reward_function(folder / "reward.py")
    return writer(folder / name)
