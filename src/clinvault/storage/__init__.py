"""Storage backends, chosen by URL scheme: ``file://`` (local) and ``memory://`` (tests)."""

from __future__ import annotations

from clinvault.errors import ConfigError
from clinvault.storage.base import ObjectInfo, ObjectWriter, Storage
from clinvault.storage.local import LocalStorage, path_from_file_url
from clinvault.storage.memory import MemoryStorage


def open_storage(url: str) -> Storage:
    """The backend for ``url``."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "file":
        return LocalStorage(path_from_file_url(url))
    if scheme == "memory":
        return MemoryStorage(url)
    raise ConfigError(f"unsupported storage URL scheme {scheme or url!r}: use file:// or memory://")


__all__ = ["LocalStorage", "MemoryStorage", "ObjectInfo", "ObjectWriter", "Storage", "open_storage"]
