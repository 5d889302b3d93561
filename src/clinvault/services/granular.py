"""Restoring one study or one organization (rows and files) from a full or database backup.

The order makes the database transaction and the directory swap succeed or fail together:

1. validate the request (catalog, manifest and its checksum, per-scope counts, the keys);
2. stage the dump (its SHA-256 checked while decompressing), then the scope's rows into
   temporary tables of a live session, and check them against the manifest's counts;
3. take the safety backup (unless disabled), so the state before stays restorable;
4. extract the scope's files into staging (each SHA-256 checked), swap the directories in
   (the old ones become the checkpoint) and re-check the swapped tree against the index;
5. apply the rows in one transaction, which checks referential integrity and the counts
   before it commits; if anything fails the swap is undone, so nothing has changed.

A swap cannot be undone by a rollback, which is why files go first and the commit last;
the swap record is kept in the operation's journal meanwhile, so that
:meth:`GranularRestoreService.recover_interrupted` can put the directories back after a
crash (the uncommitted transaction of a dead session is rolled back by the server).
"""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa

from clinvault.catalog.models import RestoreOperation, RestoreStatus, Scope
from clinvault.engine.progress import ProgressCallback, ProgressTracker
from clinvault.errors import InvalidInputError
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.granular_plan import plan_restore
from clinvault.services.granular_preview import build_preview
from clinvault.services.granular_run import RUNNER, GranularJob, recover_operation
from clinvault.services.processes import worker_is_dead
from clinvault.services.queries import get_backup
from clinvault.services.restore_ops import open_operation
from clinvault.services.scoping import KINDS

_SCOPES = {"study": Scope.STUDY, "organization": Scope.ORGANIZATION}
_UNSETTLED = (RestoreStatus.FAILED, RestoreStatus.IN_PROGRESS, RestoreStatus.VALIDATING)


class GranularRestoreService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def preview(self, backup_id: str, kind: str, idents: list[str]) -> dict[str, Any]:
        """What restoring ``idents`` of ``kind`` from ``backup_id`` would change; JSON-ready."""
        return build_preview(self.ctx, plan_restore(self.ctx, backup_id, kind, idents))

    def run(
        self,
        backup_id: str,
        kind: str,
        idents: list[str],
        actor: Actor,
        *,
        safety_backup: bool = True,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> RestoreOperation:
        """Restore the rows and files of the named studies or organizations; returns the
        completed record or raises, the record then ``failed`` or ``rolled_back``."""
        if kind not in KINDS:
            raise InvalidInputError(f"unknown scope {kind!r}: use one of {', '.join(KINDS)}")
        row = get_backup(self.ctx, backup_id)
        self.recover_interrupted()
        op = open_operation(
            self.ctx,
            row,
            actor,
            scope=_SCOPES[kind],
            scope_ids=list(idents),
            metadata={"runner": RUNNER, "restore_scope": kind, "requested": list(idents)},
        )
        job = GranularJob(
            self.ctx,
            op.id,
            actor,
            kind,
            list(idents),
            safety_backup,
            ProgressTracker(on_progress),
            cancel,
        )
        job.execute(str(row.id))
        with self.ctx.catalog.session() as session:
            return session.get_one(RestoreOperation, op.id)

    def recover_interrupted(self) -> list[str]:
        """Settle the granular restores whose process stopped after swapping files.

        A transaction that never committed was rolled back by the server, so the swapped
        directories are put back (``rolled_back``); one that committed keeps them
        (``completed``). Returns the ids of the operations settled.
        """
        with self.ctx.catalog.session() as session:
            rows = session.scalars(
                sa.select(RestoreOperation).where(RestoreOperation.status.in_(_UNSETTLED))
            ).all()
        settled = []
        for op in rows:
            meta = op.metadata_ or {}
            if meta.get("runner") != RUNNER or meta.get("settled"):
                continue
            if op.status is not RestoreStatus.FAILED and not worker_is_dead(meta.get("worker")):
                continue
            if recover_operation(self.ctx, op):
                settled.append(str(op.id))
        return settled
