"""`fetch` never deletes or overwrites a user's files: new, empty and earlier-fetched folders only; `.` and
`..` handled; files the manifest does not list reported; a refused fetch leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftlaunch import cli
from ftlaunch.core import errors, jobs, manifest, spec
from ftlaunch.backends import base
from ftlaunch.backends.base import JobHandle

SPEC = spec.loads("name: demo\nmodel: org/model\ndataset:\n  path: d.jsonl\n")


def outputs(folder: Path, loss: str = "0.5") -> Path:
    """A complete job output folder, as the trainer leaves it: files, then manifest.json last."""
    (folder / "weights").mkdir(parents=True)
    (folder / "weights" / "adapter.safetensors").write_bytes(b"w" * 100)
    (folder / "summary.json").write_text(json.dumps({"loss": loss}))
    manifest.write(folder)
    return folder


def record_local_job(source: Path, name: str = "demo-20260101-000000-aaaa") -> str:
    """Records a finished local job whose outputs are `source` (what launch records, minus the training)."""
    handle = JobHandle(backend="local", job_name=name, provider_id=str(source.parent / "job"),
                       output_uri=str(source), extra={"log_file": str(source.parent / "job.log"),
                                                      "runtime": "process"})
    store = jobs.JobStore()
    store.add(handle=handle, spec=SPEC, image=None, state="SUCCEEDED", predicted_cost=0.0)
    store.close()
    return name


def run(*args: str, cwd: Path | None = None):
    old = os.getcwd()
    if cwd:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(cli.main_group, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def copier(source: Path):
    return lambda staging: shutil.copytree(source, staging, dirs_exist_ok=True)


def test_fetch_into_new_then_again_into_the_same_folder(tmp_path):
    source = outputs(tmp_path / "out")
    dest = tmp_path / "fetched"
    base.fetch_verified(dest, copier(source), job="j1")
    assert snapshot(dest)["summary.json"] == b'{"loss": "0.5"}'
    marker = json.loads((dest / base.FETCH_MARKER).read_text())
    assert marker["job"] == "j1" and "weights/adapter.safetensors" in marker["files"]

    # an earlier fetch's own folder may be refreshed with new outputs
    shutil.rmtree(source)
    outputs(source, loss="0.25")
    (source / "weights" / "adapter.safetensors").unlink()
    (source / "weights" / "model.safetensors").write_bytes(b"m")
    manifest.write(source)
    base.fetch_verified(dest, copier(source), job="j1")
    got = snapshot(dest)
    assert got["summary.json"] == b'{"loss": "0.25"}' and "weights/model.safetensors" in got
    assert "weights/adapter.safetensors" not in got
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left over


def test_a_user_file_in_dest_is_never_touched(tmp_path):
    source = outputs(tmp_path / "out")
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("precious")
    with pytest.raises(errors.UserError, match="not empty and was not written by `ftlaunch fetch`"):
        base.fetch_verified(dest, copier(source))
    assert snapshot(dest) == {"notes.txt": b"precious"}

    # a file the user added to (or changed in) a fetched folder blocks a refresh too
    fetched = tmp_path / "fetched"
    base.fetch_verified(fetched, copier(source))
    (fetched / "summary.json").write_text("edited")
    (fetched / "mine.txt").write_text("added")
    before = snapshot(fetched)
    with pytest.raises(errors.UserError) as info:
        base.fetch_verified(fetched, copier(source))
    assert "mine.txt" in info.value.message and "summary.json" in info.value.message
    assert snapshot(fetched) == before


def test_a_refused_fetch_leaves_nothing_behind(tmp_path):
    source = outputs(tmp_path / "out")
    (source / "summary.json").write_text("tampered")
    with pytest.raises(errors.UserError, match="do not match manifest.json"):
        base.fetch_verified(tmp_path / "dest", copier(source))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(errors.UserError):
        base.fetch_verified(empty, copier(source))
    assert list(empty.iterdir()) == []


def test_extra_files_are_reported_not_verified(tmp_path):
    source = outputs(tmp_path / "out")
    (source / "planted.py").write_text("print('hi')")
    dest = base.fetch_verified(tmp_path / "dest", copier(source))
    assert base.unlisted(dest, manifest.verify(dest)) == ["planted.py"]


def test_cli_fetch_dot_dotdot_and_non_empty(tmp_path):
    source = outputs(tmp_path / "out")
    job = record_local_job(source)
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    parent_before = sorted(p.name for p in tmp_path.iterdir())

    for dest in (".", "..", str(work)):
        result = run("fetch", job, "--dest", dest, cwd=work)
        assert result.exit_code == 2, result.output
        assert "not empty" in result.output and "Traceback" not in result.output
    assert (work / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == parent_before
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt"]

    # `.` that is empty is filled in place
    (work / "keep.txt").unlink()
    result = run("fetch", job, "--dest", ".", cwd=work)
    assert result.exit_code == 0, result.output
    assert "2 files verified" in result.output and (work / "summary.json").exists()
    # and can be fetched into again (it holds only what fetch wrote)
    assert run("fetch", job, "--dest", ".", cwd=work).exit_code == 0


def test_cli_fetch_warns_about_unlisted_files(tmp_path):
    source = outputs(tmp_path / "out")
    (source / "extra.bin").write_bytes(b"x")
    job = record_local_job(source)
    result = run("fetch", job, "--dest", str(tmp_path / "d"))
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # as printed, without the console's line wrapping
    assert "2 files verified" in said
    assert "1 file(s) not listed in manifest.json, so not verified: extra.bin" in said


def test_cli_fetch_into_a_file_is_refused(tmp_path):
    source = outputs(tmp_path / "out")
    job = record_local_job(source)
    target = tmp_path / "a-file"
    target.write_text("mine")
    result = run("fetch", job, "--dest", str(target))
    assert result.exit_code == 2 and "is a file" in result.output
    assert target.read_text() == "mine"


@pytest.mark.parametrize("under", ["jobs", "jobs/other"])
def test_output_path_inside_the_job_records_is_refused_at_plan_time(tmp_path, ftlaunch_home, under):
    (tmp_path / "d.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    (tmp_path / "spec.yaml").write_text(f"name: demo\nmodel: org/model\ndataset:\n  path: d.jsonl\n"
                                        f"output:\n  path: {ftlaunch_home / under}\n")
    result = run("--cloud", "local", "--runtime", "process", "--dry-run", str(tmp_path / "spec.yaml"))
    assert result.exit_code == 2, result.output
    assert "output.path" in result.output and "inside ftlaunch's job records" in result.output
    assert not (ftlaunch_home / "jobs").exists()
