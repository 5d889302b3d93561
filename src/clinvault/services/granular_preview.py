"""What a study or organization restore would change, computed without changing anything.

The preview stages the scope's rows from the dump exactly as the restore does (into
temporary tables of its own session) and compares them with the live rows in a transaction
that is rolled back, so its figures are the restore's own, not estimates: rows to remove,
insert and update per table, rows changed after the backup that would be lost, and rows
outside the scope that would lose a parent (the restore refuses those). Files are compared
by SHA-256 with the live tree under the scope's directories. The duration is estimated from
the sizes involved and the throughput of earlier granular restores.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from clinvault.catalog.models import RestoreOperation, RestoreStatus, Scope
from clinvault.engine.archive import FileEntry
from clinvault.engine.filerestore import file_sha256, walk_tree
from clinvault.engine.granular_apply import ScopePreview, preview_scope
from clinvault.engine.granular_diff import TableChange
from clinvault.engine.scope import TableRef
from clinvault.services.context import ServiceContext
from clinvault.services.granular_plan import (
    GranularPlan,
    Prepared,
    new_work_name,
    prepare,
    staged_dump,
)

_EXAMPLES = 20
_HISTORY = 5
# Defaults until a granular restore has been measured here (2-core machine, scale 10).
DEFAULT_RATES = {"scan": 150e6, "apply": 15e6, "files": 100e6}


def build_preview(ctx: ServiceContext, plan: GranularPlan) -> dict[str, Any]:
    with (
        staged_dump(ctx, plan, new_work_name("granular-preview")) as dump,
        prepare(ctx, plan, dump) as prepared,
    ):
        found = preview_scope(prepared.db, prepared.staged, plan.manifest.backup.started_at)
        scope_bytes = estimate_scope_bytes(prepared.db, plan)
        files = file_changes(ctx.settings.resolved_files_root, prepared)
    problems = _problems(found)
    report: dict[str, Any] = {
        "backup": {
            "id": plan.backup_id,
            "name": plan.backup.name,
            "type": plan.backup.type.value,
            "taken_at": plan.manifest.backup.started_at.isoformat(),
        },
        "scope": plan.kind,
        "targets": [{"key": k, "label": lb} for k, lb in zip(plan.keys, plan.labels, strict=True)],
        "method": f"granular ({found.mode})",
        "validation": {
            "ok": not problems,
            "problems": problems,
            "checks": [c.to_json() for c in plan.checks],
        },
        "database": database_report(plan, found),
        "files": files,
        "estimate": estimate(ctx, plan, scope_bytes, files["bytes_to_write"]),
        "warnings": [*prepared.warnings, *_mode_warnings(found.mode)],
        "can_restore": not problems,
    }
    return report


def _problems(found: ScopePreview) -> list[str]:
    problems = [b.describe() for b in found.broken_references]
    problems.extend(
        f"{m.rows} rows of {m.table} in this backup reference rows of {m.references} that "
        f"would not exist ({m.constraint})"
        for m in found.missing_parents
    )
    problems.extend(
        f"{c.moved} rows of {c.table} in this backup belong to another scope live now"
        for c in found.changes
        if c.moved
    )
    return problems


def _mode_warnings(mode: str) -> list[str]:
    if mode == "replica":
        return []
    return [
        "this role may not set session_replication_role: the restore runs with foreign keys "
        "enforced and switches off user triggers only on tables this role owns"
    ]


def _action(change: TableChange) -> str:
    if not (change.to_delete or change.to_insert or change.to_update):
        return "unchanged"
    return "restore" if change.live_rows == 0 else "replace"


def database_report(plan: GranularPlan, found: ScopePreview) -> dict[str, Any]:
    tables = [
        {
            **change.to_json(),
            "action": _action(change),
            "modified_after_backup": found.modified_after_backup.get(change.table),
        }
        for change in found.changes
    ]
    modified = sum(v for v in found.modified_after_backup.values() if v)
    return {
        "mode": found.mode,
        "tables": tables,
        "tables_to_replace": sum(1 for t in tables if t["action"] != "unchanged"),
        "live_rows": sum(c.live_rows for c in found.changes),
        "backup_rows": sum(c.backup_rows for c in found.changes),
        "rows_to_delete": sum(c.to_delete for c in found.changes),
        "rows_to_insert": sum(c.to_insert for c in found.changes),
        "rows_to_update": sum(c.to_update for c in found.changes),
        "rows_modified_after_backup": modified,
        "modified_since": plan.manifest.backup.started_at.isoformat(),
        "broken_references": [b.to_json() for b in found.broken_references],
        "missing_parents": [m.to_json() for m in found.missing_parents],
    }


def file_changes(root: Path, prepared: Prepared) -> dict[str, Any]:
    """Index entries under the scope's directories against the live tree, by SHA-256."""
    expected = {e.path: e for e in prepared.entries if e.kind != "dir"}
    live = {
        p: s
        for p, s in walk_tree(root, prepared.directories).items()
        if not stat.S_ISDIR(s.st_mode)
    }
    add = sorted(set(expected) - set(live))
    remove = sorted(set(live) - set(expected))
    replace = sorted(p for p in set(expected) & set(live) if _differs(root / p, expected[p]))
    return {
        "root": str(root),
        "directories": prepared.directories,
        "to_add": len(add),
        "to_replace": len(replace),
        "to_remove": len(remove),
        "unchanged": len(expected) - len(add) - len(replace),
        "bytes_to_write": sum(expected[p].size for p in (*add, *replace)),
        "compared_by": "SHA-256 of file content, link targets",
        "examples": {
            "add": add[:_EXAMPLES],
            "replace": replace[:_EXAMPLES],
            "remove": remove[:_EXAMPLES],
        },
    }


