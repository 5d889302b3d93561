"""Reading the catalog for people: pages of backups, one backup in detail, statistics, and
the restore history with its signatures.

Pages are filtered, sorted and counted in SQL, so a list stays fast however many backups
the catalog holds. Details add what only the bundle knows: its objects and its file index
(read from ``manifest.json``), paged, since an index can hold millions of files.
Statistics answer the dashboard: totals, storage used and saved by compression, the last
backup, the next scheduled one and storage used per day. The restore history shows each
restore with its validation results and the electronic signature that approved it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Final, Literal, get_args

import sqlalchemy as sa

from clinvault.catalog.models import (
    Backup,
    BackupSchedule,
    BackupStatus,
    BackupType,
    RestoreOperation,
    RestoreStatus,
    UTCDateTime,
)
from clinvault.engine.checks import read_manifest
from clinvault.errors import ClinVaultError, InvalidInputError
from clinvault.services.context import ServiceContext
from clinvault.services.queries import backup_to_json
from clinvault.services.restore_ops import operation_to_json
from clinvault.services.signatures import SignatureService, signature_to_json

SortColumn = Literal[
    "name",
    "type",
    "status",
    "scope",
    "description",
    "created_by",
    "created_at",
    "started_at",
    "completed_at",
    "file_size_bytes",
    "file_size_compressed",
    "compression_ratio",
    "compression",
    "compression_level",
    "checksum",
    "verified_at",
    "verify_status",
    "is_safety_backup",
    "legal_hold",
    "deleted_at",
]
SORTABLE: Final = get_args(SortColumn)
MAX_PAGE_SIZE: Final = 200
MAX_FILES_PAGE: Final = 5000


def printable(value: Any) -> Any:
    """``value`` with lone surrogates (undecodable file-name bytes) shown as U+FFFD, so that
    it can be sent as UTF-8 JSON."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class BackupQuery:
    """Which backups to list, in which order, and which page of them."""

    page: int = 1
    page_size: int = 50
    type: BackupType | None = None
    status: BackupStatus | None = None
    search: str | None = None
    sort: SortColumn = "created_at"
    descending: bool = True
    include_deleted: bool = False


# What a list shows: the columns of ``backup_to_json`` but the metadata (which can be large).
_UNLISTED: Final = frozenset({"metadata_", "deleted_by", "schedule_id"})
_LISTED: Final = tuple(
    attr.key for attr in sa.inspect(Backup).column_attrs if attr.key not in _UNLISTED
)


