"""The wheel carries every package and its data files, and works when installed outside the checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """The wheel and everything the build printed (not -q: pip would hide the build backend's warnings)."""
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-w", str(out), str(REPO)], check=True, capture_output=True, text=True)
    [whl] = out.glob("ftlaunch-*.whl")
    return whl, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel(built) -> Path:
    return built[0]


def test_build_is_quiet(built):
    """Every folder that ships data is a declared package: setuptools says nothing about ignoring one."""
    _, printed = built
    assert "would be ignored" not in printed and "is absent from the `packages`" not in printed, printed


def test_wheel_carries_every_tracked_data_file(wheel):
    """Each non-Python file git tracks under the package folders is in the wheel, at its installed path."""
    roots = {"launcher/": "ftlaunch/", "backends/": "ftlaunch/backends/", "containers/": "ftlaunch/containers/",
             "templates/": "ftlaunch/templates/"}
    tracked = subprocess.run(["git", "ls-files", *roots], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    data = [p for p in tracked if not p.endswith(".py")]
    assert data, "git ls-files found no data files"
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in data:
        root = next(r for r in roots if path.startswith(r))
        assert roots[root] + path[len(root):] in names, path


def test_wheel_lists_packages_and_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("ftlaunch/cli/__init__.py", "ftlaunch/backends/local/backend.py", "ftlaunch/backends/local/supervise.py",
                     "ftlaunch/containers/trainer/__main__.py", "ftlaunch/templates/specs/instruction.yaml.j2"):
        assert required in names, required
    assert any(n.startswith("ftlaunch/planning/catalog/data/") and n.endswith(".csv") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ftlaunch = ftlaunch.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_wheel_runs_from_its_own_files(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import ftlaunch, sys\n"
            "from ftlaunch import cli; from ftlaunch.cli import starters\n"
            "assert ftlaunch.__file__.startswith(sys.argv[1]), ftlaunch.__file__\n"
            "starters.render(use_case='chat', size='small')\n"
            "cli.main_group(['techniques'], standalone_mode=False)\n")
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "lora" in proc.stdout
