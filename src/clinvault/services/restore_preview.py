"""What a restore would change, told before anything changes.

For the database: each table's live row count against the backup's, tables that would
appear or disappear, and the rows written after the backup was taken (by ``updated_at`` or
``created_at`` where a table has them), which the restore would lose. For files: what would
be added, replaced or removed under the backed-up roots (compared by kind, size,
modification time and link target, without reading content). And an estimated duration
from the sizes and the throughput of earlier restores.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import psycopg
import sqlalchemy as sa
from psycopg import sql

from clinvault.catalog.models import Backup, RestoreOperation, RestoreStatus
from clinvault.engine.archive import FileEntry
from clinvault.engine.dbrestore import count_rows
from clinvault.engine.filerestore import entries_under, walk_tree
from clinvault.engine.manifest import Manifest
from clinvault.engine.pginspect import connect
from clinvault.engine.scope import TableRef
from clinvault.services.context import ServiceContext
from clinvault.services.restore_validation import BackupValidation, RestoreScope

DEFAULT_THROUGHPUT: Final = 50 << 20  # bytes/s assumed before any restore was measured
_HISTORY: Final = 20
_EXAMPLES: Final = 20
_MTIME_TOLERANCE_NS: Final = 2_000  # the index keeps mtimes as floats
_TIMESTAMP_COLUMNS = """
SELECT table_schema, table_name, column_name FROM information_schema.columns
WHERE column_name IN ('updated_at', 'created_at')
  AND data_type IN ('timestamp with time zone', 'timestamp without time zone')
  AND table_schema NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2, 3