def _differs(path: Path, entry: FileEntry) -> bool:
    info = path.lstat()
    if entry.kind == "symlink":
        return not stat.S_ISLNK(info.st_mode) or os.readlink(path) != entry.link_target  # noqa: PTH115
    if not stat.S_ISREG(info.st_mode) or info.st_size != entry.size:
        return True
    return entry.sha256 is not None and file_sha256(path) != entry.sha256


def estimate_scope_bytes(db: psycopg.Connection[Any], plan: GranularPlan) -> int:
    """Bytes of the scope's rows in the dump: each table's share of the dump (by its live
    size) times the scope's share of its rows (from the manifest's counts)."""
    assert plan.manifest.database is not None
    totals = plan.manifest.database.tables
    sizes = {}
    for table in totals:
        name = TableRef.parse(table).ident().as_string(db)
        row = db.execute("SELECT pg_table_size(to_regclass(%s))", (name,)).fetchone()
        sizes[table] = int(row[0]) if row and row[0] is not None else 0
    weight = sum(sizes.values())
    if not weight:
        rows = sum(totals.values()) or 1
        return round(plan.database_part.size * sum(plan.expected.values()) / rows)
    share = sum(
        sizes[t] / weight * n / totals[t] for t, n in plan.expected.items() if totals.get(t)
    )
    return round(plan.database_part.size * share)


def estimate(
    ctx: ServiceContext, plan: GranularPlan, scope_bytes: int, files_bytes: int
) -> dict[str, Any]:
    """Seconds: the whole dump is read, the scope's rows applied, its files written."""
    rates, basis = measured_rates(ctx)
    dump_bytes = plan.database_part.size
    seconds = (
        dump_bytes / rates["scan"] + scope_bytes / rates["apply"] + files_bytes / rates["files"]
    )
    return {
        "seconds": round(seconds, 2),
        "dump_bytes": dump_bytes,
        "scope_bytes": scope_bytes,
        "files_bytes": files_bytes,
        "rates_bytes_per_second": {k: round(v) for k, v in rates.items()},
        "basis": basis,
        "excludes": "the safety backup taken first (unless disabled)",
    }


def measured_rates(ctx: ServiceContext) -> tuple[dict[str, float], str]:
    """Throughput of the last completed granular restores, per phase; defaults otherwise."""
    with ctx.catalog.session() as session:
        rows = session.scalars(
            sa.select(RestoreOperation)
            .where(
                RestoreOperation.status == RestoreStatus.COMPLETED,
                RestoreOperation.scope.in_((Scope.STUDY, Scope.ORGANIZATION)),
            )
            .order_by(RestoreOperation.completed_at.desc())
            .limit(_HISTORY * 4)
        ).all()
    sums = {k: [0.0, 0.0] for k in DEFAULT_RATES}
    used = 0
    for op in rows:
        timing: Mapping[str, Any] = (op.metadata_ or {}).get("granular_timing") or {}
        if not timing or used >= _HISTORY:
            continue
        used += 1
        for phase, pair in sums.items():
            done, seconds = timing.get(f"{phase}_bytes"), timing.get(f"{phase}_seconds")
            if isinstance(done, int | float) and isinstance(seconds, int | float) and seconds > 0:
                pair[0] += done
                pair[1] += seconds
    rates = {
        k: (v[0] / v[1] if v[1] > 0 and v[0] > 0 else DEFAULT_RATES[k]) for k, v in sums.items()
    }
    basis = (
        f"throughput of the last {used} granular restores"
        if used
        else "default throughput (no earlier granular restore)"
    )
    return rates, basis
