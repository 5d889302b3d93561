"""Keeping catalog and storage in step: recovery of interrupted work and catalog rebuild."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from clinvault.catalog.models import AuditOutcome, Backup, BackupStatus, BackupType, Scope
from clinvault.engine import bundle
from clinvault.engine.checks import read_manifest
from clinvault.engine.manifest import Manifest, manifest_checksum
from clinvault.errors import ClinVaultError
from clinvault.services.actor import Actor
from clinvault.services.backup import summary_metadata
from clinvault.services.context import ServiceContext
from clinvault.services.processes import worker_is_dead

UNFINISHED = (BackupStatus.PENDING, BackupStatus.IN_PROGRESS)


def recover_interrupted(ctx: ServiceContext) -> list[str]:
    """Fail backups whose process died, and remove their partial objects.

    Returns the ids recovered. Work of live processes, and of other hosts, is left alone.
    """
    with ctx.catalog.session() as session:
        rows = list(session.scalars(sa.select(Backup).where(Backup.status.in_(UNFINISHED))))
    dead = [r for r in rows if worker_is_dead((r.metadata_ or {}).get("worker"))]
    recovered: list[str] = []
    for row in dead:
        removed = ctx.storage.delete_prefix(bundle.bundle_prefix(str(row.id)))
        with ctx.catalog.session(write_lock=True) as session:
            current = session.get_one(Backup, row.id, with_for_update=True)
            if current.status not in UNFINISHED:
                continue
            current.status = BackupStatus.FAILED
            current.completed_at = datetime.now(UTC)
            current.error = (
                "interrupted: the process running this backup stopped before it finished"
            )
            current.metadata_ = {**(current.metadata_ or {}), "worker": None}
        system = Actor.system()
        ctx.audit.record(
            "backup.recover",
            actor_id=system.id,
            actor_name=system.name,
            outcome=AuditOutcome.FAILURE,
            target_type="backup",
            target_id=str(row.id),
            details={"name": row.name, "partial_objects_removed": removed},
        )
        recovered.append(str(row.id))
    return recovered


@dataclass
class RebuildReport:
    added: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    missing_in_storage: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) for k, v in self.__dict__.items()}


def _stored_ids(ctx: ServiceContext) -> list[str]:
    ids = {bundle.backup_id_from_key(info.key) for info in ctx.storage.list(bundle.BACKUPS_PREFIX)}
    return sorted(i for i in ids if i is not None)


def _row_from_manifest(manifest: Manifest, data: bytes, file_path: str) -> Backup:
    info = manifest.backup
    size, compressed = manifest.size, manifest.compressed_size + len(data)
    level = manifest.parts[0].level if manifest.parts else 0
    codec = manifest.parts[0].codec if manifest.parts else "zstd"
    return Backup(
        id=uuid.UUID(info.id),
        name=info.name,
        type=BackupType(info.type),
        status=BackupStatus.COMPLETED,
        scope=Scope(info.scope),
        scope_ids=list(info.scope_ids),
        description=info.description,
        file_path=file_path,
        file_size_bytes=size,
        file_size_compressed=compressed,
        compression_ratio=round(1 - compressed / size, 4) if size else None,
        compression=codec,
        compression_level=level,
        checksum=manifest_checksum(data),
        created_by=info.created_by,
        created_at=info.started_at,
        started_at=info.started_at,
        completed_at=info.completed_at,
        is_safety_backup=info.safety_backup,
        metadata_={**summary_metadata(manifest), "rebuilt_from_storage": True},
    )


def rebuild_catalog(ctx: ServiceContext, actor: Actor) -> RebuildReport:
    """Make the catalog list every complete bundle in storage, from the manifests alone."""
    report = RebuildReport()
    stored = _stored_ids(ctx)
    for backup_id in stored:
        _rebuild_one(ctx, backup_id, report)
    with ctx.catalog.session() as session:
        completed = session.scalars(
            sa.select(Backup.id).where(
                Backup.status == BackupStatus.COMPLETED, Backup.deleted_at.is_(None)
            )
        )
        known = set(stored)
        report.missing_in_storage = sorted(str(i) for i in completed if str(i) not in known)
    ctx.audit.record(
        "catalog.rebuild",
        actor_id=actor.id,
        actor_name=actor.name,
        details={k: len(v) for k, v in report.to_json().items()},
    )
    return report


def _rebuild_one(ctx: ServiceContext, backup_id: str, report: RebuildReport) -> None:
    file_path = f"{ctx.storage.url.rstrip('/')}/{bundle.bundle_prefix(backup_id)}"
    try:
        manifest, data = read_manifest(ctx.storage, backup_id)
    except ClinVaultError as exc:
        kind = "incomplete" if "manifest.json is missing" in exc.message else "unreadable"
        getattr(report, kind).append(backup_id)
        return
    row = _row_from_manifest(manifest, data, file_path)
    with ctx.catalog.session(write_lock=True) as session:
        existing = session.get(Backup, row.id)
        if existing is None:
            clash = session.scalar(sa.select(Backup.id).where(Backup.name == row.name))
            if clash is not None:
                row.name = f"{row.name} ({backup_id[:8]})"
            session.add(row)
            report.added.append(backup_id)
        elif existing.checksum not in (None, row.checksum):
            report.conflicts.append(backup_id)
        elif existing.status is not BackupStatus.COMPLETED or existing.checksum is None:
            if existing.status in UNFINISHED and not worker_is_dead(
                (existing.metadata_ or {}).get("worker")
            ):
                report.unchanged.append(backup_id)
                return
            existing.status = BackupStatus.COMPLETED
            existing.checksum = row.checksum
            existing.error = None
            existing.completed_at = row.completed_at
            existing.file_size_bytes = row.file_size_bytes
            existing.file_size_compressed = row.file_size_compressed
            existing.compression_ratio = row.compression_ratio
            existing.metadata_ = {**(existing.metadata_ or {}), **row.metadata_}
            report.repaired.append(backup_id)
        else:
            report.unchanged.append(backup_id)
