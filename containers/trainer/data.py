"""Loads a spec's dataset (local files, hub names, s3/gs/az URIs) and shapes it for the task.

Canonical columns per format, after the spec's `columns` mapping renames the file's own:
- alpaca: instruction, input (optional), output
- messages: messages (a list of {role, content}; the last is the assistant's answer)
- prompt_completion: prompt, completion
- text: text (continued pretraining)
- classification: text, label
- preference: prompt (optional), chosen, rejected
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftlaunch import errors
from ftlaunch.techniques import ALPACA_TEMPLATE, FORMAT_COLUMNS

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text",
            ".tsv": "csv"}


def load_split(path: str, split: str = "train", data_dir: str | None = None) -> Any:
    """A datasets.Dataset from a local file or folder, a hub name, or a cloud URI."""
    import datasets

    if data_dir and not Path(path).exists() and "://" in path:
        # the backend already copied the input channel here (SageMaker, Azure ML)
        path = str(Path(data_dir) / Path(path.split("://", 1)[1]).name)
    suffix = Path(path.split("?")[0]).suffix.lower()
    local = Path(path)
    if local.is_dir():
        files = sorted(p for p in local.iterdir() if p.suffix.lower() in BUILDERS)
        if not files:
            raise errors.UserError(f"dataset folder {path} has no .jsonl, .json, .csv, .parquet or .txt files.")
        _not_empty(files)
        return _load(datasets, BUILDERS[files[0].suffix.lower()], path, data_files=[str(f) for f in files],
                     split="train", **_builder_kwargs(files[0].suffix.lower()))
    if suffix in BUILDERS:
        if local.exists():
            _not_empty([local])
        return _load(datasets, BUILDERS[suffix], path, data_files=path, split="train", **_builder_kwargs(suffix))
    return _load(datasets, path, path, split=split)


def _not_empty(files: list[Path]) -> None:
    empty = [str(f) for f in files if f.stat().st_size == 0]
    if empty:
        raise errors.UserError(f"dataset file {empty[0]} is empty.", hint="point dataset.path at a file with rows")


def _load(datasets: Any, builder: str, path: str, **kwargs: Any) -> Any:
    """datasets.load_dataset, with a reading failure of the user's file turned into one clear message."""
    try:
        return datasets.load_dataset(builder, **kwargs)
    except (ValueError, KeyError, StopIteration, datasets.exceptions.DatasetGenerationError) as exc:
        raise errors.UserError(f"could not read dataset {path}: {exc.__class__.__name__}: {exc}".rstrip(": "),
                               hint="run `ftlaunch validate SPEC` for row-numbered problems") from None


def _builder_kwargs(suffix: str) -> dict[str, Any]:
    return {"delimiter": "\t"} if suffix == ".tsv" else {}


def rename_columns(ds: Any, mapping: dict[str, str]) -> Any:
    """Applies the spec's `columns: {canonical: column in file}` mapping."""
    present = set(ds.column_names)
    renames = {src: dst for dst, src in mapping.items() if src in present and src != dst}
    missing = [src for src in mapping.values() if src not in present]
    if missing:
        raise errors.UserError(f"dataset.columns names columns that are not in the data: {', '.join(missing)}.",
                               hint=f"the data has: {', '.join(sorted(present))}")
    return ds.rename_columns(renames) if renames else ds


def detect_format(columns: list[str], declared: str) -> str:
    if declared != "auto":
        want = FORMAT_COLUMNS[declared]
        missing = [c for c in want if c not in columns]
        if missing:
            raise errors.UserError(
                f"dataset format '{declared}' needs columns {', '.join(want)}; missing {', '.join(missing)}.",
                hint=f"map your columns with dataset.columns (the data has: {', '.join(columns)})")
        return declared
    for name in ("messages", "preference", "alpaca", "prompt_completion", "classification", "text"):
        if all(c in columns for c in FORMAT_COLUMNS[name]):
            return name
    raise errors.UserError(f"cannot tell the dataset's format from its columns ({', '.join(columns)}).",
                           hint="set dataset.format and map columns with dataset.columns")


def to_prompt_completion(ds: Any, fmt: str, chat: bool) -> Any:
    """SFT rows as prompt/completion, conversational when the tokenizer has a chat template, so that
    trl computes the loss on the completion (the response) only."""
    if fmt == "prompt_completion":
        return ds.select_columns(["prompt", "completion"])
    if fmt == "alpaca":
        def alpaca(row: dict) -> dict:
            instruction = row["instruction"]
            if row.get("input"):
                instruction = f"{instruction}\n\n{row['input']}"
            if chat:
                return {"prompt": [{"role": "user", "content": instruction}],
                        "completion": [{"role": "assistant", "content": row["output"]}]}
            return {"prompt": ALPACA_TEMPLATE.format(instruction=instruction), "completion": row["output"]}
        return ds.map(alpaca, remove_columns=ds.column_names)
    if fmt == "messages":
        if not chat:
            raise errors.UserError("chat (messages) data needs a chat template, and this tokenizer has none.",
                                   hint="set task_args.chat_template to a Jinja chat template")

        def split_last(row: dict) -> dict:
            messages = row["messages"]
            if not messages or messages[-1].get("role") != "assistant":
                raise errors.UserError("every messages row must end with an assistant message.")
            return {"prompt": messages[:-1], "completion": messages[-1:]}
        return ds.map(split_last, remove_columns=ds.column_names)
    raise errors.UserError(f"task sft cannot train on '{fmt}' data.",
                           hint="use alpaca, messages or prompt_completion data (or task: cpt for raw text)")


