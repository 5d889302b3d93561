"""Restoring a backup: full, database only or files only, to the live platform or beside it.

The order of a restore (DESIGN §4): validate the bundle (nothing is touched if it fails),
stage and verify beside the live platform, take the safety backup, then a short cut-over
by renames whose old halves are the checkpoint, validate what is now live, and run the post
hook. Any failure after the first change rolls everything back from the journal; the
``restore_operations`` record says ``rolled_back`` with the cause. One restore runs at a
time, never beside a backup (:mod:`clinvault.services.restore_ops`). Every step that
matters is in the audit trail.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from clinvault.catalog.models import (
    AuditOutcome,
    Backup,
    BackupType,
    RestoreOperation,
    RestoreStatus,
    Scope,
)
from clinvault.engine.dbrestore import swap_refusal
from clinvault.engine.progress import ProgressCallback, ProgressTracker
from clinvault.errors import ClinVaultError, InvalidInputError
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.queries import get_backup
from clinvault.services.restore_checkpoints import drop_checkpoints, list_checkpoints
from clinvault.services.restore_journal import (
    RUNNER,
    audit_restore,
    checkpoint_of,
    cleanup_journal,
    journal_changed,
    recover_interrupted,
    rollback_journal,
)
from clinvault.services.restore_ops import (
    RestoreTarget,
    finish_operation,
    open_operation,
    update_operation,
)
from clinvault.services.restore_preview import preview_restore
from clinvault.services.restore_run import (
    Method,
    RestoredDataError,
    RestoreJob,
    RestoreRunner,
    create_safety_backup,
)
from clinvault.services.restore_validation import (
    BackupValidation,
    RestoreScope,
    RestoreSite,
    restore_site,
    validate_backup,
    validate_restored_data,
)

log = logging.getLogger(__name__)
LIVE = RestoreTarget()  # the platform itself
_SCOPE_OF_TYPE = {
    BackupType.FULL: RestoreScope.FULL,
    BackupType.DATABASE: RestoreScope.DATABASE,
    BackupType.FILES: RestoreScope.FILES,
}


def _message(exc: BaseException) -> str:
    if isinstance(exc, ClinVaultError):
        return exc.message
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"


def choose_method(
    ctx: ServiceContext, site: RestoreSite, scope: RestoreScope, validation: BackupValidation
) -> Method:
    """Swap by rename where the role may; in place (one transaction) where it may not."""
    if "database" not in scope.parts:
        return "swap"
    if not site.live:
        return "new_database"
    setting = ctx.settings.restore_method
    if setting == "in_place":
        return "in_place"
    refusal = swap_refusal(site.server, site.database)
    if refusal is None:
        return "swap"
    if setting == "swap":
        validation.add("method", False, f"restore_method is swap, but {refusal}")
        return "swap"
    validation.add("method", True, f"restoring in place: {refusal}")
    return "in_place"


class RestoreService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    # --- before --------------------------------------------------------------------------

    def scope_for(self, row: Backup, scope: RestoreScope | str | None) -> RestoreScope:
        """The scope asked for, or the backup's own type when none is given."""
        return RestoreScope(scope) if scope is not None else _SCOPE_OF_TYPE[row.type]

    def validate_backup(
        self,
        backup_id: uuid.UUID | str,
        scope: RestoreScope | str | None = None,
        target: RestoreTarget = LIVE,
        *,
        check_hashes: bool = True,
        cancel: threading.Event | None = None,
    ) -> BackupValidation:
        """Every check a restore makes before changing anything, without restoring."""
        row = get_backup(self.ctx, backup_id)
        return validate_backup(
            self.ctx,
            row,
            self.scope_for(row, scope),
            target,
            check_hashes=check_hashes,
            cancel=cancel,
        )

    def preview(
        self, backup_id: uuid.UUID | str, scope: RestoreScope | str | None = None
    ) -> dict[str, Any]:
        """What a restore of ``backup_id`` would change on the live platform; changes nothing."""
        row = get_backup(self.ctx, backup_id)
        resolved = self.scope_for(row, scope)
        validation = validate_backup(self.ctx, row, resolved, LIVE, check_hashes=False)
        site = restore_site(self.ctx, LIVE)
        method = choose_method(self.ctx, site, resolved, validation) if validation.ok else None
        return preview_restore(self.ctx, row, resolved, validation, method)

    # --- running -------------------------------------------------------------------------

    def restore_database(
        self, backup_id: uuid.UUID | str, actor: Actor, **options: Any
    ) -> RestoreOperation:
        return self.run(backup_id, RestoreScope.DATABASE, actor, **options)

    def restore_files(
        self, backup_id: uuid.UUID | str, actor: Actor, **options: Any
    ) -> RestoreOperation:
        return self.run(backup_id, RestoreScope.FILES, actor, **options)

    def restore_full_backup(
        self, backup_id: uuid.UUID | str, actor: Actor, **options: Any
    ) -> RestoreOperation:
        return self.run(backup_id, RestoreScope.FULL, actor, **options)

    def run(
        self,
        backup_id: uuid.UUID | str,
        scope: RestoreScope | str | None,
        actor: Actor,
        *,
        target: RestoreTarget = LIVE,
        safety_backup: bool = True,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> RestoreOperation:
        """Restore ``backup_id``; returns the completed record, or raises after rolling back
        (the record then says ``failed`` or ``rolled_back``, with the cause)."""
        self.recover_interrupted()
        row = get_backup(self.ctx, backup_id)
        resolved = self.scope_for(row, scope)
        details = {
            "backup_id": str(row.id),
            "backup_name": row.name,
            "scope": resolved.value,
            "target_database": target.database,
            "target_dir": target.directory,
            "safety_backup": safety_backup,
        }
        try:
            op = open_operation(
                self.ctx,
                row,
                actor,
                scope=Scope.ALL,
                scope_ids=[],
                target=target,
                metadata={"runner": RUNNER, "restore_scope": resolved.value, "backup": row.name},
            )
        except ClinVaultError as exc:
            refused = {**details, "error": exc.message}
            audit_restore(self.ctx, "restore.start", actor, None, refused, AuditOutcome.FAILURE)
            raise
        audit_restore(self.ctx, "restore.start", actor, op.id, details)
        run = _Run(self, op.id, actor, time.monotonic())
        tracker = ProgressTracker(on_progress)
        try:
            job = run.prepare(row, resolved, target, safety_backup, tracker, cancel)
            run.runner = RestoreRunner(self.ctx, job, actor, tracker, cancel)
            run.results.update(run.runner.execute())
        except BaseException as exc:
            run.fail(exc)
            raise
        return run.complete(job)

    def create_safety_backup(
        self,
        scope: RestoreScope,
        actor: Actor,
        *,
        name: str | None = None,
        cancel: threading.Event | None = None,
    ) -> Backup:
        """A regular backup of the current state, marked as a safety backup."""
        return create_safety_backup(self.ctx, scope, actor, name=name, cancel=cancel)

    def validate_restored_data(
        self,
        backup_id: uuid.UUID | str,
        scope: RestoreScope | str | None = None,
        target: RestoreTarget = LIVE,
    ) -> dict[str, Any]:
        """Compare what is at ``target`` now with the backup's manifest."""
        row = get_backup(self.ctx, backup_id)
        resolved = self.scope_for(row, scope)
        validation = validate_backup(self.ctx, row, resolved, target, check_hashes=False)
        if validation.manifest is None:
            validation.raise_if_failed()
        assert validation.manifest is not None
        site = restore_site(self.ctx, target)
        return validate_restored_data(self.ctx, validation.manifest, resolved, site)

    # --- records -------------------------------------------------------------------------

    def history(self, limit: int = 200) -> list[RestoreOperation]:
        with self.ctx.catalog.session() as session:
            query = (
                sa.select(RestoreOperation)
                .order_by(RestoreOperation.started_at.desc())
                .limit(limit)
            )
            return list(session.scalars(query))

    def recover_interrupted(self) -> list[str]:
        """Roll back and close restores whose process died; see :func:`recover_interrupted`."""
        return recover_interrupted(self.ctx)

    def checkpoints(self) -> list[dict[str, Any]]:
        """Checkpoints still kept (renamed databases, old trees), newest first."""
        return list_checkpoints(self.ctx)

    def drop_checkpoints(
        self,
        actor: Actor,
        *,
        keep: int | None = None,
        operation_ids: list[str] | None = None,
    ) -> list[str]:
        """Drop the named checkpoints, or all but the newest ``keep`` (default: the setting);
        each drop is audited. Returns the operation ids whose checkpoints were dropped."""
        return drop_checkpoints(self.ctx, actor, keep=keep, operation_ids=operation_ids)


class _Run:
    """One call of :meth:`RestoreService.run`: its record, results and outcome."""

    def __init__(
        self, service: RestoreService, op_id: uuid.UUID, actor: Actor, started: float
    ) -> None:
        self.service = service
        self.ctx = service.ctx
        self.op_id = op_id
        self.actor = actor
        self.started = started
        self.results: dict[str, Any] = {}
        self.runner: RestoreRunner | None = None

    def prepare(
        self,
        row: Backup,
        scope: RestoreScope,
        target: RestoreTarget,
        safety_backup: bool,
        tracker: ProgressTracker,
        cancel: threading.Event | None,
    ) -> RestoreJob:
        """Validate and decide everything; nothing has changed when this raises."""
        update_operation(self.ctx, self.op_id, status=RestoreStatus.VALIDATING)
        tracker.start("validate", "checking the backup")
        validation = validate_backup(
            self.ctx,
            row,
            scope,
            target,
            on_bytes=lambda n: tracker.advance("validate", n),
            cancel=cancel,
        )
        tracker.finish("validate")
        site = restore_site(self.ctx, target)
        method = choose_method(self.ctx, site, scope, validation) if validation.ok else "swap"
        live_safety = safety_backup and site.live
        if method == "in_place" and not live_safety:
            validation.add(
                "safety_backup",
                False,
                "restoring in place needs the safety backup (it is the only checkpoint)",
                InvalidInputError,
            )
        self.results["backup"] = validation.to_json()
        update_operation(
            self.ctx,
            self.op_id,
            validation_results=dict(self.results),
            metadata={"method": method, "safety_backup": live_safety},
        )
        validation.raise_if_failed()
        assert validation.manifest is not None
        tool = None
        if "database" in scope.parts:
            assert validation.tool_major is not None
            tool = self.ctx.toolkit.find("pg_restore", validation.tool_major)
        update_operation(self.ctx, self.op_id, status=RestoreStatus.IN_PROGRESS)
        return RestoreJob(
            self.op_id, row, validation.manifest, scope, site, method, live_safety, tool
        )

    def fail(self, exc: BaseException) -> None:
        """Roll back what changed, clean up, record and audit the failure."""
        journal = self.runner.journal if self.runner is not None else {}
        changed = journal_changed(journal)
        undone: list[str] = []
        problem = None
        if changed:
            try:
                undone = rollback_journal(self.ctx, journal)
            except ClinVaultError as rollback_exc:
                problem = rollback_exc.message
        restart = self.runner.restart_services() if self.runner is not None else None
        try:
            cleanup_journal(self.ctx, journal, "keep" if problem else "discard")
        except (ClinVaultError, OSError) as cleanup_exc:
            log.warning("cleaning up after restore %s failed: %s", self.op_id, cleanup_exc)
        status = RestoreStatus.ROLLED_BACK if changed and not problem else RestoreStatus.FAILED
        error = ("rolled back: " if status is RestoreStatus.ROLLED_BACK else "") + _message(exc)
        if problem:
            error += f"; ROLLBACK FAILED, the checkpoint is kept as it is: {problem}"
        if restart:
            error += f"; restarting the dependent services failed: {restart}"
        if isinstance(exc, RestoredDataError):
            self.results["restored"] = exc.results
        finish_operation(
            self.ctx,
            self.op_id,
            status,
            error=error,
            validation_results=self.results,
            metadata={
                "journal": journal,
                "settled": True,
                "rollback": undone,
                "hooks": self.runner.hooks if self.runner is not None else [],
            },
        )
        details = {"status": status.value, "error": error[:1000]}
        audit_restore(
            self.ctx, "restore.fail", self.actor, self.op_id, details, AuditOutcome.FAILURE
        )
        if changed:
            outcome = AuditOutcome.FAILURE if problem else AuditOutcome.SUCCESS
            rollback = {"cause": _message(exc)[:1000], "undone": undone, "error": problem}
            audit_restore(self.ctx, "restore.rollback", self.actor, self.op_id, rollback, outcome)

    def complete(self, job: RestoreJob) -> RestoreOperation:
        assert self.runner is not None
        journal = self.runner.journal
        checkpoint = checkpoint_of(journal)
        cleanup_journal(self.ctx, journal, "completed")
        seconds = round(time.monotonic() - self.started, 3)
        dump = job.manifest.part("database")
        restored_bytes = (dump.size if dump is not None and job.database else 0) + (
            job.manifest.files.total_bytes if job.manifest.files is not None and job.files else 0
        )
        if checkpoint:
            checkpoint["created_at"] = datetime.now(UTC).isoformat()
        finish_operation(
            self.ctx,
            self.op_id,
            RestoreStatus.COMPLETED,
            validation_results=self.results,
            metadata={
                "journal": journal,
                "settled": True,
                "checkpoint": checkpoint,
                "hooks": self.runner.hooks,
                "bytes_restored": restored_bytes,
                "duration_seconds": seconds,
            },
        )
        details = {"seconds": seconds, "checkpoint": checkpoint, "method": job.method}
        audit_restore(self.ctx, "restore.complete", self.actor, self.op_id, details)
        if checkpoint:
            self.service.drop_checkpoints(self.actor)
        with self.ctx.catalog.session() as session:
            return session.get_one(RestoreOperation, self.op_id)
