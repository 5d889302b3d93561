"""Where the objects of a bundle live in storage, and how they are named."""

from __future__ import annotations

import re

from clinvault.errors import InvalidInputError

BACKUPS_PREFIX = "backups/"
MANIFEST = "manifest.json"
_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SUFFIX = {"zstd": ".zst", "gzip": ".gz"}
_BASE = {"database": "database.dump", "files": "files.tar", "audit": "audit.jsonl"}


def bundle_prefix(backup_id: str) -> str:
    if not _ID_RE.match(backup_id):
        raise InvalidInputError(f"not a backup id: {backup_id!r}")
    return f"{BACKUPS_PREFIX}{backup_id}/"


def object_key(backup_id: str, name: str) -> str:
    return bundle_prefix(backup_id) + name


def manifest_key(backup_id: str) -> str:
    return object_key(backup_id, MANIFEST)


def part_name(kind: str, codec: str) -> str:
    """``database.dump.zst``, ``files.tar.gz``, ``audit.jsonl.zst`` ..."""
    return _BASE[kind] + _SUFFIX[codec]


def backup_id_from_key(key: str) -> str | None:
    """The backup id of an object key under ``backups/``, if it is one."""
    if not key.startswith(BACKUPS_PREFIX):
        return None
    candidate = key[len(BACKUPS_PREFIX) :].split("/", 1)[0]
    return candidate if _ID_RE.match(candidate) else None
