"""Downloading a backup: one deterministic tar, resumable with Range and If-Range."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator

import pytest

from clinvault.catalog.models import AuditOutcome
from clinvault.services.download import ByteRange, open_download
from clinvault.services.queries import get_backup
from clinvault.storage.base import Storage
from tests.api_ops.conftest import Ops

pytestmark = pytest.mark.pg


def _download(ops: Ops, backup_id: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    answer = ops.admin.get(f"/api/v1/backup/{backup_id}/download", headers=headers)
    return answer.status_code, dict(answer.headers), answer.content


def test_full_download_unpacks_to_the_bundle_with_matching_checksums(ops: Ops) -> None:
    result = ops.backup(name="nightly")["result"]
    status, headers, body = _download(ops, result["backup_id"])
    assert status == 200
    assert int(headers["content-length"]) == len(body)
    assert headers["etag"] == f'"{result["checksum"]}"'
    assert headers["accept-ranges"] == "bytes"
    assert headers["content-type"] == "application/x-tar"
    assert 'filename="nightly.tar"' in headers["content-disposition"]

    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        members = tar.getmembers()
        contents = {m.name: tar.extractfile(m).read() for m in members}  # type: ignore[union-attr]
    assert members[0].name == "nightly/manifest.json"
    assert all(m.mode == 0o644 and m.uid == 0 and m.gid == 0 for m in members)
    manifest_bytes = contents["nightly/manifest.json"]
    assert hashlib.sha256(manifest_bytes).hexdigest() == result["checksum"]
    manifest = json.loads(manifest_bytes)
    assert [m.name for m in members[1:]] == [f"nightly/{p['name']}" for p in manifest["parts"]]
    for part in manifest["parts"]:
        data = contents[f"nightly/{part['name']}"]
        assert len(data) == part["compressed_size"]
        assert hashlib.sha256(data).hexdigest() == part["sha256"]

    again = _download(ops, result["backup_id"])[2]
    assert again == body  # deterministic

    downloads = ops.events("backup.download")
    assert len(downloads) == 2
    assert all(e.outcome is AuditOutcome.SUCCESS for e in downloads)
    assert downloads[0].actor_name == "Ada Admin"
    assert downloads[0].details["size"] == len(body)


def test_interrupted_download_resumes_with_range_and_if_range(ops: Ops) -> None:
    result = ops.backup()["result"]
    url = f"/api/v1/backup/{result['backup_id']}/download"
    full = ops.admin.get(url).content

    received = bytearray()
    with ops.admin.stream("GET", url) as stream:
        etag = stream.headers["etag"]
        for chunk in stream.iter_bytes(chunk_size=64 * 1024):
            received += chunk
            if len(received) >= len(full) // 2:
                break  # the connection drops half way
    assert 0 < len(received) < len(full)

    resumed = ops.admin.get(url, headers={"Range": f"bytes={len(received)}-", "If-Range": etag})
    assert resumed.status_code == 206
    assert resumed.headers["content-range"] == f"bytes {len(received)}-{len(full) - 1}/{len(full)}"
    assert int(resumed.headers["content-length"]) == len(full) - len(received)
    joined = bytes(received) + resumed.content
    assert joined == full
    with tarfile.open(fileobj=io.BytesIO(joined), mode="r:") as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile(names[0]).read())  # type: ignore[union-attr]
        for part, name in zip(manifest["parts"], names[1:], strict=True):
            data = tar.extractfile(name).read()  # type: ignore[union-attr]
            assert hashlib.sha256(data).hexdigest() == part["sha256"]

    ranges = [e.details for e in ops.events("backup.download")]
    assert ranges[-1]["start"] == len(received)
    assert ranges[-1]["end"] == len(full) - 1


def test_ranges_slices_stale_validators_and_unsatisfiable_ranges(ops: Ops) -> None:
    result = ops.backup(type="database", level=1)["result"]
    url = f"/api/v1/backup/{result['backup_id']}/download"
    full = ops.admin.get(url).content
    size = len(full)

    middle = ops.admin.get(url, headers={"Range": "bytes=100-1123"})
    assert middle.status_code == 206
    assert middle.content == full[100:1124]
    suffix = ops.admin.get(url, headers={"Range": "bytes=-700"})
    assert suffix.status_code == 206 and suffix.content == full[-700:]
    beyond_end = ops.admin.get(url, headers={"Range": f"bytes=10-{size * 2}"})
    assert beyond_end.status_code == 206 and beyond_end.content == full[10:]

    stale = ops.admin.get(url, headers={"Range": "bytes=500-", "If-Range": '"not-this-one"'})
    assert stale.status_code == 200
    assert stale.content == full
    weak = ops.admin.get(
        url, headers={"Range": "bytes=500-", "If-Range": f"W/{stale.headers['etag']}"}
    )
    assert weak.status_code == 200

    outside = ops.admin.get(url, headers={"Range": f"bytes={size + 10}-"})
    assert outside.status_code == 416
    assert outside.headers["content-range"] == f"bytes */{size}"
    assert outside.headers["content-type"].startswith("application/problem+json")
    backwards = ops.admin.get(url, headers={"Range": "bytes=9-3"})
    assert backwards.status_code == 416
    refused = [e for e in ops.events("backup.download") if e.outcome is AuditOutcome.FAILURE]
    assert len(refused) == 2

    other_unit = ops.admin.get(url, headers={"Range": "items=0-1"})
    assert other_unit.status_code == 200 and other_unit.content == full
    assert ops.auditor.get(url).status_code == 403


class _CountingStorage(Storage):
    """Wraps a storage and counts the bytes read from each object."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.url = inner.url
        self.read_bytes_by_key: dict[str, int] = {}

    def writer(self, key: str):  # type: ignore[no-untyped-def]
        return self.inner.writer(key)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        for chunk in self.inner.read(key, offset, length):
            self.read_bytes_by_key[key] = self.read_bytes_by_key.get(key, 0) + len(chunk)
            yield chunk

    def stat(self, key: str):  # type: ignore[no-untyped-def]
        return self.inner.stat(key)

    def list(self, prefix: str = ""):  # type: ignore[no-untyped-def]
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def test_a_range_reads_only_the_slices_it_covers(ops: Ops) -> None:
    result = ops.backup()["result"]
    row = get_backup(ops.ctx, result["backup_id"])
    counting = _CountingStorage(ops.ctx.storage)
    download = open_download(counting, row)
    assert counting.read_bytes_by_key == {}  # the layout and size need no object read

    whole = b"".join(download.stream())
    assert len(whole) == download.size
    counting.read_bytes_by_key.clear()
    tail = b"".join(download.stream(ByteRange(download.size - 3000, download.size - 1)))
    assert tail == whole[-3000:]
    assert sum(counting.read_bytes_by_key.values()) <= 3000
    assert not any(
        key.endswith(("database.dump.zst", "files.tar.zst")) for key in counting.read_bytes_by_key
    )
