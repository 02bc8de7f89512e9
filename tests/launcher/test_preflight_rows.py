"""Issue 11, class 3: rows of the wrong type, unknown chat roles, oversized and deeply nested rows are
row-numbered errors (no traceback), and a launch (its dry run too) runs the pre-flight and refuses them
before anything is planned or sent; --skip-preflight is the escape."""

from __future__ import annotations

import json
import subprocess
import sys

from ftlaunch.core import preflight, spec


def make(tmp_path, data_name, content, task="sft", extra=""):
    (tmp_path / data_name).write_text(content)
    (tmp_path / "s.yaml").write_text(f"name: p\nmodel: a/b\ntask: {task}\ndataset:\n  path: {data_name}\n{extra}")
    return spec.load(tmp_path / "s.yaml")


def rows(*items) -> str:
    return "".join(json.dumps(i) + "\n" for i in items)


def errors_of(report) -> set[tuple[int | None, str]]:
    return {(p.row, p.message) for p in report.errors}


def test_wrong_types_are_row_numbered_errors_not_a_traceback(tmp_path):
    s = make(tmp_path, "d.jsonl", rows({"instruction": "fine", "output": "ok"},
                                       {"instruction": 12345, "output": "x"},
                                       {"instruction": "a", "output": ["not", "text"]},
                                       {"instruction": "a", "input": {"k": 1}, "output": "b"}))
    found = errors_of(preflight.check(s, lengths=False))
    assert found == {(2, "column 'instruction' must be a string, not a number"),
                     (3, "column 'output' must be a string, not a list"),
                     (4, "column 'input' must be a string, not an object")}
    # the full report (token lengths too) no longer raises on them
    assert not preflight.check(s, lengths=True).ok


def test_unknown_roles_and_non_text_content_are_refused(tmp_path):
    s = make(tmp_path, "d.jsonl", rows(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {"messages": [{"role": "user", "content": 7}, {"role": "assistant", "content": "yo"}]}))
    found = errors_of(preflight.check(s, lengths=False))
    assert found == {(2, 'message 1 has role "wizard"; use one of system, user, assistant, tool'),
                     (3, "message 1's content must be a string, not a number")}


def test_empty_csv_label_is_an_error_not_a_class(tmp_path):
    s = make(tmp_path, "d.csv", "text,label\ngood,pos\nbad,neg\nmeh,\n", task="classification")
    assert (4, "column 'label' is empty") in errors_of(preflight.check(s, lengths=False))


def test_oversized_and_deeply_nested_rows_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "MAX_ROW_CHARS", 1000)
    deep: object = "x"
    for _ in range(20):
        deep = [deep]
    s = make(tmp_path, "d.jsonl", rows({"instruction": "a" * 1001, "output": "b"},
                                       {"instruction": "a", "output": "b", "extra": deep}))
    found = errors_of(preflight.check(s, lengths=False))
    assert (1, "the row holds 1,002 characters of text (at most 1,000); split long documents into several rows "
               "(hyperparameters.max_length truncates each row anyway)") in found
    assert any(row == 2 and "nested" in message for row, message in found)


def test_launch_dry_run_refuses_bad_data_before_planning_and_skip_preflight_lets_it_through(tmp_path):
    (tmp_path / "d.jsonl").write_text(rows({"instruction": "a", "output": "b"}, {"instruction": 12345, "output": "x"}))
    (tmp_path / "s.yaml").write_text("name: p\nmodel: HuggingFaceTB/SmolLM2-135M-Instruct\ntask: sft\n"
                                     "dataset:\n  path: d.jsonl\n")
    base = [sys.executable, "-m", "ftlaunch", "--cloud", "vertex", "--gpu", "a100", "--dry-run", "--json"]
    refused = subprocess.run([*base, str(tmp_path / "s.yaml")], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert "d.jsonl:2: column 'instruction' must be a string, not a number" in refused.stderr
    assert "nothing was submitted" in refused.stderr and "Traceback" not in refused.stderr
    skipped = subprocess.run([*base, "--skip-preflight", str(tmp_path / "s.yaml")], capture_output=True, text=True,
                             timeout=120)
    assert skipped.returncode == 0, skipped.stderr
    assert json.loads(skipped.stdout)["request"]["backend"] == "vertex"


def test_non_utf8_bytes_are_row_numbered_errors_in_every_text_format(tmp_path):
    """validate used to replace latin-1 bytes silently (and a .json file raised a traceback); the trainer's
    loader refuses them, so the pre-flight names the line and byte."""
    good, bad = b'{"instruction": "a", "output": "b"}', b'{"instruction": "caf\xe9", "output": "b"}'
    cases = {"d.jsonl": (good + b"\n" + bad + b"\n", "sft", 2, 21),
             "d.json": (b"[" + good + b",\n " + bad + b"]", "sft", 2, 22),
             "d.csv": (b"text,label\ngood,pos\ncaf\xe9,neg\nbad,neg\n", "classification", 3, 4),
             "d.txt": (b"fine\ncaf\xe9\n", "cpt", 2, 4)}
    for name, (content, task, line, column) in cases.items():
        folder = tmp_path / name.replace(".", "-")
        folder.mkdir()
        (folder / name).write_bytes(content)
        (folder / "s.yaml").write_text(f"name: p\nmodel: a/b\ntask: {task}\ndataset:\n  path: {name}\n")
        report = preflight.check(spec.load(folder / "s.yaml"), lengths=False)
        assert [p.row for p in report.errors] == [line], name
        assert report.errors[0].message.startswith(f"byte 0xE9 at column {column} is not UTF-8"), name
        assert "iconv -f latin1 -t utf-8" in report.errors[0].message
