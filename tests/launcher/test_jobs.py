"""Job records: round trip, prefix look-up, and many processes recording at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from ftlaunch.core import errors, jobs, spec
from ftlaunch.backends.base import JobHandle

SPEC = spec.loads("name: demo\nmodel: org/model\ndataset:\n  path: d.jsonl\n")


def _record(store: jobs.JobStore, name: str) -> None:
    handle = JobHandle(backend="local", job_name=name, provider_id=f"/jobs/{name}", output_uri=f"/out/{name}")
    store.add(handle=handle, spec=SPEC, image=None, state="PENDING", predicted_cost=1.5)


def test_round_trip_and_prefix_lookup(tmp_path):
    store = jobs.JobStore(tmp_path / "jobs.db")
    _record(store, "demo-20260101-000000-aaaa")
    _record(store, "demo-20260101-000001-bbbb")
    got = store.get("demo-20260101-000001")
    assert got.id == "demo-20260101-000001-bbbb" and got.handle.output_uri == "/out/demo-20260101-000001-bbbb"
    assert got.predicted_cost == 1.5 and got.spec_hash == SPEC.digest()
    with pytest.raises(errors.UserError, match="matches 2 jobs"):
        store.get("demo-2026")
    with pytest.raises(errors.UserError, match="no job"):
        store.get("nothing")
    with pytest.raises(errors.UserError, match="already recorded"):
        _record(store, "demo-20260101-000000-aaaa")
    store.update("demo-20260101-000000-aaaa", state="SUCCEEDED", actual_cost=0.5)
    assert store.get("demo-20260101-000000-aaaa").state == "SUCCEEDED"
    assert store.latest().id == "demo-20260101-000001-bbbb"


def _writer(args: tuple[str, int]) -> int:
    path, worker = args
    store = jobs.JobStore(Path(path))
    for i in range(25):
        _record(store, f"w{worker}-{i}")
        store.update(f"w{worker}-{i}", state="RUNNING")
    store.close()
    return worker


def test_concurrent_launches_lose_no_record(tmp_path):
    path = tmp_path / "jobs.db"
    jobs.JobStore(path).close()
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        assert sorted(pool.map(_writer, [(str(path), w) for w in range(6)])) == list(range(6))
    records = jobs.JobStore(path).list(limit=1000)
    assert len(records) == 150 and all(r.state == "RUNNING" for r in records)
