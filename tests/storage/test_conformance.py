"""One conformance suite, run against every storage backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clinvault.errors import InvalidInputError, NotFoundError
from clinvault.storage import LocalStorage, MemoryStorage, Storage, open_storage

Factory = Callable[[], Storage]


@pytest.fixture(params=["local", "memory"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "store")
    else:
        yield MemoryStorage()


def test_written_object_reads_back_whole_and_by_range(storage: Storage) -> None:
    data = bytes(range(256)) * 10_000
    with storage.writer("backups/a/part.bin") as out:
        for i in range(0, len(data), 7777):
            out.write(data[i : i + 7777])
    assert storage.read_bytes("backups/a/part.bin") == data
    assert b"".join(storage.read("backups/a/part.bin", 1000, 5000)) == data[1000:6000]
    assert b"".join(storage.read("backups/a/part.bin", len(data) - 10)) == data[-10:]
    assert b"".join(storage.read("backups/a/part.bin", len(data) + 5)) == b""
    assert storage.stat("backups/a/part.bin").size == len(data)


def test_failed_write_leaves_nothing_and_keeps_previous_object(storage: Storage) -> None:
    storage.write_bytes("k/obj", b"old")
    with pytest.raises(RuntimeError), storage.writer("k/obj") as out:
        out.write(b"new partial")
        raise RuntimeError("boom")
    assert storage.read_bytes("k/obj") == b"old"
    with pytest.raises(RuntimeError), storage.writer("k/other") as out:
        out.write(b"partial")
        raise RuntimeError("boom")
    assert not storage.exists("k/other")
    assert [i.key for i in storage.list("k/")] == ["k/obj"]


def test_list_is_sorted_and_limited_to_prefix(storage: Storage) -> None:
    for key in ["b/2", "a/1", "b/1", "bb/1", "b/sub/3"]:
        storage.write_bytes(key, key.encode())
    assert [i.key for i in storage.list("b/")] == ["b/1", "b/2", "b/sub/3"]
    assert [i.key for i in storage.list()] == ["a/1", "b/1", "b/2", "b/sub/3", "bb/1"]
    assert list(storage.list("missing/")) == []


def test_delete_and_delete_prefix(storage: Storage) -> None:
    for key in ["x/1", "x/2", "x/y/3", "z/1"]:
        storage.write_bytes(key, b"1")
    storage.delete("x/1")
    storage.delete("x/1")
    assert not storage.exists("x/1")
    assert storage.delete_prefix("x/") == 2
    assert [i.key for i in storage.list()] == ["z/1"]


def test_missing_object_is_not_found(storage: Storage) -> None:
    with pytest.raises(NotFoundError):
        storage.stat("nope/x")
    with pytest.raises(NotFoundError):
        storage.read_bytes("nope/x")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a/b/", "sp ace", "a\\b"])
def test_unsafe_keys_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(InvalidInputError):
        storage.write_bytes(key, b"x")


def test_local_storage_never_writes_outside_root(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    with pytest.raises(InvalidInputError):
        storage.write_bytes("../escape", b"x")
    assert not (tmp_path / "escape").exists()


def test_local_write_is_visible_only_after_commit(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    with storage.writer("a/b") as out:
        out.write(b"data")
        assert not (tmp_path / "root" / "a" / "b").exists()
        assert list(storage.list()) == []
    assert (tmp_path / "root" / "a" / "b").read_bytes() == b"data"


def test_open_storage_by_url(tmp_path: Path) -> None:
    assert isinstance(open_storage((tmp_path / "s").as_uri()), LocalStorage)
    assert isinstance(open_storage("memory://"), MemoryStorage)
    with pytest.raises(Exception, match="unsupported storage URL"):
        open_storage("ftp://host/x")
