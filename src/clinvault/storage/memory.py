"""An in-memory backend for unit tests; same contract as every other backend."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from clinvault.errors import InvalidInputError, NotFoundError
from clinvault.storage.base import ObjectInfo, Storage, validate_key, validate_prefix

_CHUNK = 1 << 20


class _Buffer:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self.data += data
        return len(data)


class MemoryStorage(Storage):
    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._objects: dict[str, tuple[bytes, datetime]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def writer(self, key: str) -> Iterator[_Buffer]:
        validate_key(key)
        buffer = _Buffer()
        yield buffer
        with self._lock:
            self._objects[key] = (bytes(buffer.data), datetime.now(UTC))

    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        if offset < 0 or (length is not None and length < 0):
            raise InvalidInputError("offset and length must not be negative")
        data = self._get(key)[0]
        end = len(data) if length is None else min(len(data), offset + length)
        for start in range(offset, end, _CHUNK):
            yield data[start : min(end, start + _CHUNK)]

    def stat(self, key: str) -> ObjectInfo:
        data, modified = self._get(key)
        return ObjectInfo(key, len(data), modified)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        with self._lock:
            items = sorted((k, v) for k, v in self._objects.items() if k.startswith(prefix))
        for key, (data, modified) in items:
            yield ObjectInfo(key, len(data), modified)

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._lock:
            self._objects.pop(key, None)

    def _get(self, key: str) -> tuple[bytes, datetime]:
        validate_key(key)
        with self._lock:
            try:
                return self._objects[key]
            except KeyError:
                raise NotFoundError(f"object {key!r} not found in {self.url}") from None
