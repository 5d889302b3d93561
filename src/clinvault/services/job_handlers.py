"""What each kind of job does: check its parameters when submitted, then run.

A job kind pairs a ``prepare`` step, run by :meth:`JobService.submit` in the caller's
request (so a bad request is refused at once, not as a failed job minutes later), with a
``run`` step, run by a worker thread of :class:`JobRunner`. ``run`` gets a :class:`JobRun`:
the parameters, who asked, a progress callback, a cancel event and a log, and returns the
job's JSON result.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

import sqlalchemy as sa

from clinvault.catalog.models import (
    Backup,
    BackupStatus,
    BackupType,
    Job,
    JobStatus,
    RestoreOperation,
    Scope,
)
from clinvault.engine.compression import Codec, resolve_level
from clinvault.engine.progress import ProgressCallback
from clinvault.errors import ClinVaultError, ConflictError, InvalidInputError
from clinvault.services.actor import Actor
from clinvault.services.backup import BackupRequest, BackupService, default_name
from clinvault.services.context import ServiceContext
from clinvault.services.granular import GranularRestoreService
from clinvault.services.maintenance import recover_interrupted
from clinvault.services.queries import get_backup
from clinvault.services.restore import RestoreService
from clinvault.services.restore_ops import (
    RestoreTarget,
    operation_to_json,
    restore_running,
    update_operation,
)
from clinvault.services.scoping import KINDS as GRANULAR_KINDS
from clinvault.services.verify import VerifyService

BACKUP_CREATE: Final = "backup.create"
BACKUP_VERIFY: Final = "backup.verify"
RESTORE_EXECUTE: Final = "restore.execute"
RESTORE_SCOPES: Final = ("full", "database", "files", *GRANULAR_KINDS)

Params = dict[str, Any]
log = logging.getLogger(__name__)


@dataclass
class JobRun:
    """A running job as its handler sees it.

    ``target`` may be set by the handler once it knows what the job produced (a new backup's
    id, a restore operation's id); the runner records it on the job.
    """

    ctx: ServiceContext
    job_id: uuid.UUID
    params: Mapping[str, Any]
    actor: Actor
    on_progress: ProgressCallback
    cancel: threading.Event
    log: Callable[[str], None]
    target: tuple[str, str] | None = None


Handler = Callable[[JobRun], dict[str, Any]]
Prepare = Callable[[ServiceContext, Mapping[str, Any]], Params]


@dataclass(frozen=True, slots=True)
class JobKind:
    """One kind of job: its parameter check (returns the normalized parameters) and its work."""

    prepare: Prepare
    run: Handler


# --- backup.create ---------------------------------------------------------------------------


def backup_request(params: Mapping[str, Any]) -> BackupRequest:
    """The service request a ``backup.create`` job's parameters describe (``schedule_id``
    links a scheduled backup to its schedule)."""
    try:
        compression: Codec | None = params.get("compression")
        if compression not in (None, "zstd", "gzip"):
            raise ValueError(f"unknown compression {compression!r}")
        return BackupRequest(
            type=BackupType(params["type"]),
            scope=Scope(params.get("scope") or Scope.ALL),
            scope_ids=tuple(str(i) for i in params.get("scope_ids") or ()),
            name=params.get("name"),
            description=params.get("description"),
            compression=compression,
            level=params.get("level"),
            schedule_id=uuid.UUID(str(schedule))
            if (schedule := params.get("schedule_id"))
            else None,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidInputError(f"invalid backup request: {exc}") from None


def _names_taken(ctx: ServiceContext, prefix: str) -> set[str]:
    """Names starting with ``prefix`` of backups, and of those queued or running
    ``backup.create`` jobs will create."""
    with ctx.catalog.session() as session:
        names = set(
            session.scalars(
                sa.select(Backup.name).where(Backup.name.startswith(prefix, autoescape=True))
            ).all()
        )
        queued = session.scalars(
            sa.select(Job.params).where(
                Job.kind == BACKUP_CREATE,
                Job.status.in_((JobStatus.PENDING, JobStatus.RUNNING)),
            )
        ).all()
    names |= {str(p["name"]) for p in queued if p and str(p.get("name", "")).startswith(prefix)}
    return names


def prepare_backup_create(ctx: ServiceContext, params: Mapping[str, Any]) -> Params:
    """Check the request and fix the backup's name now, so that two backups submitted in one
    second do not both take the same default name."""
    request = backup_request(params)
    codec: Codec = request.compression or ctx.settings.compression
    if request.level is not None:
        resolve_level(codec, request.level)
    if request.scope is Scope.ALL and request.scope_ids:
        raise InvalidInputError("scope_ids: only allowed with a study or organization scope")
    if request.scope is not Scope.ALL and request.type is not BackupType.FILES:
        raise InvalidInputError(
            "scope: a study or organization scope applies to files backups only"
        )
    if request.scope is not Scope.ALL and not request.scope_ids:
        raise InvalidInputError(f"scope_ids: name at least one {request.scope.value}")
    if restore_running(ctx):
        raise ConflictError("a restore is running; back up when it has finished")
    name = (request.name or "").strip()
    if name:
        if name in _names_taken(ctx, name):
            raise ConflictError(f"a backup named {name!r} already exists")
    else:
        base = default_name(request.type, datetime.now(UTC))
        taken = _names_taken(ctx, base)
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
    return {**dict(params), "name": name}


def run_backup_create(run: JobRun) -> dict[str, Any]:
    row = BackupService(run.ctx).create(
        backup_request(run.params), run.actor, on_progress=run.on_progress, cancel=run.cancel
    )
    run.target = ("backup", str(row.id))
    run.log(f"backup {row.name} completed; checksum {row.checksum}")
    return {
        "backup_id": str(row.id),
        "name": row.name,
        "checksum": row.checksum,
        "file_size_bytes": row.file_size_bytes,
        "file_size_compressed": row.file_size_compressed,
        "compression_ratio": row.compression_ratio,
    }


# --- backup.verify ---------------------------------------------------------------------------


def _completed_backup(ctx: ServiceContext, backup_id: Any) -> Backup:
    row = get_backup(ctx, str(backup_id))
    if row.deleted_at is not None:
        raise ConflictError(f"backup {row.name} is deleted")
    if row.status is not BackupStatus.COMPLETED:
        raise ConflictError(f"backup {row.name} is {row.status.value}, not completed")
    return row


def prepare_backup_verify(ctx: ServiceContext, params: Mapping[str, Any]) -> Params:
    row = _completed_backup(ctx, params.get("backup_id"))
    return {"backup_id": str(row.id)}


def run_backup_verify(run: JobRun) -> dict[str, Any]:
    report = VerifyService(run.ctx).verify(
        str(run.params["backup_id"]), run.actor, on_progress=run.on_progress, cancel=run.cancel
    )
    run.log(f"verify {'passed' if report.ok else 'FAILED'}: {len(report.problems)} problem(s)")
    for problem in report.problems[:20]:
        run.log(problem)
    return report.to_json()


# --- restore.execute -------------------------------------------------------------------------


def prepare_restore(ctx: ServiceContext, params: Mapping[str, Any]) -> Params:
    """Normalize a restore request: what the signature covers, plus the signature's id."""
    row = _completed_backup(ctx, params.get("backup_id"))
    scope = params.get("scope")
    ids = [str(i) for i in params.get("ids") or []]
    if scope is not None and scope not in RESTORE_SCOPES:
        raise InvalidInputError(f"scope: use one of {', '.join(RESTORE_SCOPES)}")
    granular = scope in GRANULAR_KINDS
    if granular and not ids:
        raise InvalidInputError(f"ids: name at least one {scope} to restore")
    if not granular and ids:
        raise InvalidInputError("ids: only allowed with a study or organization scope")
    target = dict(params.get("target") or {})
    if granular and (target.get("database") or target.get("directory")):
        raise InvalidInputError("target: a study or organization restore goes to the platform")
    return {
        "backup_id": str(row.id),
        "scope": scope,
        "ids": ids,
        "target": {"database": target.get("database"), "directory": target.get("directory")},
        "safety_backup": bool(params.get("safety_backup", True)),
        "signature_id": params.get("signature_id"),
    }