def train_eval(ds: Any, eval_split: float | str, seed: int, eval_ds: Any = None) -> tuple[Any, Any]:
    """Splits off the evaluation set (a fraction of the rows) unless one was given."""
    if eval_ds is not None:
        return ds, eval_ds
    if isinstance(eval_split, str) or not eval_split or len(ds) < 10:
        return ds, None
    parts = ds.train_test_split(test_size=eval_split, seed=seed)
    return parts["train"], parts["test"]


# Chat templates by name, for models whose tokenizer has none (task_args.chat_template: chatml). The
# {% generation %} tags mark assistant tokens, so the loss can be taken on them alone.
CHAT_TEMPLATES = {
    "chatml": (
        "{% for message in messages %}"
        "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
        "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
        "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    "zephyr": (
        "{% for message in messages %}"
        "{% if message['role'] == 'assistant' %}{{ '<|assistant|>\n' }}{% generation %}"
        "{{ message['content'] + eos_token }}{% endgeneration %}{{ '\n' }}"
        "{% else %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"),
}


def chat_template(value: str | None) -> str | None:
    """A named template (chatml, zephyr) or the Jinja text itself."""
    if value is None:
        return None
    return CHAT_TEMPLATES.get(value.strip().lower(), value)


def to_text(ds: Any, fmt: str) -> Any:
    """Continued-pretraining rows: one `text` column (other formats are joined into plain text)."""
    if fmt == "text":
        return ds.select_columns(["text"]).filter(lambda r: bool(r["text"] and r["text"].strip()))
    if fmt == "alpaca":
        return ds.map(lambda r: {"text": "\n\n".join(str(r[c]) for c in ("instruction", "input", "output")
                                                     if r.get(c))}, remove_columns=ds.column_names)
    if fmt == "prompt_completion":
        return ds.map(lambda r: {"text": f"{r['prompt']}{r['completion']}"}, remove_columns=ds.column_names)
    raise errors.UserError(f"task cpt trains on raw text; '{fmt}' data has no text column.",
                           hint="use a .txt file or a jsonl/csv with a `text` column (map yours with dataset.columns)")


def to_classification(ds: Any, labels: list[str] | None) -> tuple[Any, list[str]]:
    """Rows with `text` and an integer `label`; label names from the spec, else the sorted distinct values."""
    if "text" not in ds.column_names or "label" not in ds.column_names:
        raise errors.UserError("task classification needs a `text` and a `label` column.",
                               hint="map yours with dataset.columns, e.g. {text: review, label: sentiment}")
    values = [str(v) for v in ds["label"]]
    names = [str(n) for n in labels] if labels else sorted(set(values))
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise errors.UserError(f"labels {', '.join(unknown[:5])} are not in task_args.labels.",
                               hint=f"add them to task_args.labels (now: {', '.join(names)})")
    ds = ds.map(lambda r: {"label_id": index[str(r["label"])]}, remove_columns=["label"])
    return ds.rename_column("label_id", "label").select_columns(["text", "label"]), names


def to_preference(ds: Any) -> Any:
    """Rows with chosen and rejected (and the prompt, when the data has one)."""
    for column in ("chosen", "rejected"):
        if column not in ds.column_names:
            raise errors.UserError(f"preference data needs `chosen` and `rejected` columns; `{column}` is missing.",
                                   hint="map yours with dataset.columns, e.g. {chosen: good, rejected: bad}")
    keep = [c for c in ("prompt", "chosen", "rejected") if c in ds.column_names]
    return ds.select_columns(keep)


def to_prompts(ds: Any, fmt: str, chat: bool) -> Any:
    """Prompts for policy optimisation: a `prompt` column (conversational when the tokenizer has a chat template)."""
    if "prompt" in ds.column_names:
        rows = ds.select_columns(["prompt"])
    elif fmt == "alpaca":
        rows = ds.map(lambda r: {"prompt": r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")},
                      remove_columns=ds.column_names)
    elif fmt == "messages":
        return ds.map(lambda r: {"prompt": [m for m in r["messages"] if m["role"] != "assistant"]},
                      remove_columns=ds.column_names)
    else:
        raise errors.UserError("task rl needs prompts: a `prompt` column, alpaca or messages data.",
                               hint="map your column with dataset.columns, e.g. {prompt: question}")
    if chat and isinstance(rows[0]["prompt"], str):
        rows = rows.map(lambda r: {"prompt": [{"role": "user", "content": r["prompt"]}]})
    return rows
