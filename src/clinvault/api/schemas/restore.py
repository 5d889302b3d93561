"""Restores: preview, validation, the signed execute request, and the history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clinvault.api.schemas.backups import PRINTABLE, ScopeId
from clinvault.api.schemas.signatures import SignatureOut
from clinvault.api.security import SIGNATURE_EXAMPLE, SignatureIn

RestoreScopeName = Literal["full", "database", "files", "study", "organization"]
_BACKUP_ID = "0b6f3c8e-3a1d-4a57-8f5e-2f4f7a1b9c10"
_SCOPE = Field(
    default=None,
    description="`full`, `database` or `files` (default: the backup's type), or one "
    "`study` or `organization` (granular: its rows and files only).",
)


class RestoreTargetIn(BaseModel):
    """Restore beside the platform instead of over it: a new database and/or directory."""

    model_config = ConfigDict(extra="forbid")

    database: str | None = Field(
        default=None, min_length=1, max_length=63, pattern=r"^[A-Za-z_][A-Za-z0-9_$-]*$"
    )
    directory: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        pattern=PRINTABLE,
        description="An absolute path on the server; must not exist yet.",
    )

    def to_json(self) -> dict[str, str | None]:
        return {"database": self.database, "directory": self.directory}


class RestorePreviewIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"backup_id": _BACKUP_ID},
                {"backup_id": _BACKUP_ID, "scope": "study", "ids": ["ONC-001"]},
            ]
        },
    )

    backup_id: uuid.UUID
    scope: RestoreScopeName | None = _SCOPE
    ids: list[ScopeId] = Field(
        default_factory=list,
        max_length=100,
        description="Study or organization ids or codes, for a granular scope.",
    )


class RestoreValidateIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"backup_id": _BACKUP_ID, "check_hashes": True}]},
    )

    backup_id: uuid.UUID
    scope: Literal["full", "database", "files"] | None = Field(
        default=None, description="What would be restored; default the backup's type."
    )
    target: RestoreTargetIn = Field(default_factory=RestoreTargetIn)
    check_hashes: bool = Field(
        default=True, description="Re-read every part and check its SHA-256 (slow for big ones)."
    )


class RestoreExecuteIn(BaseModel):
    """Run a restore as a job. Needs ``confirm: true`` and a signature with the meaning
    ``Approved restore``: ``signature`` to sign now, or ``signature_id`` of one presigned at
    ``POST /api/v1/signatures`` for exactly this operation::

        {"action": "restore.execute", "target_type": "backup", "target_id": "<backup_id>",
         "scope": <scope>, "ids": [...], "target": {"database": ..., "directory": ...},
         "options": {"safety_backup": <safety_backup>}}
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "backup_id": _BACKUP_ID,
                    "scope": "full",
                    "confirm": True,
                    "signature": SIGNATURE_EXAMPLE,
                }
            ]
        },
    )

    backup_id: uuid.UUID
    scope: RestoreScopeName | None = _SCOPE
    ids: list[ScopeId] = Field(
        default_factory=list,
        max_length=100,
        description="Study or organization ids or codes, for a granular scope.",
    )
    target: RestoreTargetIn = Field(default_factory=RestoreTargetIn)
    safety_backup: bool = Field(
        default=True, description="Back up the current state first (the fallback checkpoint)."
    )
    confirm: bool = Field(default=False, description="Must be true: the restore replaces data.")
    signature: SignatureIn | None = None
    signature_id: uuid.UUID | None = None

    def operation(self) -> dict[str, Any]:
        """The exact operation the signature approves."""
        return {
            "action": "restore.execute",
            "target_type": "backup",
            "target_id": str(self.backup_id),
            "scope": self.scope,
            "ids": list(self.ids),
            "target": self.target.to_json(),
            "options": {"safety_backup": self.safety_backup},
        }


class ValidationCheck(BaseModel):
    name: str
    ok: bool
    detail: str


class ValidationOut(BaseModel):
    """Every check a restore would make before changing anything."""

    backup_id: uuid.UUID
    ok: bool
    checked_at: datetime
    checks: list[ValidationCheck]


class RestoreOperationOut(BaseModel):
    """One restore, kept forever: status, validation results, and its signature."""

    id: uuid.UUID
    backup_id: uuid.UUID
    status: str
    scope: str
    scope_ids: list[str]
    target_database: str | None
    target_dir: str | None
    restored_by: str
    started_at: datetime | None
    completed_at: datetime | None
    safety_backup_id: uuid.UUID | None
    validation_results: dict[str, Any]
    error: str | None
    metadata: dict[str, Any]
    signatures: list[SignatureOut]


class RestoreHistoryPage(BaseModel):
    items: list[RestoreOperationOut]
    total: int
    offset: int
    limit: int
