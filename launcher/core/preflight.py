"""Pre-flight check of a spec's local training data, on the launcher's CPU before any job is submitted.

`check(spec) -> Report` reads the data file itself (so a malformed line is reported by its row number,
not as a parser traceback), checks the columns the task needs, tokenizes every row with the model's
tokenizer, and reports a token-length histogram, the share of rows longer than max_length, label
balance, duplicates and the total token count (which feeds the estimate). `print_report` formats it.
Imports transformers only for the tokenizer, so only `ftlaunch validate` pays for it.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from ftlaunch.core import models, term
from ftlaunch.core.techniques import ALPACA_TEMPLATE, FORMAT_COLUMNS, TASK_FORMATS, Task

READABLE = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt")
SHOWN = 12  # problems of one kind listed before "... and N more"
ROLES = ("system", "user", "assistant", "tool")  # chat roles the trainers' chat templates take
# A row larger than this (characters of text in all its fields) is refused: tokenizing one such row can take
# many GB in the trainer, and truncation to max_length is the spec's job, not the machine's memory.
MAX_ROW_CHARS = 4_000_000
MAX_ROW_DEPTH = 8  # nesting of lists/objects inside one row (messages are 2 deep)
# Optional columns, by format, that must be text when present.
OPTIONAL_TEXT = {"alpaca": ("input", "system"), "preference": ("prompt",), "prompt_completion": ("system",)}


@dataclasses.dataclass
class Problem:
    message: str
    row: int | None = None  # 1-based line (jsonl, txt, csv with its header as line 1) or record number
    level: str = "error"  # error | warning
    file: str | None = None

    def render(self) -> str:
        where = f"{self.file}:{self.row}: " if self.row is not None and self.file else \
            f"{self.file}: " if self.file else ""
        return f"{where}{self.message}"


@dataclasses.dataclass
class Report:
    path: str
    checked: bool = True  # False when the data is not local (hub name, cloud URI)
    format: str | None = None
    rows: int = 0
    problems: list[Problem] = dataclasses.field(default_factory=list)
    lengths: list[int] = dataclasses.field(default_factory=list)
    max_length: int = 0
    histogram: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)  # (from, to, rows)
    truncated_rows: list[int] = dataclasses.field(default_factory=list)
    label_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    duplicate_rows: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (row, first seen at)
    total_tokens: int = 0
    tokenizer: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def truncation_percent(self) -> float:
        return 100.0 * len(self.truncated_rows) / len(self.lengths) if self.lengths else 0.0

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("lengths")
        data.update(ok=self.ok, truncation_percent=round(self.truncation_percent, 2))
        return data


def check(spec: Any, tokenizer: Any = None, lengths: bool = True) -> Report:
    """Checks the spec's training data (and eval_path's, when local); never raises for bad data.
    `lengths=False` skips the token-length histogram (no tokenizer is loaded): what a launch runs."""
    path = spec.resolve_path(spec.dataset.path)
    report = Report(path=path, max_length=spec.hyperparameters.max_length)
    if models.looks_local(spec.dataset.path) and not Path(path).exists():  # spec.load refuses this too
        report.problems.append(Problem(f"dataset.path '{spec.dataset.path}' does not exist", file=path))
        return report
    if "://" in path or not Path(path).exists():
        report.checked = False
        report.notes.append("the data is not a local file (hub name or cloud URI); the job checks it when it loads it")
        return report
    rows = list(_read(Path(path), report))
    rows = [(n, file, _rename(row, spec.dataset.columns)) for n, file, row in rows]
    if spec.dataset.max_samples:
        rows = rows[:spec.dataset.max_samples]
    report.rows = len(rows)
    if not rows:
        if not report.errors:
            report.problems.append(Problem("the data has no rows", file=path))
        return report
    report.format = _format(spec, rows, report)
    if report.format is None:
        return report
    good = _check_rows(spec.task, report.format, rows, report)
    _duplicates(good, report)
    if spec.task is Task.CLASSIFICATION:
        _labels(good, spec, report)
    if lengths:
        _lengths(spec, good, report, tokenizer)
    return report


LAUNCH_MAX_BYTES = 256 * 2**20  # a launch checks local data up to this size; `validate` checks any size


def before_launch(spec: Any) -> Report | None:
    """The structural pre-flight a launch runs before anything is submitted (no tokenizer, no lengths):
    malformed rows, missing or empty columns, wrong types, unknown roles, oversized rows, labels.
    None when the data is not local or is larger than LAUNCH_MAX_BYTES (then the job checks it as it loads)."""
    path = spec.resolve_path(spec.dataset.path)
    if "://" not in path and Path(path).exists() and _size(Path(path)) > LAUNCH_MAX_BYTES:
        return None
    report = check(spec, lengths=False)
    return report if report.checked else None


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.suffix.lower() in READABLE)


def data_format(task: Task, declared: str, columns: Any) -> str | None:
    """The format the rows are checked as: the declared one, else the first of the task's formats whose
    columns are all present ("prompt" for RL data with a prompt column); None when none fits."""
    columns = set(columns)
    if task is Task.RL and "prompt" in columns:
        return "prompt"
    if declared != "auto":
        return declared
    for name in TASK_FORMATS[task]:
        if name != "prompt" and all(c in columns for c in FORMAT_COLUMNS[name]):
            return name
    return None


def row_error(task: Task, fmt: str, row: dict, n: int | None = None, file: str | None = None) -> Problem | None:
    """The first problem of one row (already renamed to the canonical columns), or None when it is good:
    missing or empty columns, wrong types, oversized or deeply nested rows, bad chat messages. The same
    checks `validate` runs; the trainer calls this on every row it loads."""
    scratch = Report(path=file or "")
    _check_rows(task, fmt, [(n, file or "", row)], scratch)
    return scratch.errors[0] if scratch.errors else None


def first_error(path: Path, task: Task | None = None, declared: str = "auto", columns: dict[str, str] | None = None,
                limit: int | None = None) -> Problem | None:
    """The first row-numbered problem in a local file or folder, read as a stream that stops there: unreadable
    lines (malformed JSON, non-UTF-8 bytes, wrong CSV field counts), and with a task, each row's own problems
    (row_error, in the format `declared` names or the first rows' columns tell). `limit` stops after that many
    rows. None when every row read is good."""
    report = Report(path=str(path))
    stream = ((n, file, _rename(row, columns or {})) for n, file, row in _read(Path(path), report))
    head = list(itertools.islice(stream, 200))  # the columns that tell the format, as check() looks at them
    fmt = data_format(task, declared, set().union(*(row.keys() for _, _, row in head))) \
        if task is not None and head else None
    for count, (n, file, row) in enumerate(itertools.chain(head, stream), 1):
        earlier = [p for p in report.errors if _position(p) < (Path(file), n)]
        if earlier:
            return min(earlier, key=_position)
        problem = row_error(task, fmt, row, n, file) if fmt is not None else None
        if problem is not None:
            return problem
        if limit is not None and count >= limit:
            return None
    return min(report.errors, key=_position) if report.errors else None


def _position(problem: Problem) -> tuple[Path, int]:
    return Path(problem.file or ""), problem.row or 0


def print_report(console: Any, report: Report) -> None:
    """The report as a person reads it: problems first (file:row), then the length histogram and totals."""
    if not report.checked:
        for note in report.notes:
            console.print(term.markup("[dim]pre-flight: {}[/]", note))
        return
    for kind, style in (("errors", "red"), ("warnings", "yellow")):
        problems = getattr(report, kind)
        for problem in problems[:SHOWN]:
            console.print(term.markup("[" + style + "]{}[/] {}", kind[:-1], problem.render()), highlight=False)
        if len(problems) > SHOWN:
            console.print(term.plain(f"... and {len(problems) - SHOWN} more {kind}", style))
    if report.lengths:
        console.print(term.plain(f"pre-flight: {report.rows} rows ({report.format}), {report.total_tokens:,} tokens "
                      f"({report.tokenizer}); max_length {report.max_length}: "
                      f"{len(report.truncated_rows)} rows ({report.truncation_percent:.1f}%) would be truncated"),
                      highlight=False)
        peak = max(c for _, _, c in report.histogram) or 1
        for lo, hi, count in report.histogram:
            bar = "#" * max(1 if count else 0, round(30 * count / peak))
            console.print(f"  {lo:>6}-{hi:<6} {count:>7}  {bar}", highlight=False)
    if report.label_counts:
        console.print(term.plain("labels: " + ", ".join(f"{k} {v}" for k, v in report.label_counts.items())),
                      highlight=False)
    if report.duplicate_rows:
        console.print(f"duplicates: {len(report.duplicate_rows)} rows repeat an earlier row", highlight=False)
    for note in report.notes:
        console.print(term.markup("[dim]{}[/]", note))


# ---------------------------------------------------------------- reading

def _read(path: Path, report: Report) -> Iterator[tuple[int, str, dict]]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in READABLE) if path.is_dir() else [path]
    if path.is_dir() and not files:
        report.problems.append(Problem(f"folder has no {', '.join(READABLE)} files", file=str(path)))
    for file in files:
        suffix = file.suffix.lower()
        if suffix not in READABLE:
            report.problems.append(Problem(f"cannot read '{suffix}' files; use one of {', '.join(READABLE)}",
                                           file=str(file)))
            continue
        yield from {".jsonl": _jsonl, ".json": _json, ".csv": _csv, ".tsv": _csv, ".parquet": _parquet,
                    ".txt": _txt}[suffix](file, report)


_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" makes of a byte that is not UTF-8


def _not_utf8(text: str, n: int, file: Path, report: Report) -> bool:
    """True (and a row-numbered error) when a line read with errors="surrogateescape" held non-UTF-8 bytes."""
    found = _NOT_UTF8.search(text)
    if found is None:
        return False
    byte = ord(found.group()) - 0xDC00
    report.problems.append(Problem(
        f"byte 0x{byte:02X} at column {found.start() + 1} is not UTF-8 (latin-1 or another encoding?); save the "
        "file as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`", n, file=str(file)))
    return True


def _jsonl(file: Path, report: Report) -> Iterator[tuple[int, str, dict]]:
    with open(file, encoding="utf-8", errors="surrogateescape") as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or _not_utf8(line, n, file, report):
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                report.problems.append(Problem(f"not valid JSON ({exc.msg} at column {exc.colno})", n, file=str(file)))
                continue
            if not isinstance(row, dict):
                report.problems.append(Problem(f"a line must be a JSON object, not {type(row).__name__}", n,
                                               file=str(file)))
                continue
            yield n, str(file), row


def _json(file: Path, report: Report) -> Iterator[tuple[int, str, dict]]:
    raw = file.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        _not_utf8(raw.splitlines()[line - 1].decode("utf-8", errors="surrogateescape"), line, file, report)
        return
    except json.JSONDecodeError as exc:
        report.problems.append(Problem(f"not valid JSON ({exc.msg})", exc.lineno, file=str(file)))
        return
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))
    if not isinstance(data, list):
        report.problems.append(Problem("a .json file must hold a list of objects (or use .jsonl)", file=str(file)))
        return
    for n, row in enumerate(data, 1):
        if isinstance(row, dict):
            yield n, str(file), row
        else:
            report.problems.append(Problem(f"record {n} is not an object", n, file=str(file)))


def _csv(file: Path, report: Report) -> Iterator[tuple[int, str, dict]]:
    with open(file, encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if file.suffix.lower() == ".tsv" else ",")
        if _not_utf8(",".join(reader.fieldnames or []), 1, file, report):
            return
        width = len(reader.fieldnames or [])
        try:
            for row in reader:
                if _not_utf8("\t".join(v for v in row.values() if isinstance(v, str)), reader.line_num, file, report):
                    continue
                if None in row or any(v is None for v in row.values()):
                    fields = width + len(row.get(None) or []) - sum(v is None for k, v in row.items() if k is not None)
                    report.problems.append(Problem(f"has {fields} fields; the header has {width}",
                                                   reader.line_num, file=str(file)))
                    continue
                yield reader.line_num, str(file), row
        except csv.Error as exc:
            report.problems.append(Problem(f"CSV error: {exc}", reader.line_num, file=str(file)))


def _parquet(file: Path, report: Report) -> Iterator[tuple[int, str, dict]]:
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(file)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's problem
        report.problems.append(Problem(f"cannot read parquet: {exc}", file=str(file)))
        return
    for n, row in enumerate(table.to_pylist(), 1):
        yield n, str(file), row


def _txt(file: Path, report: Report) -> Iterator[tuple[int, str, dict]]:
    with open(file, encoding="utf-8", errors="surrogateescape") as f:
        for n, line in enumerate(f, 1):
            if line.strip() and not _not_utf8(line, n, file, report):
                yield n, str(file), {"text": line.rstrip("\n")}


def _rename(row: dict, mapping: dict[str, str]) -> dict:
    if not mapping:
        return row
    renamed = dict(row)
    for canonical, column in mapping.items():
        if column in row:
            renamed[canonical] = renamed.pop(column)
    return renamed


# ---------------------------------------------------------------- checks

def _format(spec: Any, rows: list, report: Report) -> str | None:
    columns = set().union(*(row.keys() for _, _, row in rows[:200]))
    fmt = data_format(spec.task, spec.dataset.format, columns)
    if fmt is not None:
        return fmt
    need = " or ".join("(" + ", ".join(FORMAT_COLUMNS.get(f, ("prompt",))) + ")" for f in TASK_FORMATS[spec.task])
    report.problems.append(Problem(
        f"task {spec.task.value} needs columns {need}; the data has {', '.join(sorted(columns))}. "
        f"Map yours with dataset.columns, e.g. {{output: response}}", file=report.path))
    return None


def _check_rows(task: Task, fmt: str, rows: list, report: Report) -> list[tuple[int, str, dict]]:
    """Rows with every needed column present and non-empty; the others become row-numbered errors."""
    need = FORMAT_COLUMNS.get(fmt, ("prompt",))
    good = []
    for n, file, row in rows:
        bad = False
        for column in need:
            if column not in row:
                report.problems.append(Problem(f"missing column '{column}'", n, file=file))
                bad = True
            elif row[column] is None or (isinstance(row[column], (str, list)) and not row[column]) or \
                    (isinstance(row[column], str) and not row[column].strip()):
                report.problems.append(Problem(f"column '{column}' is empty", n, file=file))
                bad = True
        if not bad:
            bad = _check_types(task, fmt, n, file, row, report)
        if not bad and fmt == "messages":
            bad = _check_messages(task, n, file, row["messages"], report)
        if not bad:
            good.append((n, file, row))
    return good


def _check_types(task: Task, fmt: str, n: int, file: str, row: dict, report: Report) -> bool:
    """Wrong types, oversized and deeply nested rows as row-numbered errors; True when the row is bad."""
    size, depth = _measure(row)
    if depth > MAX_ROW_DEPTH:
        report.problems.append(Problem(f"the row is nested {depth} levels deep (at most {MAX_ROW_DEPTH})", n,
                                       file=file))
        return True
    if size > MAX_ROW_CHARS:
        report.problems.append(Problem(
            f"the row holds {size:,} characters of text (at most {MAX_ROW_CHARS:,}); split long documents into "
            "several rows (hyperparameters.max_length truncates each row anyway)", n, file=file))
        return True
    for column in FORMAT_COLUMNS.get(fmt, ("prompt",)) + OPTIONAL_TEXT.get(fmt, ()):
        value = row.get(column)
        if value is None or column == "messages":
            continue
        if column == "label":
            ok, want = isinstance(value, (str, int)), "a string or an integer"
        elif fmt == "preference":
            ok, want = isinstance(value, str) or (isinstance(value, list) and not
                                                   _check_messages(task, n, file, value, report, last=False)), \
                "a string or a list of {role, content} messages"
        else:
            ok, want = isinstance(value, str), "a string"
        if not ok:
            report.problems.append(Problem(f"column '{column}' must be {want}, not {_kind(value)}", n, file=file))
            return True
    return False


def _measure(value: Any, depth: int = 0) -> tuple[int, int]:
    """(characters of text, nesting depth) of a row's value; stops descending past MAX_ROW_DEPTH."""
    if isinstance(value, str):
        return len(value), depth
    if depth > MAX_ROW_DEPTH:
        return 0, depth
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    size, deepest = (len(str(value)) if not isinstance(value, (dict, list)) else 0), depth
    for item in items:
        s, d = _measure(item, depth + 1)
        size, deepest = size + s, max(deepest, d)
    return size, deepest


def _kind(value: Any) -> str:
    return {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__)


def _check_messages(task: Task, n: int, file: str, messages: Any, report: Report, last: bool = True) -> bool:
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        report.problems.append(Problem("'messages' must be a list of {role, content} objects", n, file=file))
        return True
    for i, m in enumerate(messages, 1):
        if m["role"] not in ROLES:
            report.problems.append(Problem(f"message {i} has role {json.dumps(m['role'])[:40]}; use one of "
                                           f"{', '.join(ROLES)}", n, file=file))
            return True
        if not isinstance(m["content"], str):
            report.problems.append(Problem(f"message {i}'s content must be a string, not {_kind(m['content'])}", n,
                                           file=file))
            return True
    if not last:
        return False
    if task is Task.SFT and messages[-1].get("role") != "assistant":
        report.problems.append(Problem("the last message must be the assistant's (the answer to learn)", n, file=file))
        return True
    return False


def _duplicates(rows: list, report: Report) -> None:
    seen: dict[str, int] = {}
    for n, _, row in rows:
        key = hashlib.sha1(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()
        if key in seen:
            report.duplicate_rows.append((n, seen[key]))
        else:
            seen[key] = n
    for n, first in report.duplicate_rows[:SHOWN]:
        report.problems.append(Problem(f"duplicate of row {first}", n, level="warning", file=report.path))
    if len(report.duplicate_rows) > SHOWN:
        report.problems.append(Problem(f"... and {len(report.duplicate_rows) - SHOWN} more duplicate rows",
                                       level="warning", file=report.path))


def _labels(rows: list, spec: Any, report: Report) -> None:
    counts = Counter(str(row["label"]) for _, _, row in rows)
    report.label_counts = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    declared = spec.task_settings.labels
    if declared:
        for n, file, row in rows:
            if str(row["label"]) not in {str(x) for x in declared}:
                report.problems.append(Problem(f"label '{row['label']}' is not in task_args.labels", n, file=file))
    if len(counts) < 2:
        report.problems.append(Problem(f"only one label ({next(iter(counts), '')}): a classifier needs two or more",
                                       file=report.path))
    elif min(counts.values()) < 0.1 * max(counts.values()):
        rare = min(counts, key=counts.get)
        report.problems.append(Problem(
            f"labels are imbalanced: '{rare}' has {counts[rare]} rows, the most common {max(counts.values())}",
            level="warning", file=report.path))


def _lengths(spec: Any, rows: list, report: Report, tokenizer: Any) -> None:
    tokenizer = tokenizer if tokenizer is not None else _tokenizer(spec, report)
    chat = bool(getattr(tokenizer, "chat_template", None))
    for n, _, row in rows:
        text = _render(report.format, row, tokenizer if chat else None)
        length = len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer is not None \
            else max(1, len(text) // 4)
        report.lengths.append(length)
        if length > report.max_length:
            report.truncated_rows.append(n)
    report.total_tokens = sum(min(x, report.max_length) for x in report.lengths)
    report.histogram = _histogram(report.lengths, report.max_length)
    if report.truncated_rows:
        shown = ", ".join(str(r) for r in report.truncated_rows[:SHOWN])
        more = f" and {len(report.truncated_rows) - SHOWN} more" if len(report.truncated_rows) > SHOWN else ""
        report.problems.append(Problem(
            f"{len(report.truncated_rows)} rows ({report.truncation_percent:.1f}%) are longer than "
            f"hyperparameters.max_length={report.max_length} tokens and will be truncated: rows {shown}{more}",
            level="warning", file=report.path))


def _tokenizer(spec: Any, report: Report) -> Any:
    try:
        from ftlaunch.core import models

        tokenizer = models.load_tokenizer(models.resolve(spec.model), _template(spec))
        report.tokenizer = f"{spec.model}'s tokenizer"
        return tokenizer
    except Exception as exc:  # noqa: BLE001 - no tokenizer here still leaves a useful estimate
        report.tokenizer = "estimated at 4 characters a token"
        report.notes.append(f"the model's tokenizer could not be loaded here ({type(exc).__name__}); "
                            f"token counts are estimates")
        return None


def _template(spec: Any) -> str | None:
    if spec.task is not Task.SFT:
        return None
    from ftlaunch.core import techniques

    return techniques.chat_template(spec.task_settings.chat_template)


def _render(fmt: str, row: dict, chat_tokenizer: Any) -> str:
    """The text the trainer tokenizes for a row (the longer side of a preference pair)."""
    if fmt == "messages":
        if chat_tokenizer is not None:
            return chat_tokenizer.apply_chat_template(row["messages"], tokenize=False)
        return "\n".join(str(m.get("content", "")) for m in row["messages"])
    if fmt == "alpaca":
        instruction = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        if chat_tokenizer is not None:
            return chat_tokenizer.apply_chat_template(
                [{"role": "user", "content": instruction}, {"role": "assistant", "content": str(row["output"])}],
                tokenize=False)
        return ALPACA_TEMPLATE.format(instruction=instruction) + str(row["output"])
    if fmt == "prompt_completion":
        return f"{row['prompt']}{row['completion']}"
    if fmt == "preference":
        prompt = str(row.get("prompt") or "")
        return prompt + max(str(row["chosen"]), str(row["rejected"]), key=len)
    if fmt == "prompt":
        return str(row["prompt"])
    return str(row["text"])


def _histogram(lengths: list[int], max_length: int) -> list[tuple[int, int, int]]:
    """Counts per power-of-two bucket (0-31, 32-63, ...), up to the longest row."""
    if not lengths:
        return []
    edges = [0, 32]
    while edges[-1] <= max(lengths):
        edges.append(edges[-1] * 2)
    counts = Counter()
    for x in lengths:
        for lo, hi in zip(edges, edges[1:]):
            if lo <= x < hi:
                counts[lo] += 1
                break
    return [(lo, hi - 1, counts[lo]) for lo, hi in zip(edges, edges[1:])]
