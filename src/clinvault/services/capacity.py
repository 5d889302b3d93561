"""Storage capacity: will the next backup fit, and how full is the backup storage.

A backup that cannot fit should fail before it starts, with a message that says how much it
needs and how much is free, not after an hour with a full disk. The need is estimated from
the last completed backup of the same kind (its stored size, plus a margin for growth), or,
for the first one, from the platform's database size and the size of its files (both
uncompressed, so the first estimate errs on the safe side). Backends that cannot tell their
free space (``free_bytes()`` is None) are not checked.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psycopg
import sqlalchemy as sa

from clinvault.catalog.models import Backup, BackupStatus, BackupType, Scope
from clinvault.engine.pginspect import connect
from clinvault.errors import ClinVaultError, InvalidInputError
from clinvault.services.context import ServiceContext
from clinvault.storage import LocalStorage

log = logging.getLogger(__name__)

GROWTH_MARGIN: Final = 1.25
_MAX_WALK_ENTRIES: Final = 2_000_000


@dataclass(frozen=True, slots=True)
class Estimate:
    bytes: int
    basis: str


@dataclass(frozen=True, slots=True)
class StorageUsage:
    """The filesystem (or bucket) holding the backups, in bytes."""

    total: int
    used: int
    free: int

    @property
    def percent_used(self) -> float:
        return round(100.0 * self.used / self.total, 2) if self.total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "total_bytes": self.total,
            "used_bytes": self.used,
            "free_bytes": self.free,
            "percent_used": self.percent_used,
        }


def storage_usage(ctx: ServiceContext) -> StorageUsage | None:
    """Usage of the backup storage's filesystem; None for backends that cannot tell."""
    storage = ctx.storage
    if not isinstance(storage, LocalStorage):
        return None
    try:
        usage = shutil.disk_usage(storage.root)
    except OSError:
        return None
    return StorageUsage(total=usage.total, used=usage.used, free=usage.free)


def stored_bytes(ctx: ServiceContext) -> int:
    """What the kept (not deleted) backups take in storage, by the catalog."""
    with ctx.catalog.session() as session:
        total = session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(Backup.file_size_compressed), 0)).where(
                Backup.deleted_at.is_(None)
            )
        )
    return int(total or 0)


def human(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


def estimate_backup_bytes(
    ctx: ServiceContext,
    backup_type: BackupType,
    scope: Scope = Scope.ALL,
    scope_ids: tuple[str, ...] = (),
) -> Estimate | None:
    """How much storage a backup like this needs; None when there is nothing to go by."""
    with ctx.catalog.session() as session:
        rows = session.scalars(
            sa.select(Backup)
            .where(
                Backup.type == backup_type,
                Backup.scope == scope,
                Backup.status == BackupStatus.COMPLETED,
                Backup.file_size_compressed.is_not(None),
            )
            .order_by(Backup.created_at.desc())
            .limit(20)
        ).all()
    same = next((r for r in rows if sorted(r.scope_ids or []) == sorted(scope_ids)), None)
    if same is not None and same.file_size_compressed is not None:
        need = int(same.file_size_compressed * GROWTH_MARGIN)
        return Estimate(need, f"the last {backup_type.value} backup {same.name} plus 25%")
    if scope is not Scope.ALL:
        return None
    need, parts = 0, []
    if backup_type in (BackupType.FULL, BackupType.DATABASE):
        size = _database_bytes(ctx)
        if size is not None:
            need += size
            parts.append("the database size")
    if backup_type in (BackupType.FULL, BackupType.FILES):
        need += _files_bytes(ctx.settings.resolved_files_root, ctx.settings.file_roots)
        parts.append("the size of the files")
    return Estimate(need, " and ".join(parts) + " (uncompressed)") if parts else None


def _database_bytes(ctx: ServiceContext) -> int | None:
    try:
        with connect(ctx.platform) as db:
            row = db.execute("SELECT pg_database_size(current_database())").fetchone()
    except (psycopg.Error, ClinVaultError) as exc:
        log.warning("cannot read the platform database size: %s", type(exc).__name__)
        return None
    return int(row[0]) if row else None


def _files_bytes(root: Path, selections: list[str]) -> int:
    total, seen = 0, 0
    for selection in selections:
        for directory, _dirs, files in os.walk(root / selection):
            for name in files:
                seen += 1
                if seen > _MAX_WALK_ENTRIES:
                    return total
                try:
                    total += (Path(directory) / name).lstat().st_size
                except OSError:
                    continue
    return total


def check_free_space(
    ctx: ServiceContext,
    backup_type: BackupType,
    scope: Scope = Scope.ALL,
    scope_ids: tuple[str, ...] = (),
) -> Estimate | None:
    """Refuse a backup that would not fit, before anything is written.

    Returns the estimate used (None when the backend's free space or the need is unknown).
    """
    free = ctx.storage.free_bytes()
    if free is None:
        return None
    estimate = estimate_backup_bytes(ctx, backup_type, scope, scope_ids)
    if estimate is None or estimate.bytes <= free:
        return estimate
    raise InvalidInputError(
        f"not enough free space in the backup storage for a {backup_type.value} backup: "
        f"about {human(estimate.bytes)} needed (estimated from {estimate.basis}), "
        f"{human(free)} free. Free some space, or remove old backups "
        "(clinvault retention run --dry-run shows what the rules would remove)."
    )
