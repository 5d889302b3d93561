"""Bringing bundle parts out of storage onto local disk, verified on the way.

``pg_restore`` needs a seekable file to restore in parallel, so the dump part is
decompressed into a staging file first. The stored object's SHA-256 is checked against the
manifest as it is read, the codec checks every frame's own checksum (zstd's content
checksum, gzip's CRC) as it decompresses, and the decompressed size must be the
manifest's; the file only gets its final name when all of that holds. (A second SHA-256 of
the decompressed gigabyte would add nothing to those checks and cost a third of the
staging time; ``backup verify`` still compares it.) The file is a scratch copy, verified as
it is written and useless after a crash, so it is not fsynced. A database dump's staging
copy gets the data offsets ``pg_dump`` could not write into a pipe (``dumpoffsets``), so
``pg_restore`` reaches any table without reading every one before it.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from clinvault.engine import bundle
from clinvault.engine.compression import decompress_chunks
from clinvault.engine.dumpoffsets import DataOffsets
from clinvault.engine.manifest import PartInfo
from clinvault.engine.readahead import run_ahead
from clinvault.errors import CancelledError, IntegrityError, InvalidInputError
from clinvault.storage.base import Storage

_AHEAD = 8  # decompressed pieces (at most a few MiB each) in flight


def ensure_free_space(directory: Path, needed: int, what: str) -> None:
    """Refuse early when ``directory``'s filesystem cannot hold ``needed`` more bytes."""
    probe = directory
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise InvalidInputError(
            f"not enough free disk for {what}: {needed} bytes needed in {probe}, {free} free"
        )


def stage_part(
    storage: Storage,
    backup_id: str,
    part: PartInfo,
    dest: Path,
    *,
    on_bytes: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Decompress ``part`` of ``backup_id`` into the file ``dest``, verifying its content."""
    ensure_free_space(dest.parent, part.size, f"staging {part.name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = dest.with_name(dest.name + ".partial")
    stored = hashlib.sha256()
    size = 0

    def metered() -> Iterator[bytes]:
        for chunk in storage.read(bundle.object_key(backup_id, part.name)):
            if cancel is not None and cancel.is_set():
                raise CancelledError("staging cancelled")
            stored.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
            yield chunk

    # Reading, hashing and decompressing on one thread, writing on this one.
    chunks = run_ahead(decompress_chunks(metered(), part.codec), _AHEAD)
    offsets = DataOffsets() if part.kind == "database" else None
    try:
        with temp.open("wb") as out:
            for chunk in chunks:
                size += len(chunk)
                out.write(chunk)
                if offsets is not None:
                    offsets.feed(chunk)
        if stored.hexdigest() != part.sha256:
            raise IntegrityError(f"{part.name}: SHA-256 of the stored object does not match")
        if size != part.size:
            raise IntegrityError(f"{part.name}: decompressed content does not match the manifest")
        if offsets is not None:
            offsets.apply(temp)
        temp.replace(dest)
    except BaseException:
        chunks.close()
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return dest
