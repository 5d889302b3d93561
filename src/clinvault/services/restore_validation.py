"""Checks before and after a restore.

Before (:func:`validate_backup`): nothing may change until the bundle is known to be whole
and usable: complete (manifest present), the manifest matching the catalog's checksum, a
format this tool reads, every part's stored SHA-256, a target server not older than the
dump's, a ``pg_restore`` able to read the dump, room for the staging copies, and a target
that is what the operator said it is. Every check is recorded, failed or not.

After (:func:`validate_restored_data`): the restored database has the manifest's row count in
every table, the restored tree has exactly the manifest's files with their SHA-256 re-read
from disk, and every row of the file-reference table (``documents``) names a file that
exists.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from psycopg import sql

from clinvault.catalog.models import Backup, BackupStatus
from clinvault.engine import bundle
from clinvault.engine.archive import FileEntry
from clinvault.engine.checks import check_manifest_checksum, read_manifest
from clinvault.engine.dbrestore import compare_counts, count_rows, database_exists, maintenance
from clinvault.engine.filerestore import check_same_filesystem, check_tree, safe_member_path
from clinvault.engine.manifest import SUPPORTED_VERSIONS, Manifest, PartKind
from clinvault.engine.pgconn import ConnInfo
from clinvault.engine.pginspect import connect, server_facts
from clinvault.errors import (
    CancelledError,
    ClinVaultError,
    ConflictError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    ToolNotFoundError,
)
from clinvault.services.context import ServiceContext
from clinvault.services.restore_ops import RestoreTarget

_TOOL_VERSION = re.compile(r"(\d+)(?:\.\d+)*")
_MAX_REFERENCE_PROBLEMS = 50


class RestoreScope(StrEnum):
    FULL = "full"
    DATABASE = "database"
    FILES = "files"

    @property
    def parts(self) -> tuple[PartKind, ...]:
        if self is RestoreScope.FULL:
            return ("database", "files")
        return ("database",) if self is RestoreScope.DATABASE else ("files",)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    error: type[ClinVaultError] = IntegrityError

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class BackupValidation:
    backup_id: str
    checks: list[Check] = field(default_factory=list)
    manifest: Manifest | None = None
    target_major: int | None = None
    tool_major: int | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(
        self, name: str, ok: bool, detail: str, error: type[ClinVaultError] = IntegrityError
    ) -> bool:
        self.checks.append(Check(name, ok, detail, error))
        return ok

    def problems(self) -> list[str]:
        return [c.detail for c in self.checks if not c.ok]

    def raise_if_failed(self) -> None:
        failed = [c for c in self.checks if not c.ok]
        if failed:
            reasons = "; ".join(c.detail for c in failed)
            raise failed[0].error(f"backup {self.backup_id} cannot be restored: {reasons}")

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked_at": datetime.now(UTC).isoformat(),
            "checks": [c.to_json() for c in self.checks],
        }


@dataclass(frozen=True, slots=True)
class RestoreSite:
    """Where the restored data goes: a database on the platform's server and a files root."""

    server: ConnInfo
    database: str
    files_root: Path
    live: bool


def restore_site(ctx: ServiceContext, target: RestoreTarget) -> RestoreSite:
    files = Path(target.directory).expanduser().resolve() if target.directory else None
    return RestoreSite(
        server=ctx.platform,
        database=target.database or ctx.platform.database,
        files_root=files or ctx.settings.resolved_files_root,
        live=not target.is_alternate,
    )


def dump_tool_major(manifest: Manifest) -> int | None:
    match = _TOOL_VERSION.search(manifest.source.dump_tool or "")
    return int(match.group(1)) if match else None


def validate_backup(
    ctx: ServiceContext,
    row: Backup,
    scope: RestoreScope,
    target: RestoreTarget,
    *,
    check_hashes: bool = True,
    on_bytes: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
) -> BackupValidation:
    """Every check a restore needs before it may change anything; never raises for bad data
    (see :meth:`BackupValidation.raise_if_failed`)."""
    report = BackupValidation(str(row.id))
    if row.deleted_at is not None:
        report.add("status", False, "the backup was deleted", InvalidInputError)
    elif row.status is not BackupStatus.COMPLETED:
        report.add(
            "status", False, f"the backup is {row.status.value}, not completed", InvalidInputError
        )
    else:
        report.add("status", True, "the backup is completed")
    try:
        manifest, data = read_manifest(ctx.storage, str(row.id))
    except ClinVaultError as exc:
        report.add("manifest", False, exc.message, type(exc))
        return report
    report.manifest = manifest
    mismatch = check_manifest_checksum(data, row.checksum)
    report.add("manifest", mismatch is None, mismatch or "manifest present, checksum matches")
    report.add(
        "format",
        manifest.format_version in SUPPORTED_VERSIONS,
        f"bundle format version {manifest.format_version}",
    )
    missing = [kind for kind in scope.parts if manifest.part(kind) is None]
    report.add(
        "parts",
        not missing,
        f"the backup has no {' or '.join(missing)} part for a {scope.value} restore"
        if missing
        else f"{', '.join(scope.parts)} part(s) present",
        InvalidInputError,
    )
    if check_hashes:
        _check_part_hashes(ctx, report, manifest, on_bytes, cancel)
    site = restore_site(ctx, target)
    if "database" in scope.parts and not missing:
        _check_server(ctx, report, manifest, site)
    _check_disk(ctx, report, manifest, scope, site)
    _check_target(report, scope, target, site)
    return report


