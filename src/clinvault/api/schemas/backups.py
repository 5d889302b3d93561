"""Backups: the create request, list pages, details with the file list, deletion, stats."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from clinvault.api.schemas.signatures import SignatureOut
from clinvault.api.security import SIGNATURE_EXAMPLE, SignatureIn
from clinvault.catalog.models import Backup, BackupStatus, BackupType, Scope
from clinvault.services.queries import backup_to_json

# Printable text: no control characters (names end up in file names and log lines).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
_BACKUP_ID = "0b6f3c8e-3a1d-4a57-8f5e-2f4f7a1b9c10"

ScopeId = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=PRINTABLE)]


class BackupCreateIn(BaseModel):
    """What to back up and how. Only ``type`` is required."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"type": "full", "name": "before-upgrade-4.2", "description": "Pre-upgrade"},
                {"type": "files", "scope": "study", "scope_ids": ["ONC-001"], "level": 9},
                {"type": "database", "compression": "gzip", "level": 6},
            ]
        },
    )

    type: BackupType = Field(
        description="`full` (database and files), `database` or `files`.",
    )
    scope: Scope = Field(
        default=Scope.ALL,
        description="`all`, or one `study` or `organization` (files backups only).",
    )
    scope_ids: list[ScopeId] = Field(
        default_factory=list,
        max_length=100,
        description="Study or organization ids or codes, for a `study` or `organization` scope.",
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=PRINTABLE,
        description="Unique name; default `<type>-<UTC yyyymmdd-hhmmss>`.",
    )
    description: str | None = Field(default=None, max_length=10_000)
    compression: Literal["zstd", "gzip"] | None = Field(
        default=None, description="Codec; default the service's setting (zstd)."
    )
    level: int | None = Field(
        default=None, ge=1, le=19, description="zstd 1 to 19, gzip 1 to 9; default per codec."
    )

    @field_validator("level")
    @classmethod
    def _level_fits_codec(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("compression") == "gzip" and value > 9:
            raise ValueError("gzip levels are 1 to 9")
        return value


class BackupOut(BaseModel):
    """A backup as the catalog records it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _BACKUP_ID,
                    "name": "full-20261127-031500",
                    "type": "full",
                    "status": "completed",
                    "scope": "all",
                    "scope_ids": [],
                    "description": None,
                    "checksum": "5d41402abc4b2a76b9719d911017c592" * 2,
                    "file_path": f"file:///var/lib/clinvault/backups/backups/{_BACKUP_ID}/",
                    "file_size_bytes": 873201664,
                    "file_size_compressed": 176160768,
                    "compression_ratio": 0.7983,
                    "compression": "zstd",
                    "compression_level": 3,
                    "created_by": "Jane Doe",
                    "created_at": "2026-11-27T03:15:00+00:00",
                    "started_at": "2026-11-27T03:15:00+00:00",
                    "completed_at": "2026-11-27T03:15:21+00:00",
                    "error": None,
                    "is_safety_backup": False,
                    "legal_hold": False,
                    "deleted_at": None,
                    "verified_at": None,
                    "verify_status": None,
                }
            ]
        }
    )

    id: uuid.UUID
    name: str
    type: BackupType
    status: BackupStatus
    scope: Scope
    scope_ids: list[str]
    description: str | None
    checksum: str | None = Field(description="SHA-256 of manifest.json: proves every part.")
    file_path: str | None = Field(description="Where the bundle is; null once purged.")
    file_size_bytes: int | None = Field(description="Bytes before compression.")
    file_size_compressed: int | None = Field(description="Bytes stored.")
    compression_ratio: float | None = Field(description="1 - stored / original.")
    compression: str
    compression_level: int
    created_by: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error: str | None
    is_safety_backup: bool
    legal_hold: bool
    deleted_at: datetime | None
    verified_at: datetime | None
    verify_status: str | None

    @classmethod
    def of(cls, row: Backup) -> BackupOut:
        return cls.model_validate(backup_to_json(row))


class BackupPage(BaseModel):
    """One page of backups and how many match in all."""

    items: list[BackupOut]
    total: int
    page: int
    page_size: int
    pages: int


class BundleObject(BaseModel):
    name: str
    kind: str = Field(description="`manifest`, `database`, `files` or `audit`.")
    codec: str | None = None
    level: int | None = None
    size: int = Field(description="Bytes before compression (the manifest: its size).")
    compressed_size: int | None = None
    sha256: str | None = None


class FileOut(BaseModel):
    path: str = Field(description="Relative to the files root.")
    kind: str
    size: int
    mode: int
    mtime: float
    sha256: str | None


class BackupDetailOut(BackupOut):
    """A backup with its metadata, its objects, one page of its file index, and the
    signatures applied to it."""

    metadata: dict[str, Any] = Field(description="Source facts, parts, counts, warnings.")
    objects: list[BundleObject]
    files: list[FileOut]
    files_total: int = Field(description="Files in the whole index.")
    manifest_error: str | None = Field(description="Why the bundle could not be read.")
    signatures: list[SignatureOut]


class BackupDeleteIn(BaseModel):
    """Delete a backup; needs a signature with the meaning ``Approved deletion``.

    Give ``signature`` to sign now, or ``signature_id`` of a signature presigned at
    ``POST /api/v1/signatures`` for the operation ``{"action": "backup.delete",
    "target_type": "backup", "target_id": "<id>", "purge": <purge>}``.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "purge": False,
                    "signature": {**SIGNATURE_EXAMPLE, "meaning": "Approved deletion"},
                }
            ]
        },
    )

    purge: bool = Field(default=False, description="Also remove the bundle's objects.")
    signature: SignatureIn | None = None
    signature_id: uuid.UUID | None = None


class UsageDay(BaseModel):
    date: str
    backups: int
    bytes_added: int
    storage_used_bytes: int


class BackupBrief(BaseModel):
    id: uuid.UUID
    name: str
    type: BackupType
    completed_at: datetime
    size_compressed: int | None


class ScheduledRun(BaseModel):
    schedule_id: uuid.UUID
    name: str
    next_run_at: datetime


class BackupStatsOut(BaseModel):
    """Dashboard figures. Storage counts every bundle still stored, soft-deleted included."""

    total_backups: int
    by_status: dict[str, int]
    by_type: dict[str, int]
    deleted_backups: int
    storage_used_bytes: int
    original_bytes: int
    saved_by_compression_bytes: int
    compression_ratio: float | None
    last_backup: BackupBrief | None
    next_scheduled: ScheduledRun | None
    usage_over_time: list[UsageDay] = Field(description="One entry per day (UTC), oldest first.")
