"""Creating backups: request validation, the catalog record's lifecycle and the audit trail.

The bundle itself is written by :class:`clinvault.engine.bundler.BundleWriter`; this service
decides what goes in it, records the backup in the catalog (``in_progress`` first, so a
killed process leaves a trace that recovery can clean), and appends audit events for the
start, the completion and any failure.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from clinvault.catalog.models import AuditOutcome, Backup, BackupStatus, BackupType, Scope
from clinvault.engine import bundle
from clinvault.engine.bundler import BundleSpec, BundleWriter, DatabaseSource, FilesSource
from clinvault.engine.compression import Codec, resolve_level
from clinvault.engine.manifest import Manifest, manifest_checksum
from clinvault.engine.pginspect import connect
from clinvault.engine.progress import ProgressCallback, ProgressTracker
from clinvault.engine.scope import TableRef
from clinvault.errors import ClinVaultError, ConflictError, InvalidInputError
from clinvault.services.actor import Actor
from clinvault.services.capacity import check_free_space
from clinvault.services.context import ServiceContext
from clinvault.services.processes import current_worker
from clinvault.services.restore_ops import restore_running
from clinvault.services.scoping import extra_links, resolve_scope, scope_roots

MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class BackupRequest:
    type: BackupType
    scope: Scope = Scope.ALL
    scope_ids: tuple[str, ...] = ()
    name: str | None = None
    description: str | None = None
    compression: Codec | None = None
    level: int | None = None
    safety: bool = False
    schedule_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    codec: Codec
    level: int
    name: str
    scope_keys: tuple[str, ...]
    scope_labels: tuple[str, ...]
    selections: tuple[str, ...]


def default_name(backup_type: BackupType, when: datetime) -> str:
    return f"{backup_type.value}-{when.strftime('%Y%m%d-%H%M%S')}"


class BackupService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def create(
        self,
        request: BackupRequest,
        actor: Actor,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Backup:
        """Take a backup; returns its completed catalog record or raises, leaving no bundle."""
        started = datetime.now(UTC)
        plan = self._plan(request, started)
        check_free_space(self.ctx, request.type, request.scope, plan.scope_keys)
        backup_id = uuid.uuid4()
        row = self._open_record(backup_id, request, plan, actor, started)
        self.ctx.audit.record(
            "backup.start",
            actor_id=actor.id,
            actor_name=actor.name,
            target_type="backup",
            target_id=str(backup_id),
            details=self._audit_details(row),
        )
        tracker = ProgressTracker(on_progress)
        spec = self._spec(backup_id, request, plan, actor, started)
        try:
            upto = self._last_audit_seq()
            writer = BundleWriter(self.ctx.storage, spec, tracker, cancel)
            manifest, data = writer.write(self.ctx.audit.export_all(until_seq=upto))
        except BaseException as exc:
            self._fail(backup_id, actor, exc)
            raise
        return self._complete(backup_id, manifest, data, actor)

    def _plan(self, request: BackupRequest, now: datetime) -> _Plan:
        codec: Codec = request.compression or self.ctx.settings.compression
        level = resolve_level(
            codec, request.level if request.level is not None else self._default_level(codec)
        )
        name = (request.name or default_name(request.type, now)).strip()
        if not name or len(name) > MAX_NAME or any(ord(c) < 32 for c in name):
            raise InvalidInputError(f"backup name must be 1 to {MAX_NAME} printable characters")
        if request.description is not None and len(request.description) > 10_000:
            raise InvalidInputError("description must be at most 10000 characters")
        if not request.safety and restore_running(self.ctx):
            raise ConflictError("a restore is running; back up when it has finished")
        with self.ctx.catalog.session() as session:
            taken = session.scalar(sa.select(Backup.id).where(Backup.name == name))
        if taken is not None:
            raise ConflictError(f"a backup named {name!r} already exists")
        roots = self.ctx.settings.file_roots
        if request.scope is Scope.ALL:
            if request.scope_ids:
                raise InvalidInputError(
                    "scope ids are only allowed with a study or organization scope"
                )
            return _Plan(codec, level, name, (), (), tuple(roots))
        if request.type is not BackupType.FILES:
            raise InvalidInputError(
                "a study or organization scope applies to files backups; database and full "
                "backups always hold the whole database (restore one study from them instead)"
            )
        with connect(self.ctx.platform) as db:
            resolved = resolve_scope(
                db, self.ctx.settings.scope, request.scope.value, list(request.scope_ids)
            )
        return _Plan(codec, level, name, resolved.keys, resolved.labels, resolved.file_paths)

    def _default_level(self, codec: Codec) -> int | None:
        settings = self.ctx.settings
        return settings.compression_level if codec == settings.compression else None

    def _spec(
        self,
        backup_id: uuid.UUID,
        request: BackupRequest,
        plan: _Plan,
        actor: Actor,
        started: datetime,
    ) -> BundleSpec:
        settings = self.ctx.settings
        database = None
        if request.type in (BackupType.FULL, BackupType.DATABASE):
            database = DatabaseSource(
                conn=self.ctx.platform,
                toolkit=self.ctx.toolkit,
                scope_roots=tuple(scope_roots(settings.scope).values()),
                extra_links=tuple(extra_links(settings.scope)),
                exclude=tuple(
                    TableRef.parse(t, settings.scope.schema_name)
                    for t in settings.scope.exclude_tables
                ),
                timeout=settings.tool_timeout_seconds,
            )
        files = None
        if request.type in (BackupType.FULL, BackupType.FILES):
            files = FilesSource(settings.resolved_files_root, plan.selections)
        return BundleSpec(
            backup_id=str(backup_id),
            name=plan.name,
            type=request.type.value,
            created_by=actor.name,
            started_at=started,
            codec=plan.codec,
            level=plan.level,
            scope=request.scope.value,
            scope_ids=plan.scope_keys,
            description=request.description,
            safety_backup=request.safety,
            database=database,
            files=files,
        )

    def _open_record(
        self,
        backup_id: uuid.UUID,
        request: BackupRequest,
        plan: _Plan,
        actor: Actor,
        started: datetime,
    ) -> Backup:
        storage = self.ctx.storage
        row = Backup(
            id=backup_id,
            name=plan.name,
            type=request.type,
            status=BackupStatus.IN_PROGRESS,
            scope=request.scope,
            scope_ids=list(plan.scope_keys),
            description=request.description,
            file_path=f"{storage.url.rstrip('/')}/{bundle.bundle_prefix(str(backup_id))}",
            compression=plan.codec,
            compression_level=plan.level,
            created_by=actor.name,
            created_at=started,
            started_at=started,
            is_safety_backup=request.safety,
            schedule_id=request.schedule_id,
            metadata_={
                "worker": current_worker(),
                "scope_labels": list(plan.scope_labels),
                "selections": list(plan.selections),
                "created_by_id": actor.id,
            },
        )
        try:
            with self.ctx.catalog.session() as session:
                session.add(row)
        except sa.exc.IntegrityError as exc:
            raise ConflictError(f"a backup named {plan.name!r} already exists") from exc
        return row

    def _last_audit_seq(self) -> int:
        head = self.ctx.audit.head()
        return 0 if head is None else head.seq

    def _complete(
        self, backup_id: uuid.UUID, manifest: Manifest, data: bytes, actor: Actor
    ) -> Backup:
        checksum = manifest_checksum(data)
        size, compressed = manifest.size, manifest.compressed_size + len(data)
        with self.ctx.catalog.session(write_lock=True) as session:
            row = session.get_one(Backup, backup_id, with_for_update=True)
            row.status = BackupStatus.COMPLETED
            row.completed_at = manifest.backup.completed_at
            row.checksum = checksum
            row.file_size_bytes = size
            row.file_size_compressed = compressed
            row.compression_ratio = round(1 - compressed / size, 4) if size else None
            row.metadata_ = {**row.metadata_, **summary_metadata(manifest), "worker": None}
        self.ctx.audit.record(
            "backup.create",
            actor_id=actor.id,
            actor_name=actor.name,
            target_type="backup",
            target_id=str(backup_id),
            details={"checksum": checksum, **self._audit_details(row)},
        )
        return row

    def _fail(self, backup_id: uuid.UUID, actor: Actor, exc: BaseException) -> None:
        message = exc.message if isinstance(exc, ClinVaultError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, KeyboardInterrupt):
            message = "interrupted"
        with self.ctx.catalog.session(write_lock=True) as session:
            row = session.get_one(Backup, backup_id, with_for_update=True)
            row.status = BackupStatus.FAILED
            row.completed_at = datetime.now(UTC)
            row.error = message[:4000]
            row.metadata_ = {**row.metadata_, "worker": None}
        self.ctx.audit.record(
            "backup.create",
            actor_id=actor.id,
            actor_name=actor.name,
            outcome=AuditOutcome.FAILURE,
            target_type="backup",
            target_id=str(backup_id),
            details={"error": message[:1000]},
        )

    @staticmethod
    def _audit_details(row: Backup) -> dict[str, Any]:
        return {
            "name": row.name,
            "type": row.type.value,
            "scope": row.scope.value,
            "scope_ids": list(row.scope_ids),
            "compression": row.compression,
            "level": row.compression_level,
            "safety_backup": row.is_safety_backup,
        }


def summary_metadata(manifest: Manifest) -> dict[str, Any]:
    """What the catalog keeps of a manifest for listing and details (not the file index)."""
    meta: dict[str, Any] = {
        "format_version": manifest.format_version,
        "tool_version": manifest.tool.version,
        "parts": [p.model_dump(mode="json") for p in manifest.parts],
        "source": manifest.source.model_dump(mode="json"),
    }
    if manifest.database is not None:
        meta["tables"] = len(manifest.database.tables)
        meta["rows"] = sum(manifest.database.tables.values())
        meta["scopes"] = {k: len(v.counts) for k, v in manifest.database.scopes.items()}
    if manifest.files is not None:
        meta["files"] = manifest.files.file_count
        meta["files_bytes"] = manifest.files.total_bytes
        meta["file_warnings"] = manifest.files.warnings[:100]
        meta["file_warning_count"] = len(manifest.files.warnings)
    if manifest.audit is not None:
        meta["audit_events"] = manifest.audit.events
    return meta
