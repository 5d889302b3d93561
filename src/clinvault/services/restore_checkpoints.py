"""Checkpoints a restore leaves behind: listing them and dropping them (audited).

A restore by swap keeps the state it replaced: the live database renamed
``<db>__pre_restore_<id>`` and the replaced directories under the restore's work
directory. The operation record names them (``metadata.checkpoint``); ``checkpoint_keep``
says how many are kept, newest first, and every drop is in the audit trail.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from clinvault.catalog.models import RestoreOperation, RestoreStatus
from clinvault.engine.dbrestore import drop_database
from clinvault.engine.filerestore import remove_tree
from clinvault.errors import InvalidInputError, NotFoundError
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.queries import parse_id
from clinvault.services.restore_journal import audit_restore
from clinvault.services.restore_ops import update_operation


def list_checkpoints(ctx: ServiceContext) -> list[dict[str, Any]]:
    """Checkpoints still kept, newest first."""
    with ctx.catalog.session() as session:
        rows = session.scalars(
            sa.select(RestoreOperation)
            .where(RestoreOperation.status == RestoreStatus.COMPLETED)
            .order_by(RestoreOperation.completed_at.desc())
        ).all()
    found = []
    for op in rows:
        checkpoint = (op.metadata_ or {}).get("checkpoint")
        if checkpoint and not checkpoint.get("dropped_at"):
            found.append(
                {
                    "operation_id": str(op.id),
                    "backup_id": str(op.backup_id),
                    "completed_at": op.completed_at.isoformat() if op.completed_at else None,
                    "database": checkpoint.get("database"),
                    "directory": checkpoint.get("directory"),
                }
            )
    return found


def drop_checkpoints(
    ctx: ServiceContext,
    actor: Actor,
    *,
    keep: int | None = None,
    operation_ids: list[str] | None = None,
) -> list[str]:
    """Drop the named checkpoints, or all but the newest ``keep`` (default: the setting)."""
    kept = list_checkpoints(ctx)
    if operation_ids:
        wanted = {str(parse_id(i, "restore operation")) for i in operation_ids}
        chosen = [c for c in kept if c["operation_id"] in wanted]
        unknown = wanted - {c["operation_id"] for c in chosen}
        if unknown:
            raise NotFoundError(f"no checkpoint kept for restore {sorted(unknown)[0]}")
    else:
        count = ctx.settings.checkpoint_keep if keep is None else keep
        if count < 0:
            raise InvalidInputError("keep must be zero or more")
        chosen = kept[count:]
    for item in chosen:
        _drop(ctx, item, actor)
    return [c["operation_id"] for c in chosen]


def _drop(ctx: ServiceContext, item: dict[str, Any], actor: Actor) -> None:
    if item["database"]:
        drop_database(ctx.platform, item["database"])
    if item["directory"]:
        directory = Path(item["directory"])
        remove_tree(directory)
        with contextlib.suppress(OSError):
            directory.parent.rmdir()  # the restore's work directory
            directory.parent.parent.rmdir()  # the work root, when no other restore uses it
    op_id = uuid.UUID(item["operation_id"])
    with ctx.catalog.session() as session:
        current = session.get_one(RestoreOperation, op_id).metadata_ or {}
    checkpoint = {
        **current.get("checkpoint", {}),
        "dropped_at": datetime.now(UTC).isoformat(),
        "dropped_by": actor.name,
    }
    update_operation(ctx, op_id, metadata={"checkpoint": checkpoint})
    audit_restore(
        ctx,
        "restore.checkpoint_drop",
        actor,
        op_id,
        {"database": item["database"], "directory": item["directory"]},
    )
