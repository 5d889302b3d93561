"""The record of a restore and the rule that only one runs at a time.

Every restore has a ``restore_operations`` row from its first step to its end, with its
validation results and, on failure, the cause. Opening one takes the catalog's writer lock
(SQLite) or an advisory lock (PostgreSQL) while it checks that no other restore, and no
backup, is running, so two processes sharing a catalog cannot both start.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from clinvault.catalog.models import (
    Backup,
    BackupStatus,
    RestoreOperation,
    RestoreStatus,
    Scope,
)
from clinvault.errors import ConflictError
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.processes import current_worker, worker_is_dead

ACTIVE = (RestoreStatus.PENDING, RestoreStatus.VALIDATING, RestoreStatus.IN_PROGRESS)
RESTORE_LOCK_KEY = 0x436C5652  # "ClVR"


@dataclass(frozen=True, slots=True)
class RestoreTarget:
    """Where a restore goes: the live platform, or an alternate database and directory."""

    database: str | None = None
    directory: str | None = None

    @property
    def is_alternate(self) -> bool:
        return self.database is not None or self.directory is not None


def _lock(session: sa.orm.Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": RESTORE_LOCK_KEY})


def _stale(meta: Mapping[str, Any] | None) -> bool:
    return worker_is_dead((meta or {}).get("worker"))


def open_operation(
    ctx: ServiceContext,
    backup: Backup,
    actor: Actor,
    *,
    scope: Scope,
    scope_ids: list[str],
    target: RestoreTarget = RestoreTarget(),
    metadata: Mapping[str, Any] | None = None,
    allow_running_backups: bool = False,
) -> RestoreOperation:
    """Start a restore record, refusing when another restore (or a backup) is running."""
    with ctx.catalog.session(write_lock=True) as session:
        _lock(session)
        running = session.scalars(
            sa.select(RestoreOperation).where(RestoreOperation.status.in_(ACTIVE))
        ).all()
        live = [op for op in running if not _stale(op.metadata_)]
        if live:
            raise ConflictError(f"restore {live[0].id} is already running; one restore at a time")
        if not allow_running_backups:
            busy = session.scalars(
                sa.select(Backup).where(
                    Backup.status.in_((BackupStatus.PENDING, BackupStatus.IN_PROGRESS)),
                    Backup.is_safety_backup.is_(False),
                )
            ).all()
            busy = [b for b in busy if not _stale(b.metadata_)]
            if busy:
                raise ConflictError(
                    f"backup {busy[0].name} is running; restore when it has finished"
                )
        for op in running:
            op.status = RestoreStatus.FAILED
            op.error = "interrupted: the process running this restore stopped"
            op.completed_at = datetime.now(UTC)
        operation = RestoreOperation(
            id=uuid.uuid4(),
            backup_id=backup.id,
            status=RestoreStatus.PENDING,
            scope=scope,
            scope_ids=list(scope_ids),
            target_database=target.database,
            target_dir=target.directory,
            restored_by=actor.name,
            started_at=datetime.now(UTC),
            validation_results={},
            metadata_={**(metadata or {}), "worker": current_worker(), "actor_id": actor.id},
        )
        session.add(operation)
    return operation


def update_operation(ctx: ServiceContext, op_id: uuid.UUID, **changes: Any) -> RestoreOperation:
    """Set fields of the record (``status``, ``validation_results``, ``safety_backup_id`` ...).

    ``metadata`` is merged into the existing metadata rather than replacing it.
    """
    # The writer lock on SQLite, the row's lock on PostgreSQL: two updates at once both
    # land instead of one failing (SQLite) or the later overwriting the other's metadata.
    with ctx.catalog.session(write_lock=True) as session:
        op = session.get_one(RestoreOperation, op_id, with_for_update=True)
        extra = changes.pop("metadata", None)
        for key, value in changes.items():
            setattr(op, key, value)
        if extra:
            op.metadata_ = {**(op.metadata_ or {}), **extra}
        return op


def finish_operation(
    ctx: ServiceContext,
    op_id: uuid.UUID,
    status: RestoreStatus,
    *,
    error: str | None = None,
    validation_results: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> RestoreOperation:
    """Close the record with its final status; the worker mark is cleared."""
    changes: dict[str, Any] = {
        "status": status,
        "completed_at": datetime.now(UTC),
        "error": error[:4000] if error else None,
        "metadata": {**(metadata or {}), "worker": None},
    }
    if validation_results is not None:
        changes["validation_results"] = dict(validation_results)
    return update_operation(ctx, op_id, **changes)


def restore_running(ctx: ServiceContext) -> bool:
    """True while a live restore holds the platform (backups check this before starting)."""
    with ctx.catalog.session() as session:
        running = session.scalars(
            sa.select(RestoreOperation).where(RestoreOperation.status.in_(ACTIVE))
        ).all()
    return any(not _stale(op.metadata_) for op in running)


def operation_to_json(op: RestoreOperation) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": str(op.id),
        "backup_id": str(op.backup_id),
        "status": op.status.value,
        "scope": op.scope.value,
        "scope_ids": list(op.scope_ids or []),
        "target_database": op.target_database,
        "target_dir": op.target_dir,
        "restored_by": op.restored_by,
        "started_at": iso(op.started_at),
        "completed_at": iso(op.completed_at),
        "safety_backup_id": str(op.safety_backup_id) if op.safety_backup_id else None,
        "validation_results": op.validation_results or {},
        "error": op.error,
        "metadata": {k: v for k, v in (op.metadata_ or {}).items() if k != "worker"},
    }
