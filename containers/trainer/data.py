"""Loads a spec's dataset (local files, hub names, s3/gs/az URIs) and shapes it for the task.

Canonical columns per format, after the spec's `columns` mapping renames the file's own:
- alpaca: instruction, input (optional), output
- messages: messages (a list of {role, content}; the last is the assistant's answer)
- prompt_completion: prompt, completion
- text: text (continued pretraining)
- classification: text, label
- preference: prompt (optional), chosen, rejected

Every row the trainer loads goes through the pre-flight's own row checks (ftlaunch.core.preflight.row_error), so a
job launched with --skip-preflight, on data that was not local at launch, or on data over the pre-flight's
size bound still refuses a bad row with its file and line (exit 2) instead of a traceback or a silent run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftlaunch.core import errors, preflight
from ftlaunch.core.techniques import ALPACA_TEMPLATE, FORMAT_COLUMNS, Task

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text",
            ".tsv": "csv"}


def load_split(path: str, split: str = "train", data_dir: str | None = None, spec: Any = None) -> Any:
    """A datasets.Dataset from a local file or folder, a hub name, or a cloud URI. When the loader fails on a
    local file, the first bad line is found (with the spec's task and columns, the first bad row too)."""
    import datasets

    path = _channel_copy(path, data_dir)
    suffix = Path(path.split("?")[0]).suffix.lower()
    local = Path(path)
    if local.is_dir():
        files = sorted(p for p in local.iterdir() if p.suffix.lower() in BUILDERS)
        if not files:
            raise errors.UserError(f"dataset folder {path} has no .jsonl, .json, .csv, .parquet or .txt files.")
        _not_empty(files)
        return _load(datasets, BUILDERS[files[0].suffix.lower()], path, spec, data_files=[str(f) for f in files],
                     split="train", **_builder_kwargs(files[0].suffix.lower()))
    if suffix in BUILDERS:
        if local.exists():
            _not_empty([local])
        return _load(datasets, BUILDERS[suffix], path, spec, data_files=path, split="train",
                     **_builder_kwargs(suffix))
    return _load(datasets, path, path, spec, split=split)


CHECK_BATCH = 1000  # rows turned into Python objects at a time by check_rows


def check_rows(ds: Any, spec: Any, path: str, data_dir: str | None = None) -> None:
    """Refuses the first bad row with a UserError naming its file and line, before anything is tokenized: the
    pre-flight's own checks (missing or empty columns and labels, wrong types, unknown chat roles, an SFT
    conversation not ending with the assistant's message, rows over preflight.MAX_ROW_CHARS, bytes that are
    not UTF-8) on the rows as loaded. A local file is the judge: the row is looked up there by its line
    (blank lines and CSV quoting make record numbers differ from lines); data read over the network is named
    by its record number. Data whose format cannot be told is left to the task's format check."""
    fmt = preflight.data_format(spec.task, spec.dataset.format, ds.column_names)
    if fmt is None:
        return
    for start in range(0, len(ds), CHECK_BATCH):
        try:
            batch = ds[start:start + CHECK_BATCH]
        except UnicodeDecodeError as exc:  # pyarrow's JSON reader keeps such bytes; they fail when read
            bad = preflight.Problem(f"a row among records {start + 1}-{min(len(ds), start + CHECK_BATCH)} holds "
                                    f"bytes that are not UTF-8 ({exc.reason}); save the file as UTF-8", file=path)
            _refuse(bad, ds, spec, fmt, path, data_dir)
            raise _row_error(bad) from None  # nothing can train on them, whatever the file's lines say
        names = list(batch)
        for i, values in enumerate(zip(*(batch[name] for name in names))):
            problem = preflight.row_error(spec.task, fmt, dict(zip(names, values)))
            if problem is not None:
                problem.row = start + i + 1
                _refuse(problem, ds, spec, fmt, path, data_dir)
                return  # the local file's rows are all good: the loader's typing made one look bad


def _refuse(problem: preflight.Problem, ds: Any, spec: Any, fmt: str, path: str, data_dir: str | None) -> None:
    """Raises the row's UserError: the first bad row of the local file, or this record of remote data.
    Returns only when the local file has no bad row (a CSV's "0.5" label read as a number looks bad)."""
    local = local_source(path, data_dir)
    if local is None:
        problem.file = path
        raise _row_error(problem, record=True)
    found = preflight.first_error(local, spec.task, fmt, spec.dataset.columns, limit=len(ds))
    if found is not None:
        raise _row_error(found)


def local_source(path: str, data_dir: str | None = None) -> Path | None:
    """The local file or folder load_split reads for `path` (the input channel's copy where the backend made
    one); None for a hub name or a cloud URI read over the network."""
    local = Path(_channel_copy(path, data_dir))
    return local if "://" not in str(local) and local.exists() else None


def _channel_copy(path: str, data_dir: str | None) -> str:
    if data_dir and not Path(path).exists() and "://" in path:
        # the backend already copied the input channel here (SageMaker, Azure ML)
        return str(Path(data_dir) / Path(path.split("://", 1)[1]).name)
    return path


def _row_error(problem: preflight.Problem, record: bool = False) -> errors.UserError:
    where = problem.file if problem.row is None else \
        f"{problem.file}: record {problem.row}" if record else f"{problem.file}:{problem.row}"
    return errors.UserError(f"{where}: {problem.message}",
                            hint="fix or drop that row; `ftlaunch validate SPEC` lists every bad row of a local file")


def _not_empty(files: list[Path]) -> None:
    empty = [str(f) for f in files if f.stat().st_size == 0]
    if empty:
        raise errors.UserError(f"dataset file {empty[0]} is empty.", hint="point dataset.path at a file with rows")


def _load(datasets: Any, builder: str, path: str, spec: Any, **kwargs: Any) -> Any:
    """datasets.load_dataset, with a reading failure of the user's file turned into one clear message: its
    first bad line, found by reading the file again (only on this path)."""
    try:
        return datasets.load_dataset(builder, **kwargs)
    except (ValueError, KeyError, TypeError, StopIteration, datasets.exceptions.DatasetGenerationError) as exc:
        local = local_source(path)
        found = None
        if local is not None:
            found = preflight.first_error(local, spec.task, spec.dataset.format, spec.dataset.columns) \
                if spec is not None else preflight.first_error(local)
        if found is not None:
            raise _row_error(found) from None
        cause = exc.__cause__ if isinstance(exc, datasets.exceptions.DatasetGenerationError) and exc.__cause__ else exc
        raise errors.UserError(f"could not read dataset {path}: {cause.__class__.__name__}: {cause}".rstrip(": "),
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


def detect_format(columns: list[str], declared: str, task: Task | None = None) -> str:
    """The declared format (its columns present), else the one the pre-flight checks the rows as: the first
    of the task's formats whose columns are present. Failing that, any format the columns fit, so that the
    task's conversion names what it takes instead."""
    if declared != "auto":
        want = FORMAT_COLUMNS[declared]
        missing = [c for c in want if c not in columns]
        if missing:
            raise errors.UserError(
                f"dataset format '{declared}' needs columns {', '.join(want)}; missing {', '.join(missing)}.",
                hint=f"map your columns with dataset.columns (the data has: {', '.join(columns)})")
        return declared
    fmt = preflight.data_format(task, declared, columns) if task is not None else None
    if fmt is not None and fmt != "prompt":
        return fmt
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
