"""Deleting a backup: soft by default, with its objects purged on request; always audited.

A soft delete hides the backup (``deleted_at``, ``deleted_by``) and keeps its bundle, so a
mistake can still be undone from storage (``catalog rebuild``). A purge also removes every
object of the bundle; the record stays, with ``file_path`` cleared, because restore records
and the audit trail refer to it. A backup on legal hold, one still being written and one a
restore is reading are refused. The audit event holds the old and new values.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from clinvault.catalog.models import AuditOutcome, Backup, BackupStatus, RestoreOperation
from clinvault.engine import bundle
from clinvault.errors import ClinVaultError, ConflictError
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.processes import worker_is_dead
from clinvault.services.queries import get_backup
from clinvault.services.restore_ops import ACTIVE as RESTORE_ACTIVE

_UNFINISHED = (BackupStatus.PENDING, BackupStatus.IN_PROGRESS)


def _state(row: Backup) -> dict[str, Any]:
    return {
        "deleted_at": row.deleted_at.isoformat() if row.deleted_at else None,
        "deleted_by": row.deleted_by,
        "file_path": row.file_path,
    }


def _refusal(session: sa.orm.Session, row: Backup, purge: bool) -> str | None:
    if row.legal_hold:
        return f"backup {row.name} is on legal hold and cannot be deleted"
    if row.status in _UNFINISHED and not worker_is_dead((row.metadata_ or {}).get("worker")):
        return f"backup {row.name} is still being written"
    if row.deleted_at is not None and (not purge or row.file_path is None):
        return f"backup {row.name} is already deleted" + (" and purged" if purge else "")
    reading = session.scalar(
        sa.select(RestoreOperation.id).where(
            RestoreOperation.backup_id == row.id, RestoreOperation.status.in_(RESTORE_ACTIVE)
        )
    )
    if reading is not None:
        return f"restore {reading} is reading backup {row.name}"
    return None


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    """Who deletes which backup, how, and where the request came from (for the audit)."""

    backup_id: uuid.UUID | str
    actor: Actor
    purge: bool = False
    reason: str | None = None
    signature_id: str | None = None
    request_id: str | None = None
    client_address: str | None = None


class BackupDeletion:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def check(self, request: DeleteRequest) -> Backup:
        """Refuse (audited) a backup that cannot be deleted now, before anyone signs for it;
        :meth:`delete` checks again under lock."""
        row = get_backup(self.ctx, request.backup_id)
        with self.ctx.catalog.session() as session:
            refusal = _refusal(session, row, request.purge)
        if refusal is not None:
            self._record(request, row, {"error": refusal}, AuditOutcome.FAILURE)
            raise ConflictError(refusal)
        return row

    def delete(self, request: DeleteRequest) -> Backup:
        """Soft-delete the backup, and with ``purge`` remove its objects; returns the record."""
        found = get_backup(self.ctx, request.backup_id)
        details: dict[str, Any] = {}
        try:
            with self.ctx.catalog.session(write_lock=True) as session:
                row = session.scalars(
                    sa.select(Backup).where(Backup.id == found.id).with_for_update()
                ).one()
                refusal = _refusal(session, row, request.purge)
                if refusal is not None:
                    raise ConflictError(refusal)
                details["old"] = _state(row)
                if row.deleted_at is None:
                    row.deleted_at = datetime.now(UTC)
                    row.deleted_by = request.actor.name
            if request.purge:
                details["objects_removed"] = self._purge(row, request.actor)
                row = get_backup(self.ctx, found.id)
        except ClinVaultError as exc:
            self._record(request, found, {**details, "error": exc.message}, AuditOutcome.FAILURE)
            raise
        self._record(request, row, {**details, "new": _state(row)}, AuditOutcome.SUCCESS)
        return row

    def _purge(self, row: Backup, actor: Actor) -> int:
        removed = self.ctx.storage.delete_prefix(bundle.bundle_prefix(str(row.id)))
        with self.ctx.catalog.session(write_lock=True) as session:
            stored = session.get_one(Backup, row.id, with_for_update=True)
            stored.file_path = None
            stored.metadata_ = {
                **(stored.metadata_ or {}),
                "purged_at": datetime.now(UTC).isoformat(),
                "purged_by": actor.name,
            }
        return removed

    def _record(
        self,
        request: DeleteRequest,
        row: Backup,
        details: dict[str, Any],
        outcome: AuditOutcome,
    ) -> None:
        self.ctx.audit.record(
            "backup.delete",
            actor_id=request.actor.id,
            actor_name=request.actor.name,
            outcome=outcome,
            target_type="backup",
            target_id=str(row.id),
            reason=request.reason,
            details={
                "name": row.name,
                "purge": request.purge,
                "signature_id": request.signature_id,
                **details,
            },
            request_id=request.request_id,
            client_address=request.client_address,
        )
