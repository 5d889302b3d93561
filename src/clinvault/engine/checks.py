"""Re-reading a bundle against its manifest: every part, every file, every audit line.

Each part is read once: the compressed bytes are hashed as they stream by, decompressed,
hashed again, and handed to a part-specific check (``pg_restore --list`` for the dump, the
file index for the files part, the hash chain for the audit part).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from clinvault.engine import bundle
from clinvault.engine.archive import FileEntry, verify_files_archive
from clinvault.engine.compression import decompress_chunks
from clinvault.engine.manifest import (
    FilesInfo,
    Manifest,
    PartInfo,
    load_manifest,
    manifest_checksum,
)
from clinvault.engine.pgconn import ConnInfo
from clinvault.engine.pgtools import PgToolkit, open_tool
from clinvault.errors import ClinVaultError, IncompleteBackupError, NotFoundError
from clinvault.storage.base import Storage

AuditChecker = Callable[[list[dict[str, Any]]], str | None]
_NO_FILES = FilesInfo(
    selections=[],
    file_count=0,
    dir_count=0,
    symlink_count=0,
    total_bytes=0,
    frame_count=0,
    entries=[],
)
_PG_MAJOR_DEFAULT = 16


@dataclass
class PartCheck:
    name: str
    kind: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "ok": self.ok, "problems": self.problems}


class _Meter:
    """Counts and hashes bytes flowing through an iterator."""

    def __init__(self, chunks: Iterable[bytes], on_bytes: Callable[[int], None] | None = None):
        self._chunks = chunks
        self._on_bytes = on_bytes
        self.hash = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.hash.update(chunk)
            self.size += len(chunk)
            if self._on_bytes is not None:
                self._on_bytes(len(chunk))
            yield chunk


def read_manifest(storage: Storage, backup_id: str) -> tuple[Manifest, bytes]:
    """The manifest and its bytes; a bundle without one is incomplete."""
    try:
        data = storage.read_bytes(bundle.manifest_key(backup_id))
    except NotFoundError:
        raise IncompleteBackupError(
            f"backup {backup_id} is incomplete: manifest.json is missing"
        ) from None
    return load_manifest(data), data


def check_manifest_checksum(data: bytes, expected: str | None) -> str | None:
    actual = manifest_checksum(data)
    if expected is not None and actual != expected:
        return f"manifest.json: SHA-256 {actual} does not match the recorded checksum {expected}"
    return None


@dataclass
class BundleChecker:
    storage: Storage
    backup_id: str
    manifest: Manifest
    toolkit: PgToolkit | None = None
    audit_checker: AuditChecker | None = None
    on_bytes: Callable[[int], None] | None = None
    cancel: threading.Event | None = None

    def check_all(self) -> list[PartCheck]:
        return [self.check_part(part) for part in self.manifest.parts]

    def check_part(self, part: PartInfo) -> PartCheck:
        result = PartCheck(part.name, part.kind)
        key = bundle.object_key(self.backup_id, part.name)
        try:
            stored = self.storage.stat(key)
        except NotFoundError:
            result.fail(f"{part.name}: object is missing")
            return result
        if stored.size != part.compressed_size:
            result.fail(
                f"{part.name}: stored size {stored.size}, manifest says {part.compressed_size}"
            )
        meter = _Meter(self.storage.read(key), self.on_bytes)
        if part.kind == "files":
            self._check_files(part, meter, result)
        else:
            self._check_stream(part, meter, result)
        return result

    def _check_files(self, part: PartInfo, meter: _Meter, result: PartCheck) -> None:
        """The archive check decompresses itself; every file's SHA-256 is compared."""
        entries = [FileEntry.from_json(e) for e in (self.manifest.files or _NO_FILES).entries]
        try:
            problems = verify_files_archive(meter, part.codec, entries)
        except ClinVaultError as exc:
            problems = [exc.message]
        for _ in meter:
            pass
        for problem in problems:
            result.fail(f"{part.name}: {problem}")
        if meter.hash.hexdigest() != part.sha256:
            result.fail(f"{part.name}: SHA-256 of the stored object does not match the manifest")

    def _check_stream(self, part: PartInfo, meter: _Meter, result: PartCheck) -> None:
        raw = _Meter(self._decompressed(meter, part, result))
        try:
            stream = iter(raw)
            problems = self._check_dump(stream) if part.kind == "database" else []
            if part.kind == "audit":
                problems = self._check_audit(stream)
            for _ in stream:
                pass
        except ClinVaultError as exc:
            problems = [exc.message]
        for _ in meter:
            pass
        for problem in problems:
            result.fail(f"{part.name}: {problem}")
        if meter.hash.hexdigest() != part.sha256:
            result.fail(f"{part.name}: SHA-256 of the stored object does not match the manifest")
        elif raw.hash.hexdigest() != part.raw_sha256 or raw.size != part.size:
            result.fail(f"{part.name}: decompressed content does not match the manifest")

    @staticmethod
    def _decompressed(meter: _Meter, part: PartInfo, result: PartCheck) -> Iterator[bytes]:
        try:
            yield from decompress_chunks(meter, part.codec)
        except ClinVaultError as exc:
            result.fail(f"{part.name}: {exc.message}")

    def _check_dump(self, raw: Iterator[bytes]) -> list[str]:
        if self.toolkit is None:
            return []
        num = self.manifest.source.server_version_num
        major = num // 10000 if num else _PG_MAJOR_DEFAULT
        tool = self.toolkit.find("pg_restore", major)
        nowhere = ConnInfo("localhost", 5432, "nobody", "nothing")
        try:
            with open_tool(tool, ["--list"], nowhere, write_stdin=True, cancel=self.cancel) as proc:
                try:
                    for chunk in raw:
                        proc.stdin.write(chunk)
                except BrokenPipeError:
                    pass
                proc.stdin.close()
        except ClinVaultError as exc:
            return [f"pg_restore cannot read the dump: {exc.message}"]
        return []

    def _check_audit(self, raw: Iterator[bytes]) -> list[str]:
        lines = b"".join(raw).splitlines()
        try:
            events = [json.loads(line) for line in lines if line.strip()]
        except json.JSONDecodeError as exc:
            return [f"audit line is not JSON: {exc}"]
        expected = self.manifest.audit.events if self.manifest.audit else len(events)
        problems = []
        if len(events) != expected:
            problems.append(f"{len(events)} audit events, manifest says {expected}")
        if self.audit_checker is not None:
            problem = self.audit_checker(events)
            if problem:
                problems.append(problem)
        return problems