def _check_part_hashes(
    ctx: ServiceContext,
    report: BackupValidation,
    manifest: Manifest,
    on_bytes: Callable[[int], None] | None,
    cancel: threading.Event | None,
) -> None:
    """The stored bytes of every part against the manifest (content is checked again, file
    by file, as it is staged)."""
    for part in manifest.parts:
        key = bundle.object_key(report.backup_id, part.name)
        digest, size = hashlib.sha256(), 0
        try:
            for chunk in ctx.storage.read(key):
                if cancel is not None and cancel.is_set():
                    raise CancelledError("validation cancelled")
                digest.update(chunk)
                size += len(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
        except NotFoundError:
            report.add(f"sha256:{part.name}", False, f"{part.name} is missing from storage")
            continue
        ok = digest.hexdigest() == part.sha256 and size == part.compressed_size
        report.add(
            f"sha256:{part.name}",
            ok,
            f"{part.name}: SHA-256 matches"
            if ok
            else f"{part.name}: SHA-256 of the stored object does not match the manifest",
        )


def _check_server(
    ctx: ServiceContext, report: BackupValidation, manifest: Manifest, site: RestoreSite
) -> None:
    source_num = manifest.source.server_version_num
    with maintenance(site.server) as db:
        target_major = server_facts(db).major
    report.target_major = target_major
    source_major = source_num // 10000 if source_num else None
    if source_major is not None and source_major > target_major:
        report.add(
            "server_version",
            False,
            f"the dump comes from PostgreSQL {source_major}; the target server runs "
            f"{target_major}: restoring into an older major version is not supported",
            InvalidInputError,
        )
        return
    report.add(
        "server_version",
        True,
        f"dump from PostgreSQL {source_major or 'unknown'}, target server {target_major}",
    )
    needed = max(target_major, source_major or 0, dump_tool_major(manifest) or 0)
    try:
        tool = ctx.toolkit.find("pg_restore", needed)
    except ToolNotFoundError as exc:
        report.add("pg_restore", False, exc.message, ToolNotFoundError)
        return
    report.tool_major = tool.major
    report.add("pg_restore", True, f"using {tool}")


def _free(directory: Path) -> int:
    probe = directory
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _check_disk(
    ctx: ServiceContext,
    report: BackupValidation,
    manifest: Manifest,
    scope: RestoreScope,
    site: RestoreSite,
) -> None:
    needs: list[tuple[Path, int, str]] = []
    dump = manifest.part("database")
    if "database" in scope.parts and dump is not None:
        needs.append((ctx.settings.resolved_staging_dir, dump.size, "the staged dump"))
    if "files" in scope.parts and manifest.files is not None:
        work = ctx.settings.restore_work_root(site.files_root)
        needs.append((work, manifest.files.total_bytes, "the staged files"))
        try:
            check_same_filesystem(site.files_root, work)
        except InvalidInputError as exc:
            report.add("filesystem", False, exc.message, InvalidInputError)
    for directory, needed, what in needs:
        free = _free(directory)
        report.add(
            f"disk:{what}",
            free >= needed,
            f"{what}: {needed} bytes needed in {directory}, {free} free",
            InvalidInputError,
        )


def _check_target(
    report: BackupValidation, scope: RestoreScope, target: RestoreTarget, site: RestoreSite
) -> None:
    problem = _target_problem(scope, target, site)
    if problem is None:
        report.add("target", True, f"database {site.database!r}, files under {site.files_root}")
    else:
        report.add("target", False, problem[0], problem[1])


def _target_problem(
    scope: RestoreScope, target: RestoreTarget, site: RestoreSite
) -> tuple[str, type[ClinVaultError]] | None:
    wants_db = "database" in scope.parts
    wants_files = "files" in scope.parts
    if target.database and not wants_db:
        return f"a {scope.value} restore takes no target database", InvalidInputError
    if target.directory and not wants_files:
        return f"a {scope.value} restore takes no target directory", InvalidInputError
    half_alternate = target.is_alternate and not (target.database and target.directory)
    if scope is RestoreScope.FULL and half_alternate:
        return (
            "an alternate full restore needs both a target database and a target directory",
            InvalidInputError,
        )
    if wants_db:
        with maintenance(site.server) as db:
            exists = database_exists(db, site.database)
        if site.live and not exists:
            return (
                f"the platform database {site.database!r} does not exist: create it empty "
                "first, or restore with --target-database",
                InvalidInputError,
            )
        if not site.live and exists:
            return f"the target database {site.database!r} already exists", ConflictError
    root = site.files_root
    occupied = root.exists() and (not root.is_dir() or any(root.iterdir()))
    if wants_files and not site.live and occupied:
        return f"the target directory {root} exists and is not empty", ConflictError
    return None


# --- after ---------------------------------------------------------------------------------


def validate_restored_data(
    ctx: ServiceContext,
    manifest: Manifest,
    scope: RestoreScope,
    site: RestoreSite,
    *,
    database_counts: Mapping[str, int] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Compare what is now at ``site`` with the manifest; ``ok`` is False on any mismatch.

    ``database_counts``: the row counts of the restored database, when they were taken on
    the restored copy before it was renamed into place (counting again after the cut-over
    would also count whatever the platform wrote since).

    The file-reference check is binding for full restores only: after a database-only or
    files-only restore the other half is not the backup's, so it is reported as a warning.
    """
    results: dict[str, Any] = {"checked_at": datetime.now(UTC).isoformat(), "ok": True}
    if "database" in scope.parts and manifest.database is not None:
        counts = (
            dict(database_counts)
            if database_counts is not None
            else count_rows(site.server.with_database(site.database))
        )
        problems = compare_counts(manifest.database.tables, counts)
        extra = sorted(set(counts) - set(manifest.database.tables))
        results["database"] = {
            "ok": not problems,
            "tables": len(manifest.database.tables),
            "rows": sum(manifest.database.tables.values()),
            "problems": problems,
            "extra_tables": extra,
        }
        results["ok"] &= not problems
    if "files" in scope.parts and manifest.files is not None:
        entries = [FileEntry.from_json(e) for e in manifest.files.entries]
        tree = check_tree(
            site.files_root, entries, manifest.files.selections, on_bytes=on_bytes, cancel=cancel
        )
        results["files"] = {**tree.to_json(), "expected_files": manifest.files.file_count}
        results["ok"] &= not tree.problems
    references = check_file_references(ctx, site)
    if references is not None:
        references["binding"] = scope is RestoreScope.FULL
        results["references"] = references
        if scope is RestoreScope.FULL:
            results["ok"] &= references["ok"]
    return results


def check_file_references(ctx: ServiceContext, site: RestoreSite) -> dict[str, Any] | None:
    """Every row of the configured file-reference table names a file that exists; None when
    the database has no such table."""
    settings = ctx.settings
    schema = settings.scope.schema_name
    table, column = settings.file_reference_table, settings.file_reference_column
    with connect(site.server.with_database(site.database), autocommit=False) as db:
        present = db.execute(
            "SELECT 1 FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s AND column_name = %s",
            (schema, table, column),
        ).fetchone()
        if present is None:
            return None
        query = sql.SQL("SELECT {} FROM {}").format(
            sql.Identifier(column), sql.Identifier(schema, table)
        )
        checked, missing = 0, []
        references = _References(site.files_root)
        with db.cursor(name="clinvault_file_refs") as cur:
            cur.execute(query)
            for (path,) in cur:
                checked += 1
                if not references.exists(str(path)):
                    missing.append(str(path))
    return {
        "ok": not missing,
        "table": f"{schema}.{table}",
        "checked": checked,
        "missing": len(missing),
        "missing_examples": missing[:_MAX_REFERENCE_PROBLEMS],
    }


class _References:
    """Checks that referenced files exist, looking at each directory once: thousands of
    rows name files in the same few directories."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._listings: dict[str, frozenset[str] | None] = {}

    def exists(self, path: str) -> bool:
        try:
            target = safe_member_path(self._root, path)
        except IntegrityError:
            return False
        folder = os.fspath(target.parent)
        if folder not in self._listings:
            self._listings[folder] = _regular_files(target.parent)
        listing = self._listings[folder]
        return listing is not None and target.name in listing


def _regular_files(folder: Path) -> frozenset[str] | None:
    """Names of the files in ``folder`` (links to files count, as for ``Path.is_file``);
    None when it cannot be read."""
    try:
        with os.scandir(folder) as entries:
            return frozenset(e.name for e in entries if e.is_file())
    except OSError:
        return None
