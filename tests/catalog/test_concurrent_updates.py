"""Read-then-write updates of the catalog while other writers commit: on SQLite a plain
transaction that read first fails at its first write when another writer committed in
between ("database is locked", whatever the busy timeout); updates take the writer lock
first and wait their turn instead."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import cast

import sqlalchemy as sa

from clinvault.catalog import (
    Backup,
    BackupType,
    Catalog,
    RestoreOperation,
    RestoreStatus,
    Scope,
)
from clinvault.services.context import ServiceContext
from clinvault.services.restore_ops import update_operation

ROUNDS = 150


def _operation(catalog: Catalog) -> tuple[uuid.UUID, uuid.UUID]:
    with catalog.session() as session:
        backup = Backup(
            name="b",
            type=BackupType.FULL,
            compression="zstd",
            compression_level=3,
            created_by="tester",
        )
        session.add(backup)
        session.flush()
        op = RestoreOperation(
            backup_id=backup.id,
            status=RestoreStatus.PENDING,
            scope=Scope.ALL,
            scope_ids=[],
            restored_by="tester",
            started_at=datetime.now(UTC),
            validation_results={},
            metadata_={},
        )
        session.add(op)
        session.flush()
        return backup.id, op.id


def test_updates_survive_writers_committing_in_between(catalog: Catalog) -> None:
    backup_id, op_id = _operation(catalog)
    ctx = cast(ServiceContext, SimpleNamespace(catalog=catalog))
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def updating(key: str) -> None:
        start.wait()
        try:
            for n in range(ROUNDS):
                update_operation(ctx, op_id, metadata={key: n})
        except BaseException as exc:  # reported below
            errors.append(exc)

    def other_writer() -> None:  # a progress writer touching another table
        start.wait()
        try:
            for n in range(ROUNDS):
                with catalog.session() as session:
                    session.execute(
                        sa.update(Backup).where(Backup.id == backup_id).values(description=str(n))
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=updating, args=("a",)),
        threading.Thread(target=updating, args=("b",)),
        threading.Thread(target=other_writer),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    with catalog.session() as session:
        meta = session.get_one(RestoreOperation, op_id).metadata_
    assert meta == {"a": ROUNDS - 1, "b": ROUNDS - 1}  # no update lost either
