"""The local filesystem backend.

Writes are atomic: bytes go to a hidden temporary file beside the target, which is fsynced
and renamed into place, and the directory is fsynced, so a crash leaves either the old object
or the new one, never a torn one. Leftover temporary files are ignored by ``list``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from clinvault.errors import InvalidInputError, NotFoundError, StorageError
from clinvault.storage.base import ObjectInfo, Storage, validate_key, validate_prefix

_CHUNK = 1 << 20
_TEMP_MARK = ".tmp-"


_WRITEBACK_STEP = 32 << 20


class _FileWriter:
    """Writes an object and starts its write-back as it goes.

    Every few MiB the pages written so far are handed to the kernel to write out
    (``posix_fadvise(DONTNEED)`` starts write-back of dirty pages and later lets their
    clean copies go): the final ``fsync`` then has little left to wait for, and a backup
    does not push the platform's own data out of the page cache.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._written = 0
        self._advised = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        count = self._handle.write(data)
        self._written += count
        if self._written - self._advised >= _WRITEBACK_STEP:
            self._start_writeback()
        return count

    def _start_writeback(self) -> None:
        self._handle.flush()
        with contextlib.suppress(OSError, AttributeError):
            # From a few steps back: pages still being written last time are clean now.
            start = max(0, self._advised - 4 * _WRITEBACK_STEP)
            os.posix_fadvise(
                self._handle.fileno(), start, self._written - start, os.POSIX_FADV_DONTNEED
            )
        self._advised = self._written


def path_from_file_url(url: str) -> Path:
    parsed = urlparse(url)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise InvalidInputError(f"not a local file URL: {url!r}")
    return Path(unquote(parsed.path))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = self.root.as_uri()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create storage directory {self.root}: {exc}") from exc

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[_FileWriter]:
        target = self._path(key)
        temp = target.with_name(f"{_TEMP_MARK}{target.name}.{uuid.uuid4().hex}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle = temp.open("wb")
        except OSError as exc:
            raise StorageError(f"cannot write {key!r} in {self.url}: {exc}") from exc
        try:
            with handle:
                yield _FileWriter(handle)
                handle.flush()
                os.fsync(handle.fileno())
            temp.replace(target)
            _fsync_dir(target.parent)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write {key!r} in {self.url}: {exc}") from exc
            raise

    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        if offset < 0 or (length is not None and length < 0):
            raise InvalidInputError("offset and length must not be negative")
        path = self._path(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise NotFoundError(f"object {key!r} not found in {self.url}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key!r} in {self.url}: {exc}") from exc
        return self._chunks(handle, offset, length)

    @staticmethod
    def _chunks(handle: BinaryIO, offset: int, length: int | None) -> Iterator[bytes]:
        with handle:
            handle.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                chunk = handle.read(_CHUNK if remaining is None else min(_CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            raise NotFoundError(f"object {key!r} not found in {self.url}") from None
        except OSError as exc:
            raise StorageError(f"cannot stat {key!r} in {self.url}: {exc}") from exc
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        base = self.root.joinpath(*prefix.rstrip("/").split("/")) if prefix else self.root
        if not base.is_dir():
            return
        found: list[ObjectInfo] = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(_TEMP_MARK):
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                st = path.stat()
                found.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        yield from sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r} in {self.url}: {exc}") from exc
        self._prune_empty_dirs(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        count = super().delete_prefix(prefix)
        if prefix:
            base = self.root.joinpath(*prefix.rstrip("/").split("/"))
            if base.is_dir():
                shutil.rmtree(base, ignore_errors=True)
        return count

    def _prune_empty_dirs(self, directory: Path) -> None:
        while directory != self.root and directory.is_relative_to(self.root):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def free_bytes(self) -> int | None:
        return shutil.disk_usage(self.root).free
