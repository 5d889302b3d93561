"""The storage interface every backend implements.

Deliberately small (after restic's backend): write a stream atomically, read a byte range,
stat, list a prefix, delete. Backup, restore and verify logic never know which backend they
talk to. Keys are ``/``-separated relative paths such as ``backups/<id>/manifest.json``.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from clinvault.errors import InvalidInputError

_KEY_PART = re.compile(r"^[A-Za-z0-9._@+=,-]+$")


def validate_key(key: str) -> str:
    """Refuse keys that could escape the storage root or are not portable object names."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or not _KEY_PART.match(p) for p in parts):
        raise InvalidInputError(f"invalid storage key {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """A prefix is empty or a key that ends with ``/``."""
    if prefix == "":
        return prefix
    if not prefix.endswith("/"):
        raise InvalidInputError(f"storage prefix must end with '/': {prefix!r}")
    validate_key(prefix[:-1])
    return prefix


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


class ObjectWriter(Protocol):
    """A sink for one object. Written bytes become visible only when the writer commits."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...


class Storage(abc.ABC):
    """A place to keep bundles."""

    url: str

    @abc.abstractmethod
    def writer(self, key: str) -> AbstractContextManager[ObjectWriter]:
        """Open ``key`` for writing.

        The object appears, whole, when the block exits without an exception; on an
        exception nothing is left behind and any earlier object under ``key`` is untouched.
        """

    @abc.abstractmethod
    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of ``key`` from ``offset``, at most ``length`` of them, in chunks."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size and modification time of ``key``; ``NotFoundError`` when absent."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""

    def exists(self, key: str) -> bool:
        from clinvault.errors import NotFoundError

        try:
            self.stat(key)
        except NotFoundError:
            return False
        return True

    def read_bytes(self, key: str) -> bytes:
        return b"".join(self.read(key))

    def write_bytes(self, key: str, data: bytes) -> None:
        with self.writer(key) as out:
            out.write(data)

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; returns how many were removed."""
        keys = [info.key for info in self.list(validate_prefix(prefix))]
        for key in keys:
            self.delete(key)
        return len(keys)

    def free_bytes(self) -> int | None:
        """Free space where the backend can tell, else ``None``."""
        return None