def run_restore(run: JobRun) -> dict[str, Any]:
    params = run.params
    started = datetime.now(UTC)
    scope = params.get("scope")
    try:
        if scope in GRANULAR_KINDS:
            op = GranularRestoreService(run.ctx).run(
                params["backup_id"],
                scope,
                list(params["ids"]),
                run.actor,
                safety_backup=params["safety_backup"],
                on_progress=run.on_progress,
                cancel=run.cancel,
            )
        else:
            target = params.get("target") or {}
            op = RestoreService(run.ctx).run(
                params["backup_id"],
                scope,
                run.actor,
                target=RestoreTarget(target.get("database"), target.get("directory")),
                safety_backup=params["safety_backup"],
                on_progress=run.on_progress,
                cancel=run.cancel,
            )
    finally:
        _link_operation(run, started)
    run.log(f"restore {op.id} {op.status.value}")
    return {"restore_id": str(op.id), **operation_to_json(op)}


def _link_operation(run: JobRun, started: datetime) -> None:
    """Record the signature and job on the restore operation the run opened.

    The restore services open their record themselves; only one restore runs at a time, so
    the record of this backup opened since the job started is this run's.
    """
    with run.ctx.catalog.session() as session:
        op_id = session.scalar(
            sa.select(RestoreOperation.id)
            .where(
                RestoreOperation.backup_id == uuid.UUID(str(run.params["backup_id"])),
                RestoreOperation.started_at >= started,
            )
            .order_by(RestoreOperation.started_at.desc())
            .limit(1)
        )
    if op_id is not None:
        link = {"job_id": str(run.job_id), "signature_id": run.params.get("signature_id")}
        update_operation(run.ctx, op_id, metadata=link)
        run.target = ("restore", str(op_id))


def recover_interrupted_work(ctx: ServiceContext) -> dict[str, list[str]]:
    """Clean up after processes that died mid-work (at start-up): remove half-written
    backups, and roll back restores. A restore's recovery needs the platform; when it cannot
    be reached now, it is left to the next restore, which recovers first."""
    found = {"backups": recover_interrupted(ctx), "restores": []}
    try:
        found["restores"] = RestoreService(ctx).recover_interrupted()
        found["restores"] += GranularRestoreService(ctx).recover_interrupted()
    except ClinVaultError as exc:
        log.warning("interrupted restores not recovered yet: %s", exc.message)
    return found


JOB_KINDS: Final[Mapping[str, JobKind]] = MappingProxyType(
    {
        BACKUP_CREATE: JobKind(prepare_backup_create, run_backup_create),
        BACKUP_VERIFY: JobKind(prepare_backup_verify, run_backup_verify),
        RESTORE_EXECUTE: JobKind(prepare_restore, run_restore),
    }
)
