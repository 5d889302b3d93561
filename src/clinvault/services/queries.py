"""Reading backups from the catalog, and their JSON shape for the CLI and API."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from clinvault.catalog.models import Backup
from clinvault.errors import NotFoundError
from clinvault.services.context import ServiceContext


def parse_id(value: uuid.UUID | str, what: str = "backup") -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFoundError(f"{what} {value!r} not found (not a valid id)") from None


def get_backup(ctx: ServiceContext, ident: uuid.UUID | str) -> Backup:
    """A backup by id, or by exact name."""
    with ctx.catalog.session() as session:
        row: Backup | None = None
        try:
            row = session.get(Backup, parse_id(ident))
        except NotFoundError:
            row = None
        if row is None and isinstance(ident, str):
            row = session.scalar(sa.select(Backup).where(Backup.name == ident))
        if row is None:
            raise NotFoundError(f"backup {str(ident)!r} not found")
        return row


def list_backups(ctx: ServiceContext, *, include_deleted: bool = False) -> list[Backup]:
    with ctx.catalog.session() as session:
        query = sa.select(Backup).order_by(Backup.created_at.desc(), Backup.name)
        if not include_deleted:
            query = query.where(Backup.deleted_at.is_(None))
        return list(session.scalars(query))


def backup_to_json(row: Backup) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": str(row.id),
        "name": row.name,
        "type": row.type.value,
        "status": row.status.value,
        "scope": row.scope.value,
        "scope_ids": list(row.scope_ids or []),
        "description": row.description,
        "checksum": row.checksum,
        "file_path": row.file_path,
        "file_size_bytes": row.file_size_bytes,
        "file_size_compressed": row.file_size_compressed,
        "compression_ratio": row.compression_ratio,
        "compression": row.compression,
        "compression_level": row.compression_level,
        "created_by": row.created_by,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "completed_at": iso(row.completed_at),
        "error": row.error,
        "is_safety_backup": row.is_safety_backup,
        "legal_hold": row.legal_hold,
        "deleted_at": iso(row.deleted_at),
        "verified_at": iso(row.verified_at),
        "verify_status": row.verify_status,
        "metadata": row.metadata_ or {},
    }