def _iso(value: datetime | None) -> str | None:
    """UTC, written as the API's models write it."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _value(value: StrEnum | None) -> str | None:
    return None if value is None else value.value


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def _same(value: Any) -> Any:
    return value


_LISTED_COLUMNS: Final = tuple(
    Backup.__table__.columns[getattr(Backup, key).property.columns[0].name] for key in _LISTED
)


def _converter(column: sa.Column[Any]) -> Any:
    if isinstance(column.type, UTCDateTime):
        return _iso
    if isinstance(column.type, sa.Uuid):
        return _text
    if isinstance(column.type, sa.Enum):
        return _value
    return _same


# One converter per listed column, chosen once: a page is built without type checks.
_TO_JSON: Final = tuple(_converter(column) for column in _LISTED_COLUMNS)
_NULLABLE: Final = frozenset(key for key in SORTABLE if sa.inspect(Backup).columns[key].nullable)


def listed_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """A listed record with its values as read (see ``page_backups``) made JSON-ready."""
    return {key: convert(record[key]) for key, convert in zip(_LISTED, _TO_JSON, strict=True)}


def page_backups(
    ctx: ServiceContext, query: BackupQuery, *, json_ready: bool = True
) -> tuple[list[dict[str, Any]], int]:
    """One page of backups matching ``query`` as JSON-ready records (without metadata), and
    how many match in all. Only the listed columns are read: lists are the hot path.

    Without ``json_ready`` the values are as read (datetimes, UUIDs, enums), for a caller
    whose encoder writes them the same way itself.
    """
    if query.page < 1 or not 1 <= query.page_size <= MAX_PAGE_SIZE:
        raise InvalidInputError(f"page must be >= 1 and page_size between 1 and {MAX_PAGE_SIZE}")
    if query.sort not in SORTABLE:
        raise InvalidInputError(f"sort: use one of {', '.join(SORTABLE)}")
    clauses: list[sa.ColumnElement[bool]] = []
    if not query.include_deleted:
        clauses.append(Backup.deleted_at.is_(None))
    if query.type is not None:
        clauses.append(Backup.type == query.type)
    if query.status is not None:
        clauses.append(Backup.status == query.status)
    if query.search:
        clauses.append(Backup.name.icontains(query.search.strip(), autoescape=True))
    # Ties are broken by id in the same direction, so the default page (live backups,
    # newest first) is read straight off ix_backups_live_created_at, a few rows per page
    # however many backups there are. NULLS LAST/FIRST only where a column has NULLs: on
    # others it would keep the database from reading the index in order.
    direction = sa.desc if query.descending else sa.asc
    order = direction(getattr(Backup, query.sort))
    if query.sort in _NULLABLE:
        order = order.nulls_last() if query.descending else order.nulls_first()
    # Core on a plain connection: these are columns, not objects, and the ORM's loading
    # machinery cost more than the query itself.
    with ctx.catalog.engine.connect() as connection:
        total = connection.scalar(
            sa.select(sa.func.count()).select_from(Backup.__table__).where(*clauses)
        )
        rows = connection.execute(
            sa.select(*_LISTED_COLUMNS)
            .where(*clauses)
            .order_by(order, direction(Backup.id))
            .offset((query.page - 1) * query.page_size)
            .limit(query.page_size)
        ).all()
    records = [dict(zip(_LISTED, row, strict=True)) for row in rows]
    return (records if not json_ready else [listed_json(r) for r in records]), int(total or 0)


def backup_details(
    ctx: ServiceContext, row: Backup, *, files_offset: int = 0, files_limit: int = 1000
) -> dict[str, Any]:
    """The backup's record with its objects and a page of its file index.

    A bundle whose manifest cannot be read (deleted, failed, damaged) is still described,
    from the catalog alone, with the reason in ``manifest_error``.
    """
    if files_offset < 0 or not 0 <= files_limit <= MAX_FILES_PAGE:
        raise InvalidInputError(
            f"files_offset must be >= 0 and files_limit between 0 and {MAX_FILES_PAGE}"
        )
    data = backup_to_json(row)
    data["metadata"] = {k: v for k, v in data["metadata"].items() if k != "worker"}
    data.update(objects=[], files=[], files_total=0, manifest_error=None)
    signed = SignatureService(ctx).for_target("backup", str(row.id))
    data["signatures"] = [signature_to_json(s) for s in signed]
    if row.status is not BackupStatus.COMPLETED or row.file_path is None:
        data["manifest_error"] = "no bundle to read: the backup is not completed or was purged"
        return printable(data)  # type: ignore[no-any-return]
    try:
        manifest, raw = read_manifest(ctx.storage, str(row.id))
    except ClinVaultError as exc:
        data["manifest_error"] = exc.message
        return printable(data)  # type: ignore[no-any-return]
    data["objects"] = [
        {"name": "manifest.json", "kind": "manifest", "size": len(raw), "compressed_size": None}
    ] + [
        {
            "name": p.name,
            "kind": p.kind,
            "codec": p.codec,
            "level": p.level,
            "size": p.size,
            "compressed_size": p.compressed_size,
            "sha256": p.sha256,
        }
        for p in manifest.parts
    ]
    entries = manifest.files.entries if manifest.files is not None else []
    data["files_total"] = len(entries)
    data["files"] = [
        {key: entry.get(key) for key in ("path", "kind", "size", "mode", "mtime", "sha256")}
        for entry in entries[files_offset : files_offset + files_limit]
    ]
    return printable(data)  # type: ignore[no-any-return]


def _day_end(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)


def backup_stats(ctx: ServiceContext, *, days: int = 30) -> dict[str, Any]:
    """Totals, storage, last and next backup, and storage used at the end of each of the
    last ``days`` days (UTC)."""
    if not 1 <= days <= 366:
        raise InvalidInputError("days must be between 1 and 366")
    with ctx.catalog.session() as session:
        rows = session.execute(
            sa.select(
                Backup.id,
                Backup.name,
                Backup.type,
                Backup.status,
                Backup.completed_at,
                Backup.file_size_bytes,
                Backup.file_size_compressed,
                Backup.deleted_at,
                Backup.file_path,
            )
        ).all()
        schedule = session.execute(
            sa.select(BackupSchedule.id, BackupSchedule.name, BackupSchedule.next_run_at)
            .where(BackupSchedule.is_active.is_(True), BackupSchedule.next_run_at.is_not(None))
            .order_by(BackupSchedule.next_run_at)
            .limit(1)
        ).first()
    listed = [r for r in rows if r.deleted_at is None]
    stored = [r for r in rows if r.status is BackupStatus.COMPLETED and r.file_path is not None]
    raw = sum(r.file_size_bytes or 0 for r in stored)
    used = sum(r.file_size_compressed or 0 for r in stored)
    completed = [r for r in listed if r.status is BackupStatus.COMPLETED and r.completed_at]
    last = max(completed, key=lambda r: r.completed_at, default=None)
    return {
        "total_backups": len(listed),
        "by_status": {s.value: sum(r.status is s for r in listed) for s in BackupStatus},
        "by_type": {t.value: sum(r.type is t for r in listed) for t in BackupType},
        "deleted_backups": len(rows) - len(listed),
        "storage_used_bytes": used,
        "original_bytes": raw,
        "saved_by_compression_bytes": max(0, raw - used),
        "compression_ratio": round(1 - used / raw, 4) if raw else None,
        "last_backup": _brief(last),
        "next_scheduled": None
        if schedule is None
        else {
            "schedule_id": str(schedule.id),
            "name": schedule.name,
            "next_run_at": schedule.next_run_at.isoformat(),
        },
        "usage_over_time": _usage(stored, days),
    }


def _brief(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "id": str(row.id),
        "name": row.name,
        "type": row.type.value,
        "completed_at": row.completed_at.isoformat(),
        "size_compressed": row.file_size_compressed,
    }


def _usage(stored: list[Any], days: int) -> list[dict[str, Any]]:
    """Per day: backups completed, bytes they added, and bytes stored at the day's end.

    ``stored`` holds the backups whose objects are in storage now (soft-deleted ones included:
    they take space until purged), so past days show how today's backups accumulated.
    """
    today = datetime.now(UTC).date()
    series = []
    for n in range(days - 1, -1, -1):
        day = today - timedelta(days=n)
        end = _day_end(day)
        done = [r for r in stored if r.completed_at is not None and r.completed_at < end]
        added = [r for r in done if r.completed_at.date() == day]
        series.append(
            {
                "date": day.isoformat(),
                "backups": len(added),
                "bytes_added": sum(r.file_size_compressed or 0 for r in added),
                "storage_used_bytes": sum(r.file_size_compressed or 0 for r in done),
            }
        )
    return series


def restore_history(
    ctx: ServiceContext,
    *,
    status: RestoreStatus | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int]:
    """Restores, newest first, each with its validation results and the signatures that
    approved it (the one recorded in its metadata, and any applied to the restore itself)."""
    if offset < 0 or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInputError(f"offset must be >= 0 and limit between 1 and {MAX_PAGE_SIZE}")
    clauses = [] if status is None else [RestoreOperation.status == status]
    with ctx.catalog.session() as session:
        total = session.scalar(
            sa.select(sa.func.count()).select_from(RestoreOperation).where(*clauses)
        )
        ops = session.scalars(
            sa.select(RestoreOperation)
            .where(*clauses)
            .order_by(RestoreOperation.started_at.desc(), RestoreOperation.id)
            .offset(offset)
            .limit(limit)
        ).all()
    signatures = SignatureService(ctx)
    items = []
    for op in ops:
        found = list(signatures.for_target("restore", str(op.id)))
        linked = (op.metadata_ or {}).get("signature_id")
        if linked and all(str(s.id) != linked for s in found):
            signature = signatures.get(uuid.UUID(str(linked)))
            if signature is not None:
                found.insert(0, signature)
        item = operation_to_json(op)
        item["signatures"] = [signature_to_json(s) for s in found]
        items.append(printable(item))
    return items, int(total or 0)
