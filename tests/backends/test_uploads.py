"""Content-addressed inputs, the pure part: digests name a file or folder by its bytes, the digest cache in
$FTLAUNCH_HOME hashes a file again only when its size or mtime changes, and submit refuses to upload bytes
that changed after the plan named them. (The emulator tests of each backend show the reuse on the wire.)"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from ftlaunch.core import errors
from ftlaunch.backends import base


def test_digest_cache_hashes_once_per_size_and_mtime(tmp_path, ftlaunch_home):
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "a"}\n')
    cache = base.DigestCache()
    first = cache.sha256(data)
    cache.save()
    assert first == hashlib.sha256(data.read_bytes()).hexdigest()
    assert json.loads((ftlaunch_home / base.DIGEST_CACHE).read_text())[str(data)][2] == first

    # same size and mtime: the cache answers without reading the file (so it returns the old digest)
    st = data.stat()
    data.write_text('{"text": "b"}\n')
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert base.DigestCache().sha256(data) == first
    # a new mtime: hashed again
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert base.DigestCache().sha256(data) == hashlib.sha256(b'{"text": "b"}\n').hexdigest()


def test_an_unreadable_cache_only_costs_the_hashing(tmp_path, ftlaunch_home):
    ftlaunch_home.mkdir(parents=True)
    (ftlaunch_home / base.DIGEST_CACHE).write_text("not json")
    data = tmp_path / "d.txt"
    data.write_bytes(b"x")
    assert base.DigestCache().sha256(data) == hashlib.sha256(b"x").hexdigest()


def test_a_folder_digest_covers_names_and_bytes():
    one = base.folder_sha256({"a.txt": "1" * 64, "b/c.txt": "2" * 64})
    assert one == base.folder_sha256({"b/c.txt": "2" * 64, "a.txt": "1" * 64})  # order does not matter
    assert one != base.folder_sha256({"a2.txt": "1" * 64, "b/c.txt": "2" * 64})  # a renamed file does
    assert one != base.folder_sha256({"a.txt": "3" * 64, "b/c.txt": "2" * 64})  # so do its bytes


def test_place_inputs_names_destinations_by_digest_and_uploads_a_shared_file_once():
    info = {"kind": "file", "ref": "/d/train.jsonl", "name": "train.jsonl", "bytes": 3, "sha256": "ab" * 32}
    folder = {"kind": "dir", "ref": "/m", "files": ["config.json", "w/model.safetensors"], "bytes": 9,
              "file_sha256": {"config.json": "01" * 32, "w/model.safetensors": "02" * 32}, "sha256": "cd" * 32}
    refs, uploads, mounts = base.place_inputs({"train": info, "eval": dict(info), "model": folder},
                                              store="s3://b/p/inputs/", in_job=lambda ch, _: f"/job/{ch}")
    assert mounts == {"train": "s3://b/p/inputs/sha256-abababababababab/",
                      "eval": "s3://b/p/inputs/sha256-abababababababab/",
                      "model": "s3://b/p/inputs/sha256-cdcdcdcdcdcdcdcd/"}
    assert refs == {"train": "/job/train/train.jsonl", "eval": "/job/eval/train.jsonl", "model": "/job/model"}
    assert [u["destination"] for u in uploads] == [
        "s3://b/p/inputs/sha256-abababababababab/train.jsonl",
        "s3://b/p/inputs/sha256-cdcdcdcdcdcdcdcd/config.json",
        "s3://b/p/inputs/sha256-cdcdcdcdcdcdcdcd/w/model.safetensors"]
    assert uploads[2]["sha256"] == "02" * 32


def test_submit_refuses_bytes_that_changed_after_the_plan(tmp_path, ftlaunch_home):
    data = tmp_path / "train.jsonl"
    data.write_text("one\n")
    item = {"source": str(data), "destination": "s3://b/x", "sha256": base.DigestCache().sha256(data)}
    base.check_unchanged(item)  # unchanged: fine
    data.write_text("two, longer\n")
    with pytest.raises(errors.UserError, match="changed after the plan"):
        base.check_unchanged(item)


def test_uploaded_before_wants_same_size_and_same_recorded_digest(tmp_path):
    data = tmp_path / "d"
    data.write_bytes(b"abc")
    item = {"source": str(data), "destination": "s3://b/x", "sha256": "f" * 64}
    assert base.uploaded_before(item, 3, {})
    assert base.uploaded_before(item, 3, {"sha256": "f" * 64})
    assert not base.uploaded_before(item, 3, {"sha256": "e" * 64})
    assert not base.uploaded_before(item, 4, {})
    assert not base.uploaded_before(item, None, None)
    assert not base.uploaded_before({"content": "{}", "destination": "s3://b/spec.json"}, 2, {})
