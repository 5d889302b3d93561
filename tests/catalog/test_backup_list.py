"""The backup list query: pages that cover every backup once whatever the ties, and the
default page read off its index in order (no sort of every backup per request)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest
import sqlalchemy as sa

from clinvault.catalog import Backup, BackupStatus, BackupType, Catalog
from clinvault.services.context import ServiceContext
from clinvault.services.stats import BackupQuery, page_backups

TYPES = (BackupType.FULL, BackupType.DATABASE, BackupType.FILES)


def _fill(catalog: Catalog, count: int) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with catalog.session() as session:
        for n in range(count):
            session.add(
                Backup(
                    name=f"backup-{n:03d}",
                    type=TYPES[n % 3],
                    status=BackupStatus.COMPLETED,
                    compression="zstd",
                    compression_level=3,
                    created_by="tester",
                    created_at=start + timedelta(hours=n // 4),  # four share each time
                    file_size_compressed=None if n % 5 == 0 else 1000 * (n % 7),
                    deleted_at=start if n == 7 else None,
                )
            )


def _ctx(catalog: Catalog) -> ServiceContext:
    return cast(ServiceContext, SimpleNamespace(catalog=catalog))


@pytest.mark.parametrize("sort", ["created_at", "type", "file_size_compressed"])
@pytest.mark.parametrize("descending", [True, False])
def test_pages_cover_every_live_backup_once_in_order(
    catalog: Catalog, sort: str, descending: bool
) -> None:
    _fill(catalog, 23)
    seen: list[dict[str, Any]] = []
    for page in range(1, 10):
        query = BackupQuery(page=page, page_size=5, sort=sort, descending=descending)  # type: ignore[arg-type]
        items, total = page_backups(_ctx(catalog), query)
        assert total == 22  # one is soft-deleted
        seen.extend(items)

    assert len(seen) == 22 and len({b["id"] for b in seen}) == 22
    values = [b[sort] for b in seen]
    present = [v for v in values if v is not None]
    assert present == sorted(present, reverse=descending)
    nulls = [i for i, v in enumerate(values) if v is None]  # last going down, first going up
    assert nulls == (
        list(range(len(values) - len(nulls), len(values)))
        if descending
        else list(range(len(nulls)))
    )


def test_the_default_page_is_read_off_the_index_in_order(catalog: Catalog) -> None:
    _fill(catalog, 40)
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "LIMIT" in statement.upper():
            statements.append((statement, parameters))

    sa.event.listen(catalog.engine, "before_cursor_execute", record)
    try:
        items, _ = page_backups(_ctx(catalog), BackupQuery(page=1, page_size=10))
    finally:
        sa.event.remove(catalog.engine, "before_cursor_execute", record)
    assert {b["name"] for b in items[:4]} == {f"backup-{n:03d}" for n in range(36, 40)}  # newest
    statement, parameters = statements[-1]

    with catalog.engine.connect() as connection:
        if catalog.dialect == "sqlite":
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            plan = " ".join(str(row[-1]) for row in rows)
            assert "ix_backups_live_created_at" in plan and "TEMP B-TREE" not in plan, plan
        else:
            # Forbid the alternatives; a sort would still appear if the index gave no order.
            connection.exec_driver_sql("ANALYZE backups")
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            connection.exec_driver_sql("SET LOCAL enable_sort = off")
            rows = connection.exec_driver_sql("EXPLAIN " + statement, parameters)
            plan = " ".join(str(row[0]) for row in rows)
            # PostgreSQL may also take the created_at index and sort only the rows sharing a
            # timestamp (an incremental sort): either way it stops after the page.
            sorts = re.findall(r"(?:Incremental )?Sort(?=  \()", plan)
            assert "Index Scan Backward" in plan, plan
            assert all(s == "Incremental Sort" for s in sorts), plan


def test_records_as_read_encode_like_the_json_ready_ones(catalog: Catalog) -> None:
    """The API sends the values as read through orjson: the JSON must be the same."""
    _fill(catalog, 12)
    with catalog.session() as session:  # a timestamp with microseconds, a completed one
        first = session.scalars(sa.select(Backup).where(Backup.name == "backup-001")).one()
        first.completed_at = datetime(2026, 2, 3, 4, 5, 6, 789, tzinfo=UTC)
    for query in (BackupQuery(), BackupQuery(sort="name", descending=False, page_size=3)):
        raw, total = page_backups(_ctx(catalog), query, json_ready=False)
        ready, same_total = page_backups(_ctx(catalog), query)
        assert total == same_total
        assert orjson.loads(orjson.dumps(raw, option=orjson.OPT_UTC_Z)) == ready
    assert any(b["completed_at"] == "2026-02-03T04:05:06.000789Z" for b in ready)
