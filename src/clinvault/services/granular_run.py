"""One study or organization restore, from validation to its final status.

See :mod:`clinvault.services.granular` for the order of the steps and why it is safe.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from clinvault.catalog.models import AuditOutcome, BackupType, RestoreOperation, RestoreStatus
from clinvault.engine.filerestore import (
    SwapRecord,
    check_tree,
    extract_entries,
    plan_swap,
    remove_tree,
    swap_directories,
    undo_swap,
)
from clinvault.engine.granular_apply import ApplyResult, apply_scope, transaction_outcome
from clinvault.engine.pginspect import connect
from clinvault.engine.progress import ProgressTracker
from clinvault.errors import CancelledError, ClinVaultError
from clinvault.services.actor import Actor
from clinvault.services.backup import BackupRequest, BackupService
from clinvault.services.context import ServiceContext
from clinvault.services.granular_plan import (
    GranularPlan,
    Prepared,
    plan_restore,
    prepare,
    staged_dump,
)
from clinvault.services.granular_preview import estimate_scope_bytes
from clinvault.services.restore_checkpoints import drop_checkpoints
from clinvault.services.restore_ops import finish_operation, update_operation

RUNNER = "granular"  # marks the records this module writes and can recover


@dataclass
class GranularJob:
    """One granular restore from validation to its final status."""

    ctx: ServiceContext
    op_id: uuid.UUID
    actor: Actor
    kind: str
    idents: list[str]
    safety_backup: bool
    tracker: ProgressTracker
    cancel: threading.Event | None
    plan: GranularPlan | None = None
    work: Path | None = None
    swap: SwapRecord | None = None
    changed: bool = False
    xid: int | None = None
    committed: bool = False
    results: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.op_id.hex[:12]

    def execute(self, backup_id: str) -> None:
        self._audit("restore.start", {"backup_id": backup_id, "requested": self.idents})
        try:
            self._run(backup_id)
        except BaseException as exc:
            self._fail(exc)
            raise

    def _run(self, backup_id: str) -> None:
        update_operation(self.ctx, self.op_id, status=RestoreStatus.VALIDATING)
        plan = self.plan = plan_restore(self.ctx, backup_id, self.kind, self.idents)
        update_operation(
            self.ctx, self.op_id, scope_ids=list(plan.keys), metadata={"labels": list(plan.labels)}
        )
        self.tracker.plan("stage_dump", plan.database_part.compressed_size)
        self.tracker.plan("load_rows", plan.database_part.size)
        started = time.monotonic()
        with staged_dump(
            self.ctx,
            plan,
            f"granular-{self.short}",
            on_bytes=self._meter("stage_dump"),
            cancel=self.cancel,
        ) as dump:
            self.timing["stage_seconds"] = time.monotonic() - started
            self.tracker.finish("stage_dump")
            with prepare(
                self.ctx, plan, dump, on_bytes=self._meter("load_rows"), cancel=self.cancel
            ) as prepared:
                self.timing["load_seconds"] = (
                    time.monotonic() - started - self.timing["stage_seconds"]
                )
                self.tracker.finish("load_rows")
                self.results["checks"] = [c.to_json() for c in plan.checks]
                self.results["backup_counts"] = prepared.staged.counts()
                update_operation(self.ctx, self.op_id, validation_results=self.results)
                if self.safety_backup:
                    self._take_safety_backup(plan)
                self._check_cancel()
                update_operation(self.ctx, self.op_id, status=RestoreStatus.IN_PROGRESS)
                self._restore(plan, prepared)
        self._complete(plan)

    def _meter(self, stage: str) -> Callable[[int], None]:
        self.tracker.start(stage)

        def advance(nbytes: int) -> None:
            self.tracker.advance(stage, nbytes)

        return advance

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError("restore cancelled before anything changed")

    def _take_safety_backup(self, plan: GranularPlan) -> None:
        """A bundle of the state before, so the restore itself can be undone later."""
        self.tracker.start("safety_backup")
        kind = BackupType.FULL if plan.files_part is not None else BackupType.DATABASE
        request = BackupRequest(
            kind,
            safety=True,
            name=f"pre-restore-{self.op_id}",
            description=f"safety backup before restore {self.op_id}",
        )
        backup = BackupService(self.ctx).create(request, self.actor, cancel=self.cancel)
        update_operation(self.ctx, self.op_id, safety_backup_id=backup.id)
        self.tracker.finish("safety_backup")

    def _restore(self, plan: GranularPlan, prepared: Prepared) -> None:
        files_root = self.ctx.settings.resolved_files_root
        self.work = self.ctx.settings.restore_work_root(files_root) / f"granular-{self.short}"
        started = time.monotonic()
        self._stage_files(plan, prepared, self.work)
        self._check_cancel()
        self._swap_files(prepared, files_root, self.work)
        self.timing["files_seconds"] = time.monotonic() - started
        try:
            self._verify_files(prepared, files_root)
            started = time.monotonic()
            self.tracker.start("apply")
            self.changed = True
            result = apply_scope(
                prepared.db, prepared.staged, plan.expected, before_commit=self._committing
            )
            self.timing["apply_seconds"] = time.monotonic() - started
        except BaseException:
            if not self._committed_anyway():
                with contextlib.suppress(Exception):  # the cause matters more; _fail retries
                    self._undo_swap()
            raise
        self.committed = True
        self._journal("committed")
        self.tracker.finish("apply")
        self.timing["scope_bytes"] = estimate_scope_bytes(prepared.db, plan)
        self._record_apply(result)

    def _stage_files(self, plan: GranularPlan, prepared: Prepared, work: Path) -> None:
        self.results["files"] = {"directories": prepared.directories, "warnings": prepared.warnings}
        if not prepared.directories or plan.files_part is None:
            return
        remove_tree(work / "staging")
        total = sum(e.size for e in prepared.entries if e.kind == "file")
        self.tracker.plan("extract_files", total)
        extracted = extract_entries(
            self.ctx.storage,
            plan.backup_id,
            plan.files_part,
            prepared.entries,
            work / "staging",
            on_bytes=self._meter("extract_files"),
            cancel=self.cancel,
        )
        self.tracker.finish("extract_files")
        self.timing["files_bytes"] = extracted.bytes
        self.results["files"]["extracted"] = {
            "files": extracted.files,
            "dirs": extracted.dirs,
            "symlinks": extracted.symlinks,
            "bytes": extracted.bytes,
        }

    def _swap_files(self, prepared: Prepared, files_root: Path, work: Path) -> None:
        if not prepared.directories:
            return
        planned = plan_swap(files_root, work / "staging", prepared.directories, work / "checkpoint")
        self._journal("swapping", planned)
        self.changed = True
        self.swap = swap_directories(
            files_root, work / "staging", prepared.directories, work / "checkpoint"
        )
        self._journal("swapped", self.swap)

    def _verify_files(self, prepared: Prepared, files_root: Path) -> None:
        if not prepared.directories:
            return
        checked = check_tree(files_root, prepared.entries, prepared.directories, cancel=self.cancel)
        self.results["files"]["check"] = checked.to_json()
        if checked.problems:
            raise ClinVaultError(
                f"restored files do not match the backup: {'; '.join(checked.problems[:5])}"
            )

    def _undo_swap(self) -> None:
        if self.swap is None:
            return
        undo_swap(self.swap)
        self._journal("undone")
        self.swap = None

    def _committing(self, xid: int) -> None:
        """Called inside the transaction, checks passed: after a crash from here on, the
        transaction's fate (asked of the server) decides whether the swap stays."""
        self.xid = xid
        self._journal("committing")

    def _committed_anyway(self) -> bool:
        """True when the commit happened although the call failed (a lost connection)."""
        if self.xid is None:
            return False
        with contextlib.suppress(ClinVaultError, psycopg.Error), connect(self.ctx.platform) as db:
            self.committed = transaction_outcome(db, self.xid) == "committed"
        return self.committed

    def _journal(self, phase: str, record: SwapRecord | None = None) -> None:
        swap = record or self.swap
        journal: dict[str, Any] = {"phase": phase, "xid": self.xid}
        if swap is not None:
            journal["swap"] = swap.to_json()
        update_operation(self.ctx, self.op_id, metadata={"journal": journal})

    def _record_apply(self, result: ApplyResult) -> None:
        assert self.plan is not None
        self.results["database"] = result.to_json()
        self.results["expected_counts"] = dict(sorted(self.plan.expected.items()))
        self.results["live_counts"] = result.counts
        self.results["counts_match"] = result.counts == {
            t: self.plan.expected.get(t, 0) for t in result.counts
        }
        self.results["ok"] = True

    def _complete(self, plan: GranularPlan) -> None:
        checkpoint = self._keep_checkpoint()
        timing = {
            "scan_bytes": plan.database_part.size,
            "scan_seconds": self.timing.get("stage_seconds", 0.0)
            + self.timing.get("load_seconds", 0.0),
            "apply_bytes": self.timing.get("scope_bytes", 0),
            "apply_seconds": self.timing.get("apply_seconds", 0.0),
            "files_bytes": self.timing.get("files_bytes", 0),
            "files_seconds": self.timing.get("files_seconds", 0.0),
        }
        finish_operation(
            self.ctx,
            self.op_id,
            RestoreStatus.COMPLETED,
            validation_results=self.results,
            metadata={"checkpoint": checkpoint, "granular_timing": timing, "settled": True},
        )
        database = self.results.get("database", {})
        self._audit(
            "restore.complete",
            {
                **plan.scope_json(),
                "backup_id": plan.backup_id,
                "counts": database.get("counts"),
                "deleted": database.get("deleted"),
                "inserted": database.get("inserted"),
                "updated": database.get("updated"),
                "files": self.results.get("files", {}).get("extracted"),
                "checkpoint": checkpoint,
            },
        )
        if checkpoint:
            self._prune_checkpoints()

    def _keep_checkpoint(self) -> dict[str, Any] | None:
        """The old directories stay as the checkpoint when the settings keep checkpoints;
        everything else of the work directory goes."""
        if self.work is None:
            return None
        remove_tree(self.work / "staging")
        checkpoint = self.work / "checkpoint"
        has_content = checkpoint.is_dir() and any(checkpoint.iterdir())
        keep = has_content and self.swap is not None and self.ctx.settings.checkpoint_keep > 0
        if not keep:
            remove_tree(checkpoint)
            _remove_empty(self.work)
            return None
        return {
            "database": None,
            "directory": str(checkpoint),
            "created_at": datetime.now(UTC).isoformat(),
        }

    def _prune_checkpoints(self) -> None:
        """Keep only the newest checkpoints, as many as the settings say (all restores)."""
        with contextlib.suppress(ClinVaultError, OSError):
            drop_checkpoints(self.ctx, self.actor)

    def _fail(self, exc: BaseException) -> None:
        message = exc.message if isinstance(exc, ClinVaultError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, KeyboardInterrupt):
            message = "interrupted"
        if self.committed:
            message = f"the restore committed, but then: {message}"
        elif self.swap is not None:
            with contextlib.suppress(Exception):
                self._undo_swap()
        undone = self.changed and not self.committed and self.swap is None
        status = RestoreStatus.ROLLED_BACK if undone else RestoreStatus.FAILED
        if self.swap is not None and not self.committed:
            message += "; the file swap could not be undone: see the journal's checkpoint"
        elif self.work is not None and not self.committed:
            with contextlib.suppress(OSError):
                remove_tree(self.work)
            _remove_empty(self.work)
        self.results["ok"] = False
        self.results["error"] = message[:1000]
        finish_operation(
            self.ctx,
            self.op_id,
            status,
            error=message,
            validation_results=self.results,
            metadata={"settled": self.committed or self.swap is None},
        )
        action = "restore.rollback" if undone else "restore.fail"
        details: dict[str, Any] = {"error": message[:1000], "requested": self.idents}
        if self.plan is not None:
            details.update(self.plan.scope_json(), backup_id=self.plan.backup_id)
        self._audit(action, details, outcome=AuditOutcome.FAILURE)

    def _audit(
        self, action: str, details: dict[str, Any], outcome: AuditOutcome = AuditOutcome.SUCCESS
    ) -> None:
        self.ctx.audit.record(
            action,
            actor_id=self.actor.id,
            actor_name=self.actor.name,
            outcome=outcome,
            target_type="restore",
            target_id=str(self.op_id),
            details={"scope": self.kind, **details},
        )