"""


def preview_restore(
    ctx: ServiceContext,
    row: Backup,
    scope: RestoreScope,
    validation: BackupValidation,
    method: str | None,
) -> dict[str, Any]:
    manifest = validation.manifest
    report: dict[str, Any] = {
        "backup": {"id": str(row.id), "name": row.name, "type": row.type.value},
        "scope": scope.value,
        "method": method,
        "validation": {"ok": validation.ok, "problems": validation.problems()},
        "checkpoint_keep": ctx.settings.checkpoint_keep,
    }
    if manifest is None:
        return report
    report["backup"]["taken_at"] = manifest.backup.started_at.isoformat()
    if "database" in scope.parts and manifest.database is not None:
        report["database"] = database_changes(ctx, manifest, in_place=method == "in_place")
    if "files" in scope.parts and manifest.files is not None:
        report["files"] = file_changes(ctx, manifest)
    report["estimate"] = estimate(ctx, manifest, scope)
    return report


def database_changes(
    ctx: ServiceContext, manifest: Manifest, *, in_place: bool = False
) -> dict[str, Any]:
    """Per table: what happens to it. A table the backup does not have is dropped by a swap
    (the whole database is replaced) but kept by an in-place restore, which only replaces
    the objects in the dump."""
    assert manifest.database is not None
    backup_counts = manifest.database.tables
    live_counts = count_rows(ctx.platform)
    modified = rows_modified_since(ctx, manifest.backup.started_at)
    tables = []
    for name in sorted(set(backup_counts) | set(live_counts)):
        live, backup = live_counts.get(name), backup_counts.get(name)
        action = "replace" if live is not None and backup is not None else "create"
        if backup is None:
            action = "keep" if in_place else "drop"
        tables.append(
            {
                "table": name,
                "action": action,
                "live_rows": live,
                "backup_rows": backup,
                "modified_after_backup": modified.get(name),
            }
        )
    return {
        "tables": tables,
        "tables_to_replace": sum(1 for t in tables if t["action"] == "replace"),
        "tables_to_create": sum(1 for t in tables if t["action"] == "create"),
        "tables_to_drop": sum(1 for t in tables if t["action"] == "drop"),
        "tables_kept": sum(1 for t in tables if t["action"] == "keep"),
        "live_rows": sum(live_counts.values()),
        "backup_rows": sum(backup_counts.values()),
        "rows_modified_after_backup": sum(v for v in modified.values() if v),
        "modified_since": manifest.backup.started_at.isoformat(),
    }


def rows_modified_since(ctx: ServiceContext, since: datetime) -> dict[str, int]:
    """Rows per table whose ``updated_at``/``created_at`` is after ``since``: they would be
    lost (tables without such columns are not in the result)."""
    with connect(ctx.platform) as db:
        columns: dict[TableRef, list[str]] = defaultdict(list)
        for schema, table, column in db.execute(_TIMESTAMP_COLUMNS):
            columns[TableRef(schema, table)].append(column)
        found: dict[str, int] = {}
        for table, names in columns.items():
            stamp = sql.SQL("greatest({})").format(sql.SQL(", ").join(map(sql.Identifier, names)))
            query = sql.SQL("SELECT count(*) FROM {} WHERE {} > %s").format(table.ident(), stamp)
            try:
                row = db.execute(query, (since,)).fetchone()
            except psycopg.Error:
                continue  # a view or a table this role cannot read: no figure rather than none
            found[table.qualified] = int(row[0]) if row else 0
    return found


def file_changes(ctx: ServiceContext, manifest: Manifest) -> dict[str, Any]:
    assert manifest.files is not None
    root = ctx.settings.resolved_files_root
    selections = manifest.files.selections
    entries = [FileEntry.from_json(e) for e in manifest.files.entries]
    expected = {e.path: e for e in entries_under(entries, selections) if e.kind != "dir"}
    live = {p: s for p, s in walk_tree(root, selections).items() if not stat.S_ISDIR(s.st_mode)}
    add = sorted(set(expected) - set(live))
    remove = sorted(set(live) - set(expected))
    replace = sorted(
        p for p in set(expected) & set(live) if _differs(root / p, expected[p], live[p])
    )
    unchanged = len(expected) - len(add) - len(replace)
    return {
        "root": str(root),
        "selections": list(selections),
        "to_add": len(add),
        "to_replace": len(replace),
        "to_remove": len(remove),
        "unchanged": unchanged,
        "bytes_to_write": sum(expected[p].size for p in (*add, *replace)),
        "compared_by": "kind, size, modification time and link target",
        "examples": {
            "add": add[:_EXAMPLES],
            "replace": replace[:_EXAMPLES],
            "remove": remove[:_EXAMPLES],
        },
    }


def _differs(path: Path, entry: FileEntry, info: os.stat_result) -> bool:
    if entry.kind == "symlink":
        # os.readlink: Path.readlink would normalise the target text
        return not stat.S_ISLNK(info.st_mode) or os.readlink(path) != entry.link_target  # noqa: PTH115
    if not stat.S_ISREG(info.st_mode) or info.st_size != entry.size:
        return True
    return abs(info.st_mtime_ns - round(entry.mtime * 1e9)) > _MTIME_TOLERANCE_NS


def estimate(ctx: ServiceContext, manifest: Manifest, scope: RestoreScope) -> dict[str, Any]:
    """Seconds to restore, from the bytes to write and the throughput of earlier restores."""
    dump = manifest.part("database")
    size = dump.size if dump is not None and "database" in scope.parts else 0
    if manifest.files is not None and "files" in scope.parts:
        size += manifest.files.total_bytes
    done, seconds = _measured(ctx)
    if seconds > 0 and done > 0:
        rate = done / seconds
        basis = "throughput of the last earlier restores"
    else:
        rate, basis = float(DEFAULT_THROUGHPUT), "default throughput (no earlier restore)"
    return {
        "bytes": size,
        "seconds": round(size / rate, 1),
        "throughput_bytes_per_second": round(rate),
        "basis": basis,
    }


def _measured(ctx: ServiceContext) -> tuple[int, float]:
    with ctx.catalog.session() as session:
        rows = session.scalars(
            sa.select(RestoreOperation)
            .where(RestoreOperation.status == RestoreStatus.COMPLETED)
            .order_by(RestoreOperation.completed_at.desc())
            .limit(_HISTORY)
        ).all()
    total_bytes, total_seconds = 0, 0.0
    for op in rows:
        meta: Mapping[str, Any] = op.metadata_ or {}
        restored, seconds = meta.get("bytes_restored"), meta.get("duration_seconds")
        if isinstance(restored, int) and isinstance(seconds, int | float) and seconds > 0:
            total_bytes += restored
            total_seconds += float(seconds)
    return total_bytes, total_seconds
