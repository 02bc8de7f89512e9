"""Pre-flight: broken data gives row-numbered problems (no traceback), and good data a token histogram,
truncation share, label balance, duplicates and a total token count."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from ftlaunch.core import preflight, spec


class WordTokenizer:
    """Counts words as tokens, so the tests do not depend on a model."""

    chat_template = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def make(tmp_path, data_name, content, task="sft", extra=""):
    (tmp_path / data_name).write_text(content)
    (tmp_path / "s.yaml").write_text(f"name: p\nmodel: a/b\ntask: {task}\ndataset:\n  path: {data_name}\n{extra}")
    return spec.load(tmp_path / "s.yaml")


def test_broken_jsonl_gives_row_numbered_errors(tmp_path):
    lines = [json.dumps({"instruction": "a b", "output": "c"}),
             '{"instruction": "x", "output": ',  # cut off
             json.dumps({"instruction": "q"}),  # no output
             json.dumps({"instruction": "q", "output": "  "}),  # empty
             "[1, 2]"]
    s = make(tmp_path, "d.jsonl", "\n".join(lines) + "\n")
    report = preflight.check(s, tokenizer=WordTokenizer())
    assert not report.ok
    found = {(p.row, p.message.split(" (")[0]) for p in report.errors}
    assert (2, "not valid JSON") in found
    assert (3, "missing column 'output'") in found
    assert (4, "column 'output' is empty") in found
    assert any(p.row == 5 and "JSON object" in p.message for p in report.errors)
    out = io.StringIO()
    preflight.print_report(Console(file=out, width=200), report)
    text = out.getvalue()
    assert "d.jsonl:2:" in text and "Traceback" not in text


def test_csv_with_a_short_row_and_mapped_columns(tmp_path):
    s = make(tmp_path, "r.csv", "review,sentiment\ngood film,pos\nbad,\nawful film,neg\nonly-one-field\n",
             task="classification", extra="  columns: {text: review, label: sentiment}\n")
    report = preflight.check(s, tokenizer=WordTokenizer())
    rows = {p.row: p.message for p in report.errors}
    assert "column 'label' is empty" in rows[3]
    assert "fields" in rows[5]
    assert report.label_counts == {"neg": 1, "pos": 1}


def test_lengths_truncation_histogram_duplicates_and_labels(tmp_path):
    rows = [{"text": "word " * 5, "label": "a"}] * 3 + [{"text": "word " * 40, "label": "b"}] + \
           [{"text": f"w{i} " * 10, "label": "a"} for i in range(30)]
    s = make(tmp_path, "c.jsonl", "".join(json.dumps(r) + "\n" for r in rows), task="classification",
             extra="hyperparameters: {max_length: 20}\n")
    report = preflight.check(s, tokenizer=WordTokenizer())
    assert report.ok
    assert report.rows == 34 and report.truncated_rows == [4]
    assert report.truncation_percent == pytest.approx(100 / 34)
    assert report.duplicate_rows == [(2, 1), (3, 1)]
    assert report.label_counts == {"a": 33, "b": 1}
    assert any("imbalanced" in p.message for p in report.warnings)
    assert sum(c for _, _, c in report.histogram) == 34 and report.histogram[0] == (0, 31, 33)
    assert report.total_tokens == 3 * 5 + 20 + 30 * 10


def test_txt_for_cpt_and_remote_data_is_skipped(tmp_path):
    s = make(tmp_path, "corpus.txt", "one two three\n\nfour five\n", task="cpt")
    report = preflight.check(s, tokenizer=WordTokenizer())
    assert report.ok and report.rows == 2 and report.total_tokens == 5 and report.format == "text"
    remote = spec.loads("name: p\nmodel: a/b\ndataset: {path: 's3://bucket/train.jsonl'}\n")
    assert preflight.check(remote).checked is False


def test_wrong_columns_say_how_to_map_them(tmp_path):
    s = make(tmp_path, "d.jsonl", json.dumps({"question": "q", "answer": "a"}) + "\n")
    report = preflight.check(s, tokenizer=WordTokenizer())
    [problem] = report.errors
    assert "dataset.columns" in problem.message and "question" in problem.message


def test_real_tokenizer_counts_chat_rendered_rows(tmp_path, tiny_lm):
    s = make(tmp_path, "d.jsonl", json.dumps({"instruction": "Where is Paris?", "output": "France"}) + "\n")
    s = s.model_copy(update={"model": str(tiny_lm)})
    report = preflight.check(s)
    assert report.ok and report.lengths[0] > 5 and "tokenizer" in report.tokenizer