def recover_operation(ctx: ServiceContext, op: RestoreOperation) -> bool:
    """Settle one interrupted granular restore from its journal; False if it cannot be yet."""
    journal = dict((op.metadata_ or {}).get("journal") or {})
    phase, xid = journal.get("phase"), journal.get("xid")
    outcome = "aborted"
    if phase in ("committing", "committed") and isinstance(xid, int):
        with connect(ctx.platform) as db:
            outcome = transaction_outcome(db, xid) or "unknown"
    if outcome in ("in progress", "unknown"):
        return False
    swap = journal.get("swap")
    if outcome == "committed":
        status, note = RestoreStatus.COMPLETED, "recovered: the transaction had committed"
    elif phase is None:
        status, note = RestoreStatus.FAILED, "recovered: it stopped before changing anything"
    else:
        if swap and phase != "undone":
            undo_swap(SwapRecord.from_json(swap))
        status, note = RestoreStatus.ROLLED_BACK, "recovered: nothing had committed"
    finish_operation(
        ctx,
        op.id,
        status,
        error=None if outcome == "committed" else (op.error or "interrupted: the process stopped"),
        metadata={"journal": {**journal, "phase": f"recovered-{outcome}"}, "settled": True},
    )
    actions = {
        RestoreStatus.COMPLETED: "restore.complete",
        RestoreStatus.FAILED: "restore.fail",
        RestoreStatus.ROLLED_BACK: "restore.rollback",
    }
    ctx.audit.record(
        actions[status],
        actor_id="system",
        actor_name="ClinVault system",
        outcome=AuditOutcome.SUCCESS if outcome == "committed" else AuditOutcome.FAILURE,
        target_type="restore",
        target_id=str(op.id),
        details={"reason": note},
    )
    return True


def _remove_empty(directory: Path) -> None:
    """Remove ``directory`` and its parent if they are empty (the shared work root)."""
    for path in (directory, directory.parent):
        with contextlib.suppress(OSError):
            path.rmdir()
