"""What a person reads: user text printed verbatim, bare ftlaunch shows help, --help imports no spec model,
completion offers GPUs, clouds and job ids, compact tables in a pipe."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from ftlaunch import cli, term

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
               "print('pydantic' in sys.modules, 'ftlaunch.spec' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip().splitlines()[-1] == "False False", flag


def test_completion_for_gpus_clouds_and_jobs(tmp_path, monkeypatch):
    assert "a100" in cli.complete_gpus("a1") and "local,vertex" in cli.complete_clouds("local,ve")
    monkeypatch.setenv("FTLAUNCH_HOME", str(tmp_path))
    assert cli.complete_jobs("") == []


def test_prices_show_is_one_line_a_row():
    from ftlaunch.catalog import prices

    result = CliRunner().invoke(cli.main_group, ["prices", "show"])
    assert result.exit_code == 0
    rows = prices.table(prices.load(), None, None)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == len(rows) + 1
    assert not any(line.endswith(" ") for line in lines)
