"""Issue 11: the trainer's own data reading refuses bad rows with their file and line (exit 2, one readable
line, no traceback), even when no pre-flight ran: --skip-preflight, data fetched by the job, data over the
pre-flight's size bound. Each class of bad data goes through the loading the tasks call (common.load_rows,
with the real datasets library); two go through the trainer's main() as a job runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import taskdata
import tiny

from ftlaunch.core import errors, preflight, spec
from ftlaunch.containers.trainer import checkpoints, common, contract, data, run

GOOD = {"instruction": "Name the city.", "input": "I flew to Paris.", "output": "Paris"}
CHAT = {"messages": [{"role": "user", "content": "Where is Paris?"}, {"role": "assistant", "content": "France"}]}
COLUMNS = "  columns: {text: review, label: sentiment}\n"


def jsonl(*rows: object) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def make_spec(data_path: Path | str, task: str = "sft", dataset_extra: str = "", model: str = "a/b") -> spec.Spec:
    return spec.loads(f"name: t\nmodel: {model}\ntask: {task}\ndataset:\n  path: {data_path}\n{dataset_extra}")


def load(tmp_path: Path, s: spec.Spec):
    """The training rows exactly as a task gets them."""
    job = common.Job(spec=s, paths=contract.Paths(str(tmp_path / "out"), str(tmp_path / "ckpt"), None, "local"),
                     out=tmp_path / "out", device="cpu", precision="fp32", world_size=1, rank=0,
                     guard=checkpoints.Guard())
    return common.load_rows(job)


# (file name, content, task, dataset lines, the line refused, what the message says)
BAD = {
    "malformed JSON after a blank line": (
        "d.jsonl", jsonl(GOOD, GOOD, b"", b'{"instruction": "a", "output": oops}', GOOD), "sft", "", 4,
        "not valid JSON (Expecting value at column 32)"),
    "a number where text is expected": (
        "d.jsonl", jsonl(GOOD, dict(GOOD, instruction=12345), GOOD), "sft", "", 2,
        "column 'instruction' must be a string, not a number"),
    "a list where text is expected": (
        "d.jsonl", jsonl(GOOD, GOOD, dict(GOOD, output=["Paris", "France"])), "sft", "", 3,
        "column 'output' must be a string, not a list"),
    "an empty required column": (
        "d.jsonl", jsonl(GOOD, dict(GOOD, output="   "), GOOD), "sft", "", 2, "column 'output' is empty"),
    "an empty CSV label": (
        "d.csv", b"review,sentiment\ngreat,positive\nawful,\nfine,positive\n", "classification", COLUMNS, 3,
        "column 'label' is empty"),
    "an empty CSV label among numbers": (
        "d.csv", b"review,sentiment\ngreat,1\nawful,0\nmeh,\n", "classification", COLUMNS, 4,
        "column 'label' is empty"),
    "a chat role outside system/user/assistant/tool": (
        "d.jsonl", jsonl(CHAT, {"messages": [{"role": "wizard", "content": "hi"}, *CHAT["messages"][1:]]}), "sft",
        "", 2, 'message 1 has role "wizard"; use one of system, user, assistant, tool'),
    "a conversation that does not end with the assistant": (
        "d.jsonl", jsonl(CHAT, CHAT, {"messages": CHAT["messages"][:1]}), "sft", "", 3,
        "the last message must be the assistant's"),
    "latin-1 bytes in JSONL": (
        "d.jsonl", jsonl(GOOD, '{"instruction": "Caf\xe9?", "output": "yes"}'.encode("latin-1")), "sft", "", 2,
        "byte 0xE9 at column 21 is not UTF-8"),
    "latin-1 bytes in CSV": (
        "d.csv", b"review,sentiment\ngreat,positive\ncaf\xe9 awful,negative\n", "classification", COLUMNS, 3,
        "byte 0xE9 at column 4 is not UTF-8"),
    "latin-1 bytes in text": (
        "d.txt", b"one line of text\nthe caf\xe9 was shut\n", "cpt", "", 2, "byte 0xE9 at column 8 is not UTF-8"),
    "a line that is not an object": (
        "d.jsonl", jsonl(GOOD, [1, 2], GOOD), "sft", "", 2, "a line must be a JSON object, not list"),
    "malformed JSON in a .json list": (
        "d.json", b'[\n{"instruction": "a", "output": "b"},\n{"instruction": "a", "output": oops}\n]\n', "sft", "",
        3, "not valid JSON"),
    "a CSV row with an extra field": (
        "d.csv", b"review,sentiment\ngreat,positive\nawful,negative,extra\n", "classification", COLUMNS, 3,
        "has 3 fields; the header has 2"),
    "a row over MAX_ROW_CHARS": (
        "d.jsonl", jsonl(GOOD, dict(GOOD, input="x" * (preflight.MAX_ROW_CHARS + 10)), GOOD), "sft", "", 2,
        f"characters of text (at most {preflight.MAX_ROW_CHARS:,}); split long documents"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_a_user_error_naming_the_file_and_line(tmp_path, case):
    name, content, task, extra, line, message = BAD[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(errors.UserError) as info:
        load(tmp_path, make_spec(path, task, extra))
    text = info.value.render()
    assert text.startswith(f"{path}:{line}: ") and message in text, text
    assert "position" not in text and "Traceback" not in text


def test_the_trainer_exits_2_with_one_line_for_an_oversized_row_before_tokenizing(tiny_lm, tmp_path, capsys,
                                                                                   monkeypatch):
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl(*[GOOD] * 9, dict(GOOD, output="word " * (preflight.MAX_ROW_CHARS // 5 + 10))))
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(make_spec(path, model=str(tiny_lm)).to_json()))
    monkeypatch.setenv("FTLAUNCH_OUTPUT_DIR", str(tmp_path / "out"))
    assert run.main(["--spec", str(spec_file)]) == run.EXIT_USER_ERROR
    err = capsys.readouterr().err
    first = next(line for line in err.splitlines() if line.startswith("error: "))
    assert first.startswith(f"error: {path}:10: the row holds ") and "Traceback" not in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_the_trainer_exits_2_for_an_empty_label_instead_of_training_a_none_class(tiny_classifier, tmp_path,
                                                                                  capsys, monkeypatch):
    path = taskdata.write_classification(tmp_path / "reviews.csv", n=12)
    with open(path, "a") as f:
        f.write("a trip without a label,\n")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(make_spec(path, "classification", COLUMNS, model=str(tiny_classifier)).to_json()))
    monkeypatch.setenv("FTLAUNCH_OUTPUT_DIR", str(tmp_path / "out"))
    assert run.main(["--spec", str(spec_file)]) == run.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert f"error: {path}:14: column 'label' is empty" in err and "Traceback" not in err


def test_eval_rows_are_checked_too(tmp_path):
    train = tiny.write_alpaca(tmp_path / "train.jsonl", n=8)
    held_out = tmp_path / "eval.jsonl"
    held_out.write_bytes(jsonl(GOOD, dict(GOOD, instruction={"not": "text"})))
    s = make_spec(train, dataset_extra=f"  eval_path: {held_out}\n")
    job = common.Job(spec=s, paths=contract.Paths(str(tmp_path / "out"), str(tmp_path / "ckpt"), None, "local"),
                     out=tmp_path / "out", device="cpu", precision="fp32", world_size=1, rank=0,
                     guard=checkpoints.Guard())
    assert len(common.load_rows(job)) == 8
    with pytest.raises(errors.UserError, match=f"^{held_out}:2: column 'instruction' must be a string, not an object"):
        common.load_eval_rows(job)


def test_data_read_over_the_network_is_named_by_its_record(tmp_path):
    import datasets

    rows = datasets.Dataset.from_list([CHAT, {"messages": [{"role": "user", "content": "hi"},
                                                           {"role": "robot", "content": "beep"}]}])
    s = make_spec("s3://bucket/chat.jsonl")
    with pytest.raises(errors.UserError) as info:
        data.check_rows(rows, s, "s3://bucket/chat.jsonl")
    assert info.value.message.startswith('s3://bucket/chat.jsonl: record 2: message 2 has role "robot"')
    # bytes that are not UTF-8 load (pyarrow keeps them) and fail only when read: named by their records
    fetched = tmp_path / "fetched.jsonl"
    fetched.write_bytes(jsonl(GOOD, '{"instruction": "Caf\xe9?", "output": "yes"}'.encode("latin-1")))
    rows = datasets.load_dataset("json", data_files=str(fetched), split="train")
    with pytest.raises(errors.UserError) as info:
        data.check_rows(rows, s, "s3://bucket/chat.jsonl")
    assert info.value.message.startswith("s3://bucket/chat.jsonl: a row among records 1-2 holds bytes that are not "
                                         "UTF-8")


def test_good_files_still_load(tmp_path):
    alpaca = tiny.write_alpaca(tmp_path / "train.jsonl", n=20)
    assert len(load(tmp_path, make_spec(alpaca))) == 20
    reviews = taskdata.write_classification(tmp_path / "reviews.csv", n=16)
    assert load(tmp_path, make_spec(reviews, "classification", COLUMNS))["label"][:2] == ["negative", "positive"]
    # a label the CSV reader turns into a number is still the file's text label: not refused
    scores = tmp_path / "scores.csv"
    scores.write_text("review,sentiment\ngreat,0.5\nawful,1.5\n")
    assert load(tmp_path, make_spec(scores, "classification", COLUMNS))["label"] == [0.5, 1.5]


def test_max_samples_checks_only_the_rows_it_trains_on(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl(*[GOOD] * 5, dict(GOOD, output=7)))
    assert len(load(tmp_path, make_spec(path, dataset_extra="  max_samples: 5\n"))) == 5
    with pytest.raises(errors.UserError, match=f"^{path}:6: "):
        load(tmp_path, make_spec(path))


@pytest.mark.parametrize("task", ["sft", "cpt", "rl"])
def test_the_trainer_takes_the_format_the_pre_flight_checks(task):
    from ftlaunch.core.techniques import Task

    for columns in (["text", "label"], ["instruction", "output", "chosen", "rejected"], ["messages", "text"],
                    ["instruction", "input", "output"], ["prompt", "completion"], ["text"]):
        checked = preflight.data_format(Task(task), "auto", columns)
        if checked not in (None, "prompt"):
            assert data.detect_format(columns, "auto", Task(task)) == checked, columns
