"""What a person reads: user text printed verbatim, bare ftlaunch shows help, --help imports no spec model,
completion offers GPUs, clouds and job ids, compact tables in a pipe."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from ftlaunch import cli
from ftlaunch.core import term

TRICKY = "t[bold]x[/] :100: [/]"


def render(renderable) -> str:
    from rich.console import Console
    import io

    out = io.StringIO()
    Console(file=out, width=200).print(renderable)  # a default console: markup and emoji on
    return out.getvalue()


def test_markup_values_print_verbatim_on_any_console():
    assert TRICKY in render(term.markup("[bold]job[/] {}", TRICKY))
    assert TRICKY in render(term.plain(TRICKY))


def test_the_console_prints_strings_verbatim(capsys):
    term.console().print(f"row 100 of {TRICKY}")
    assert f"row 100 of {TRICKY}" in capsys.readouterr().out


def test_counts_have_units():
    assert term.count(4_884_480) == "4.88M" and term.count(7_615_616_512) == "7.62B" and term.count(96) == "96"


def test_bare_ftlaunch_prints_help_and_exits_0():
    result = CliRunner().invoke(cli.main_group, [])
    assert result.exit_code == 0 and "Commands:" in result.output and "estimate" in result.output


def test_lazy_commands_short_help_matches_the_commands():
    import click
    from click.utils import make_default_short_help

    ctx = click.Context(cli.main_group)
    for name, (_, _, short) in cli.LAZY_COMMANDS.items():
        command = cli.main_group.get_command(ctx, name)
        assert make_default_short_help(short, 70) == command.get_short_help_str(70), name


def test_help_and_version_import_no_pydantic():
    for flag in ("--help", "--version"):
        code = f"import sys; sys.argv=['ftlaunch','{flag}']\nfrom ftlaunch import cli\ntry: cli.main()\nexcept SystemExit: pass\n" \
               "print('pydantic' in sys.modules, 'ftlaunch.core.spec' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip().splitlines()[-1] == "False False", flag


def test_completion_for_gpus_clouds_and_jobs(tmp_path, monkeypatch):
    assert "a100" in cli.complete_gpus("a1") and "local,vertex" in cli.complete_clouds("local,ve")
    monkeypatch.setenv("FTLAUNCH_HOME", str(tmp_path))
    assert cli.complete_jobs("") == []


def test_prices_show_is_one_line_a_row():
    from ftlaunch.planning.catalog import prices

    result = CliRunner().invoke(cli.main_group, ["prices", "show"])
    assert result.exit_code == 0
    rows = prices.table(prices.load(), None, None)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == len(rows) + 1
    assert not any(line.endswith(" ") for line in lines)


def test_user_text_prints_verbatim_on_every_path(tmp_path, monkeypatch, capsys):
    """`[bold]`, `:100:` and `[/]` in a data path, a job's reason, sample prompts and answers, and a bench
    cell's reason: validate with a row number, the launch's data pre-flight, a dry run, ls/show/status,
    the before/after samples and the bench table all print them as written."""
    import json

    from ftlaunch.bench import report as bench_report
    from ftlaunch.core import jobs
    from ftlaunch.cli import report_text
    from ftlaunch.backends.base import JobHandle
    from ftlaunch.core import spec as spec_mod

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the length pass finds no tokenizer, at once
    data = tmp_path / "t[bold]x[" / "] :100: [" / "].jsonl"  # its path reads .../t[bold]x[/] :100: [/].jsonl
    data.parent.mkdir(parents=True)
    rows = [json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) for i in range(99)]
    data.write_text("\n".join(rows + ["{not json " + TRICKY]) + "\n")  # row 100 is broken
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: demo\nmodel: Qwen/Qwen2.5-0.5B\ndataset:\n  path: {json.dumps(str(data))}\n")
    assert TRICKY in str(data)

    def invoke(*args: str) -> str:
        result = CliRunner().invoke(cli.main_group, list(args), catch_exceptions=False)
        return result.output + (result.stderr if result.stderr_bytes is not None else "")

    # validate: the file and row of the problem
    shown = invoke("validate", str(spec))
    assert f"{data}:100" in shown, shown
    # the launch's pre-flight refuses the broken row, naming it
    shown = invoke("--cloud", "local", "--dry-run", str(spec))
    assert f"{data}:100" in shown, shown
    # a dry run with the data fixed: the plan and request name the file as written
    data.write_text("\n".join(rows) + "\n")
    shown = invoke("--cloud", "local", "--runtime", "process", "--dry-run", str(spec))
    assert "Dry run: nothing was submitted" in shown and "job demo-" in shown
    assert str(data) in shown.replace("\\\\", "\\"), shown

    # ls, show and status of a failed job whose recorded reason is user text
    job_dir = tmp_path / "jobs" / "demo-20260101-000000-aaaa"
    job_dir.mkdir(parents=True)
    (job_dir / "job.log").write_text(f"Traceback (most recent call last):\n  File \"x\"\nValueError: {TRICKY}\n")
    (job_dir / "supervisor.json").write_text(json.dumps({"pid": 1, "start_ticks": 0}))
    (job_dir / "exit.json").write_text(json.dumps({"exit_code": 1, "reason": None}))
    handle = JobHandle(backend="local", job_name=job_dir.name, provider_id=str(job_dir),
                       output_uri=str(job_dir / "out"), extra={"log_file": str(job_dir / "job.log"),
                                                               "runtime": "process"})
    store = jobs.JobStore()
    store.add(handle=handle, spec=spec_mod.load(str(spec)), image=None, state="RUNNING", predicted_cost=0.0)
    store.close()
    for command in ("status", "show"):
        shown = invoke(command, job_dir.name)
        assert f"ValueError: {TRICKY}" in shown, (command, shown)
    assert f"{job_dir.name}  local    FAILED" in invoke("ls")  # ls has no reason column

    # the before/after samples of a finished job, printed on the console as `show`'s results are
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"eval_loss": 1.0, "samples": [
        {"prompt": TRICKY, "before": f"before {TRICKY}", "after": f"after {TRICKY}"}]}))
    term.console().print(report_text.results(out))
    printed = capsys.readouterr().out
    for text in (TRICKY, f"before {TRICKY}", f"after {TRICKY}"):
        assert repr(text) in printed, printed

    # the bench table: a failed cell's reason
    cell = {"cell": "lora", "technique": "lora", "cloud": "local", "gpu": None, "state": "FAILED",
            "reason": TRICKY}
    term.console().print(bench_report.terminal_table("eval loss", False, [cell]))
    assert f"FAILED: {TRICKY}" in capsys.readouterr().out
