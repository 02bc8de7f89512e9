"""The CLI through click's runner and as a real subprocess: forms, errors, dry runs, start-up imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftlaunch import cli

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart.yaml"
HEAVY = ("torch", "transformers", "peft", "trl", "datasets", "boto3", "botocore", "sagemaker",
         "google.cloud.aiplatform", "google.cloud.storage", "azure.ai.ml", "azure.identity", "sky")


def run(*args: str, **kwargs):
    return CliRunner().invoke(cli.main_group, list(args), catch_exceptions=False, **kwargs)


def test_help_lists_the_commands():
    result = run("--help")
    assert result.exit_code == 0
    for name in ("launch", "validate", "schema", "init", "techniques", "status", "logs", "cancel", "fetch",
                 "ls", "show"):
        assert name in result.output


def test_bare_form_and_launch_subcommand_render_the_same_request():
    bare = run("--cloud", "local", "--dry-run", "--json", str(QUICKSTART))
    sub = run("launch", "--cloud", "local", "--dry-run", "--json", str(QUICKSTART))
    assert bare.exit_code == sub.exit_code == 0, bare.output + sub.output
    a, b = json.loads(bare.output), json.loads(sub.output)
    assert a["request"]["payload"]["spec"] == b["request"]["payload"]["spec"]
    assert set(a) == {"plan", "request", "failover", "not_configured"}


def test_dry_run_json_is_exactly_what_render_returns():
    from ftlaunch import backends
    from ftlaunch.planning import plan
    from ftlaunch.core import spec

    out = json.loads(run("--dry-run", "--json", str(QUICKSTART)).output)
    name = out["request"]["job_name"]
    again = backends.get("local").render(plan.make(spec.load(QUICKSTART), name=name)).to_json()
    assert out["request"] == again


def test_options_become_spec_overrides():
    out = json.loads(run("--dry-run", "--json", "--set", "hyperparameters.max_steps=3", str(QUICKSTART)).output)
    assert out["request"]["payload"]["spec"]["hyperparameters"]["max_steps"] == 3


def test_spec_defaults_to_ftlaunch_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.main_group, ["--dry-run"])
    assert result.exit_code == 2
    assert "ftlaunch.yaml does not exist" in result.output and "ftlaunch init" in result.output


@pytest.mark.parametrize("body,needle", [
    ("name: x\nmodel: a/b\ndataset:\n  path: d.jsonl\nhyperparamters:\n  epochs: 1\n", "did you mean 'hyperparameters'"),
    ("name: x\nmodel: a/b\ndataset:\n  path: d.jsonl\nhyperparameters:\n  epochs: many\n", "hyperparameters.epochs"),
    ("name: x\nmodel: a/b\ndataset: {path: d.jsonl\n", "YAML syntax error"),
])
def test_mistakes_exit_2_with_one_message_and_no_traceback(tmp_path, body, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    proc = subprocess.run([sys.executable, "-m", "ftlaunch", "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert str(path) in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_validate_preflights_local_data_with_row_numbers(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n'
                    '{"instruction": "", "output": "d"}\n')
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(f"name: x\nmodel: {QUICKSTART.parent / 'data'}\ndataset:\n  path: train.jsonl\n  format: alpaca\n")
    proc = subprocess.run([sys.executable, "-m", "ftlaunch", "validate", "--no-data", str(spec_file)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "ftlaunch", "validate", str(spec_file)], capture_output=True, text=True)
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "train.jsonl:2" in out and "Traceback" not in out


def test_unsupported_capability_is_one_readable_error():
    result = CliRunner().invoke(cli.main_group, ["--cloud", "local", "--nodes", "2", "--dry-run", str(QUICKSTART)])
    assert result.exit_code == 2
    assert "multi_node" in result.output and "skypilot" in result.output


def test_init_writes_a_valid_spec_and_never_overwrites(tmp_path):
    target = tmp_path / "ftlaunch.yaml"
    assert run("init", "--use-case", "classification", "--size", "medium", "-o", str(target)).exit_code == 0
    first = target.read_text()
    assert "task: classification" in first
    result = CliRunner().invoke(cli.main_group, ["init", "-o", str(target)])
    assert result.exit_code == 2 and "--force" in result.output
    assert target.read_text() == first
    missing = run("validate", str(target))  # the starter names data/labelled.csv, which is not there yet
    assert missing.exit_code == 2 and "dataset.path" in missing.output and "data/labelled.csv" in missing.output
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "labelled.csv").write_text("text,label\n")
    assert run("validate", "--no-data", str(target)).exit_code == 0


def test_techniques_table_covers_every_technique_and_task():
    rows = json.loads(run("techniques", "--json").output)
    assert [r["technique"] for r in rows] == ["full", "lora", "dora", "qlora", "ia3", "prefix", "prompt",
                                               "ptuning", "adapter"]
    assert set(rows[0]["tasks"]) == {"sft", "cpt", "classification", "reward", "dpo", "rl"}


def test_techniques_shows_what_differs_between_them():
    """Trainable share, peak memory and typical use per technique: columns that tell them apart, not a
    table of "yes"."""
    rows = {r["technique"]: r for r in json.loads(run("techniques", "--json").output)}
    assert rows["full"]["trainable_percent"] == 100.0
    assert rows["prompt"]["trainable_percent"] < rows["ia3"]["trainable_percent"] < rows["lora"]["trainable_percent"]
    assert rows["qlora"]["peak_gb"] < rows["lora"]["peak_gb"] < rows["full"]["peak_gb"]
    assert len({r["trainable_percent"] for r in rows.values()}) >= 7 and len({r["peak_gb"] for r in rows.values()}) >= 6
    text = run("techniques").output
    header = text.splitlines()[1].split()
    assert header[:4] == ["technique", "trainable", "peak", "GB"] and "typical" in header
    full = next(l for l in text.splitlines() if l.split()[:1] == ["full"])
    assert "100%" in full and " yes " not in text


def test_schema_is_json():
    assert json.loads(run("schema").output)["title"] == "ftlaunch spec"


def test_secrets_never_appear_in_a_dry_run(tmp_path, monkeypatch):
    value = "hf_live_value_that_must_not_leak_123"
    monkeypatch.setenv("HF_TOKEN", value)
    out = run("--dry-run", "--json", "--set", "secrets=[HF_TOKEN]", str(QUICKSTART)).output
    assert value not in out
    assert json.loads(out)["request"]["secrets"] == ["HF_TOKEN"]


def test_help_and_dry_run_import_no_heavy_modules():
    # google.cloud itself is an empty namespace package some SDKs preload at interpreter start (.pth)
    code = (
        "import sys\n"
        "from ftlaunch import cli\n"
        "for args in (['--help'], ['--dry-run', '--json', %r], ['techniques'], ['validate', '--no-data', %r]):\n"
        "    try:\n"
        "        cli.main_group(args, standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m in %r))\n"
    ) % (str(QUICKSTART), str(QUICKSTART), HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_console_script_runs_as_a_subprocess():
    exe = Path(sys.executable).with_name("ftlaunch")
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "ftlaunch" in proc.stdout
