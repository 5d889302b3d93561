"""The bundle manifest (format v1): the completion marker and the Merkle root of a backup.

``manifest.json`` is written last. It holds the SHA-256 of every part, so the SHA-256 of the
manifest itself proves the whole bundle. It also holds everything needed to rebuild the
catalog entry, to validate a restore (row counts per table and per scope, taken in the same
snapshot as the dump) and to find any file in the files part (the file index).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clinvault.errors import FormatError

FORMAT_NAME: Literal["clinvault-bundle"] = "clinvault-bundle"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

PartKind = Literal["database", "files", "audit"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ToolInfo(_Model):
    name: str = "clinvault"
    version: str


class BackupInfo(_Model):
    id: str
    name: str
    type: Literal["full", "database", "files"]
    scope: Literal["all", "study", "organization"] = "all"
    scope_ids: list[str] = Field(default_factory=list)
    description: str | None = None
    created_by: str
    started_at: datetime
    completed_at: datetime
    safety_backup: bool = False


class SourceInfo(_Model):
    database: str | None = None
    server_version: str | None = None
    server_version_num: int | None = None
    encoding: str | None = None
    system_identifier: str | None = None
    snapshot: str | None = None
    dump_tool: str | None = None
    files_root: str | None = None
    hostname: str | None = None


class PartInfo(_Model):
    name: str
    kind: PartKind
    codec: Literal["zstd", "gzip"]
    level: int
    size: int
    compressed_size: int
    sha256: str
    # Of the decompressed content; None for a files part, whose members carry their own.
    raw_sha256: str | None = None
    # The codec's parameters where ClinVault chose them beyond the level (a database part's
    # zstd search); None where the level's own were used.
    parameters: dict[str, int | str] | None = None


class ScopeCounts(_Model):
    model: dict[str, Any]
    counts: dict[str, dict[str, Any]]


class DatabaseInfo(_Model):
    tables: dict[str, int]
    scopes: dict[str, ScopeCounts] = Field(default_factory=dict)


class FilesInfo(_Model):
    selections: list[str]
    file_count: int
    dir_count: int
    symlink_count: int
    total_bytes: int
    frame_count: int
    warnings: list[str] = Field(default_factory=list)
    entries: list[dict[str, Any]]


class AuditInfo(_Model):
    events: int
    last_seq: int | None
    last_hash: str | None


class Manifest(_Model):
    format: Literal["clinvault-bundle"] = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    tool: ToolInfo
    backup: BackupInfo
    source: SourceInfo
    parts: list[PartInfo]
    database: DatabaseInfo | None = None
    files: FilesInfo | None = None
    audit: AuditInfo | None = None

    def part(self, kind: PartKind) -> PartInfo | None:
        return next((p for p in self.parts if p.kind == kind), None)

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    @property
    def compressed_size(self) -> int:
        return sum(p.compressed_size for p in self.parts)


def dump_manifest(manifest: Manifest) -> bytes:
    """Canonical bytes of the manifest: key order fixed, so equal manifests hash equal."""
    data = manifest.model_dump(mode="json")
    files = data.get("files")
    entries = files.get("entries") if isinstance(files, dict) else None
    if not entries:
        # ASCII-only: names that are not valid UTF-8 travel as \udcXX escapes, intact.
        text = json.dumps(data, sort_keys=True, ensure_ascii=True, indent=1)
    else:
        # The file index gets one line per member, from the C encoder: an indented dump goes
        # through the pure-Python encoder, which takes seconds for a tree of many files.
        assert isinstance(files, dict)
        marker = f"entries-{uuid.uuid4().hex}"
        files["entries"] = marker
        text = json.dumps(data, sort_keys=True, ensure_ascii=True, indent=1)
        compact = json.JSONEncoder(sort_keys=True, ensure_ascii=True, separators=(", ", ": "))
        lines = ",\n   ".join(compact.encode(entry) for entry in entries)
        text = text.replace(f'"{marker}"', f"[\n   {lines}\n  ]", 1)
    return text.encode("ascii") + b"\n"


def manifest_checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_manifest(data: bytes) -> Manifest:
    """Parse manifest bytes, refusing other formats and versions this tool cannot read."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"manifest.json is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise FormatError("manifest.json is not a ClinVault bundle manifest")
    version = raw.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(
            f"bundle format version {version!r} is not supported by this ClinVault "
            f"(supported: {sorted(SUPPORTED_VERSIONS)})"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise FormatError(
            f"manifest.json is malformed ({exc.error_count()} problems); first: "
            f"{first['loc']}: {first['msg']}"
        ) from exc
