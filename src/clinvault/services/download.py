"""A backup as one download: a deterministic, uncompressed POSIX tar of its objects.

The tar holds ``<name>/manifest.json`` and then every part, in the manifest's order, each
with mode 0644, owner 0:0 and the backup's completion time as mtime. Because every header
is fixed by the catalog record and the object sizes, the tar's layout (where each header,
each object's bytes and each padding block sit) is known before one byte of data is read:
the total size is exact, and any byte range is produced by reading only the slices of the
objects it covers (``Storage.read(key, offset, length)``). That is what lets an interrupted
download resume with an HTTP ``Range`` request, and keeps memory bounded whatever the size.

The strong ETag is the backup's checksum, the SHA-256 of its manifest, which holds the
SHA-256 of every part: the same ETag always means the same bytes.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

from clinvault.catalog.models import AuditOutcome, Backup, BackupStatus
from clinvault.engine import bundle
from clinvault.engine.checks import read_manifest
from clinvault.errors import (
    ClinVaultError,
    ConflictError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
)
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.storage.base import Storage

BLOCK: Final = tarfile.BLOCKSIZE  # 512
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RangeNotSatisfiableError(InvalidInputError):
    """The requested byte range lies outside the download (HTTP 416)."""

    http_status = 416
    title = "Range not satisfiable"

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


@dataclass(frozen=True, slots=True)
class _Segment:
    """``length`` bytes at ``offset`` of the tar: literal bytes, or a slice of an object."""

    offset: int
    length: int
    data: bytes | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in HTTP

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class BackupDownload:
    """The tar of one backup: its size, validators and a reader for any byte range."""

    storage: Storage
    filename: str
    etag: str
    last_modified: datetime
    segments: tuple[_Segment, ...]
    size: int

    def stream(self, byte_range: ByteRange | None = None) -> Iterator[bytes]:
        """The bytes of ``byte_range`` (default: all), read slice by slice from storage."""
        start, end = (
            (0, self.size - 1) if byte_range is None else (byte_range.start, byte_range.end)
        )
        for seg in self.segments:
            seg_end = seg.offset + seg.length - 1
            if seg_end < start or seg.offset > end or seg.length == 0:
                continue
            lo = max(start, seg.offset) - seg.offset
            hi = min(end, seg_end) - seg.offset + 1
            if seg.data is not None:
                yield seg.data[lo:hi]
                continue
            assert seg.key is not None
            produced = 0
            for chunk in self.storage.read(seg.key, lo, hi - lo):
                produced += len(chunk)
                yield chunk
            if produced != hi - lo:
                raise IntegrityError(f"{seg.key} is shorter than when the download began")


def _header(name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="ascii", errors="strict")


def archive_root(row: Backup) -> str:
    """The tar's top directory: the backup's name when it is a safe path part, else its id."""
    return row.name if _SAFE_NAME.match(row.name) and row.name not in (".", "..") else str(row.id)


def _part_names(storage: Storage, row: Backup) -> list[str]:
    parts = (row.metadata_ or {}).get("parts")
    if isinstance(parts, list) and all(isinstance(p, dict) and "name" in p for p in parts):
        return [str(p["name"]) for p in parts]
    manifest, _ = read_manifest(storage, str(row.id))  # rows from before parts were kept
    return [p.name for p in manifest.parts]


def open_download(storage: Storage, row: Backup) -> BackupDownload:
    """Lay out the download of ``row``; stats each object, reads none."""
    if row.deleted_at is not None or row.file_path is None:
        raise NotFoundError(f"backup {row.name} was deleted")
    if row.status is not BackupStatus.COMPLETED or row.checksum is None or not row.completed_at:
        raise ConflictError(f"backup {row.name} is {row.status.value}: only completed backups")
    root = archive_root(row)
    mtime = int(row.completed_at.timestamp())
    segments: list[_Segment] = []
    offset = 0
    for name in [bundle.MANIFEST, *_part_names(storage, row)]:
        key = bundle.object_key(str(row.id), name)
        try:
            size = storage.stat(key).size
        except NotFoundError:
            raise IntegrityError(
                f"backup {row.name} is damaged: {name} is missing from storage"
            ) from None
        header = _header(f"{root}/{name}", size, mtime)
        pad = -size % BLOCK
        segments.append(_Segment(offset, len(header), data=header))
        segments.append(_Segment(offset + len(header), size, key=key))
        offset += len(header) + size
        if pad:
            segments.append(_Segment(offset, pad, data=bytes(pad)))
            offset += pad
    segments.append(_Segment(offset, 2 * BLOCK, data=bytes(2 * BLOCK)))
    offset += 2 * BLOCK
    return BackupDownload(
        storage=storage,
        filename=f"{root}.tar",
        etag=f'"{row.checksum}"',
        last_modified=row.completed_at,
        segments=tuple(segments),
        size=offset,
    )


# --- HTTP byte ranges (RFC 9110 §14) -----------------------------------------------------------

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def if_range_matches(if_range: str | None, etag: str, last_modified: datetime) -> bool:
    """True when ``If-Range`` is absent or still names this representation.

    An entity tag must match strongly (a weak one never does); a date must equal the
    ``Last-Modified`` value exactly, to the second.
    """
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith(('"', "W/")):
        return value == etag
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return False
    return when.tzinfo is not None and int(when.timestamp()) == int(last_modified.timestamp())


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range ``header`` asks for, or None to send everything.

    Units other than ``bytes`` and lists of several ranges are ignored (the whole body is
    sent, as RFC 9110 allows); a malformed or unsatisfiable ``bytes`` range raises
    :class:`RangeNotSatisfiableError`.
    """
    if header is None or not header.strip().lower().startswith("bytes"):
        return None
    if "," in header:
        return None
    match = _RANGE.match(header)
    if match is None:
        raise RangeNotSatisfiableError(f"malformed Range header {header[:100]!r}", size)
    first, last = match.groups()
    if not first and not last:
        raise RangeNotSatisfiableError("a byte range needs a start or a suffix length", size)
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiableError("an empty suffix range selects nothing", size)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiableError(f"range {start}-{last} is outside the {size} bytes", size)
    return ByteRange(start, end)


def start_download(
    ctx: ServiceContext,
    row: Backup,
    actor: Actor,
    *,
    range_header: str | None = None,
    if_range: str | None = None,
    request_id: str | None = None,
    client_address: str | None = None,
) -> tuple[BackupDownload, ByteRange | None]:
    """Lay out the download, resolve the byte range asked for, and audit the download.

    Every download is audited before its first byte, whole or partial, and so is a refused
    one (an unsatisfiable range, a damaged or deleted backup).
    """
    details: dict[str, Any] = {"name": row.name, "range": range_header, "if_range": if_range}
    audit: dict[str, Any] = {
        "actor_id": actor.id,
        "actor_name": actor.name,
        "target_type": "backup",
        "target_id": str(row.id),
        "request_id": request_id,
        "client_address": client_address,
    }
    try:
        download = open_download(ctx.storage, row)
        wanted = None
        if if_range_matches(if_range, download.etag, download.last_modified):
            wanted = parse_range(range_header, download.size)
    except ClinVaultError as exc:
        details["error"] = exc.message
        ctx.audit.record("backup.download", outcome=AuditOutcome.FAILURE, details=details, **audit)
        raise
    details.update(
        size=download.size,
        start=None if wanted is None else wanted.start,
        end=None if wanted is None else wanted.end,
    )
    ctx.audit.record("backup.download", details=details, **audit)
    return download, wanted
