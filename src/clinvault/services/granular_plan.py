"""Checking a study or organization restore before anything happens, and what it covers.

Shared by the preview and the restore: the backup must be complete and readable, hold the
database, carry per-scope row counts for this kind (taken in the dump's own snapshot), and
know every named study or organization; the live database must have the same scope tables.
Then the scope's rows are staged from the dump (nothing live changes) and the file
directories to bring back are worked out from the backup's own rows and file index, so a
study whose directory is gone from the live tree still comes back.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from clinvault.catalog.models import Backup, BackupStatus, BackupType
from clinvault.engine.archive import FileEntry
from clinvault.engine.checks import check_manifest_checksum, read_manifest
from clinvault.engine.filerestore import entries_under
from clinvault.engine.granular_load import ScopeLoader, StagedScope
from clinvault.engine.granular_schema import read_scope_schema, temp_table
from clinvault.engine.granular_script import read_table_data_toc
from clinvault.engine.manifest import Manifest, PartInfo
from clinvault.engine.pginspect import connect, server_facts
from clinvault.engine.scope import ScopeModel
from clinvault.engine.staging import stage_part
from clinvault.errors import (
    IntegrityError,
    InvalidInputError,
    NotFoundError,
)
from clinvault.services.context import ServiceContext
from clinvault.services.queries import get_backup
from clinvault.services.scoping import KINDS, resolve_scope, scope_models

BytesCallback = Callable[[int], None]
_TOOL_MAJOR = re.compile(r"pg_dump (\d+)")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class GranularPlan:
    """A validated request: the backup, its manifest and the scope keys it names."""

    backup: Backup
    manifest: Manifest
    kind: str
    keys: tuple[str, ...]
    labels: tuple[str, ...]
    expected: dict[str, int]
    database_part: PartInfo
    files_part: PartInfo | None
    checks: list[Check] = field(default_factory=list)

    @property
    def backup_id(self) -> str:
        return str(self.backup.id)

    def scope_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "keys": list(self.keys), "labels": list(self.labels)}


@dataclass(frozen=True, slots=True)
class Prepared:
    """The scope staged in a live session, and the files that belong to it."""

    db: psycopg.Connection[Any]
    staged: StagedScope
    directories: list[str]
    entries: list[FileEntry]
    warnings: list[str]


def plan_restore(ctx: ServiceContext, backup_id: str, kind: str, idents: list[str]) -> GranularPlan:
    """Validate the request against the catalog and the manifest; no live access yet."""
    if kind not in KINDS:
        raise InvalidInputError(f"unknown scope {kind!r}: use one of {', '.join(KINDS)}")
    if not idents:
        raise InvalidInputError(f"name at least one {kind} to restore")
    backup = get_backup(ctx, backup_id)
    _check_backup_row(backup)
    manifest, data = read_manifest(ctx.storage, str(backup.id))
    checks = [Check("manifest", True, "manifest.json present and readable")]
    problem = check_manifest_checksum(data, backup.checksum)
    if problem:
        raise IntegrityError(problem)
    checks.append(Check("manifest_checksum", True, "matches the catalog's checksum"))
    database_part = manifest.part("database")
    if database_part is None or manifest.database is None:
        raise InvalidInputError(f"backup {backup.name} holds no database: nothing to restore")
    scope_counts = manifest.database.scopes.get(kind)
    if scope_counts is None:
        raise InvalidInputError(
            f"backup {backup.name} has no per-{kind} row counts (its database had no {kind} "
            "table usable as a scope root): it cannot restore one " + kind
        )
    keys, labels = _resolve(scope_counts.counts, kind, idents, backup.name)
    checks.append(Check("scope_in_backup", True, f"{kind} {', '.join(labels)} in the backup"))
    expected: dict[str, int] = {}
    for key in keys:
        for table, rows in scope_counts.counts[key].get("tables", {}).items():
            expected[table] = expected.get(table, 0) + int(rows)
    return GranularPlan(
        backup,
        manifest,
        kind,
        keys,
        labels,
        expected,
        database_part,
        manifest.part("files"),
        checks,
    )


def _check_backup_row(backup: Backup) -> None:
    if backup.deleted_at is not None:
        raise NotFoundError(f"backup {backup.name} was deleted")
    if backup.status is not BackupStatus.COMPLETED:
        raise InvalidInputError(f"backup {backup.name} is {backup.status.value}, not completed")
    if backup.type is BackupType.FILES:
        raise InvalidInputError(
            f"backup {backup.name} is a files backup: a study or organization restore needs "
            "a full or database backup"
        )


def _resolve(
    counts: dict[str, dict[str, Any]], kind: str, idents: list[str], backup_name: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Keys and labels of the named roots; every name must be in the backup."""
    keys: list[str] = []
    labels: list[str] = []
    missing = []
    for ident in idents:
        found = next((k for k, v in sorted(counts.items()) if ident in (k, v.get("label"))), None)
        if found is None or not counts[found].get("tables"):
            missing.append(ident)
        elif found not in keys:
            keys.append(found)
            labels.append(str(counts[found].get("label") or found))
    if missing:
        raise NotFoundError(f"backup {backup_name} has no {kind} {', '.join(map(repr, missing))}")
    return tuple(keys), tuple(labels)


@contextlib.contextmanager
def staged_dump(
    ctx: ServiceContext,
    plan: GranularPlan,
    name: str,
    *,
    on_bytes: BytesCallback | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[Path]:
    """The database part decompressed and verified into a private staging file."""
    directory = ctx.settings.resolved_staging_dir / name
    directory.mkdir(parents=True, exist_ok=True)
    try:
        yield stage_part(
            ctx.storage,
            plan.backup_id,
            plan.database_part,
            directory / "database.dump",
            on_bytes=on_bytes,
            cancel=cancel,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def prepare(
    ctx: ServiceContext,
    plan: GranularPlan,
    dump: Path,
    *,
    on_bytes: BytesCallback | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[Prepared]:
    """Stage the scope's rows in a live session and work out its files; changes nothing."""
    settings = ctx.settings
    with connect(ctx.platform) as db:
        # This session does long, deliberate work: the platform's default limits do not apply.
        db.execute("SET statement_timeout = 0")
        db.execute("SET idle_in_transaction_session_timeout = 0")
        models = scope_models(db, settings.scope)
        schema = read_scope_schema(db, _live_model(models, plan))
        tool = ctx.toolkit.find("pg_restore", _restore_major(plan, server_facts(db).major))
        toc = read_table_data_toc(tool, dump)
        staged = ScopeLoader(db, schema, plan.keys).load(
            tool,
            dump,
            toc,
            on_bytes=on_bytes,
            cancel=cancel,
            timeout=settings.tool_timeout_seconds,
        )
        _check_staged_counts(plan, staged)
        plan.checks.append(Check("backup_rows", True, "the dump's rows match the manifest"))
        directories, warnings = scope_directories(ctx, db, plan, staged, models)
        entries = _entries(plan, directories)
        yield Prepared(db, staged, directories, entries, warnings)


def _restore_major(plan: GranularPlan, live_major: int) -> int:
    """pg_restore must read the dump: at least the version of the pg_dump that wrote it."""
    source = plan.manifest.source
    found = _TOOL_MAJOR.search(source.dump_tool or "")
    dumped = int(found.group(1)) if found else 0
    server = (source.server_version_num or 0) // 10000
    return max(live_major, dumped, server)


def _live_model(models: dict[str, ScopeModel], plan: GranularPlan) -> ScopeModel:
    """The live scope model; its tables must be the ones the backup counted."""
    model = models.get(plan.kind)
    if model is None:
        raise InvalidInputError(
            f"the live database has no {plan.kind} table usable as a scope root"
        )
    assert plan.manifest.database is not None
    backed_up = set(plan.manifest.database.scopes[plan.kind].model.get("tables", {}))
    live = {t.qualified for t in model.tables}
    if backed_up != live:
        only_backup = sorted(backed_up - live) or ["none"]
        only_live = sorted(live - backed_up) or ["none"]
        raise InvalidInputError(
            f"the tables of a {plan.kind} changed since the backup (only in the backup: "
            f"{', '.join(only_backup)}; only live: {', '.join(only_live)}): restore the "
            "whole database instead"
        )
    return model


def _check_staged_counts(plan: GranularPlan, staged: StagedScope) -> None:
    found = staged.counts()
    wrong = {
        t: (found.get(t, 0), plan.expected.get(t, 0))
        for t in set(found) | set(plan.expected)
        if found.get(t, 0) != plan.expected.get(t, 0)
    }
    if wrong:
        detail = "; ".join(
            f"{t}: {n} rows in the dump, {e} in the manifest" for t, (n, e) in sorted(wrong.items())
        )
        raise IntegrityError(
            f"the backup's rows of this {plan.kind} do not match its manifest: {detail}"
        )


def scope_directories(
    ctx: ServiceContext,
    db: psycopg.Connection[Any],
    plan: GranularPlan,
    staged: StagedScope,
    models: dict[str, ScopeModel],
) -> tuple[list[str], list[str]]:
    """The file directories of the scope, as the backup had them and as they are live.

    Directories only the live tree has are included too (the restore removes them: their
    study no longer exists at backup time); directories outside what the backup's files
    part covers are left alone, with a warning.
    """
    settings = ctx.settings.scope
    if plan.files_part is None or plan.manifest.files is None:
        return [], [f"backup {plan.backup.name} has no files part: files are left as they are"]
    dirs = _backup_directories(ctx, db, plan, staged, models)
    for key in plan.keys:
        with contextlib.suppress(NotFoundError):  # gone live: the backup's names suffice
            dirs.extend(resolve_scope(db, settings, plan.kind, [key]).file_paths)
    selections = plan.manifest.files.selections
    covered, warnings = [], []
    for path in dict.fromkeys(dirs):
        if any(path == s or path.startswith(s.rstrip("/") + "/") for s in selections):
            covered.append(path)
        else:
            warnings.append(f"{path} is outside the backup's file selections: left as it is")
    return covered, warnings


def _backup_directories(
    ctx: ServiceContext,
    db: psycopg.Connection[Any],
    plan: GranularPlan,
    staged: StagedScope,
    models: dict[str, ScopeModel],
) -> list[str]:
    """Directories named after the backup's rows: the roots, and an organization's studies."""
    settings = ctx.settings.scope
    templates = settings.study_dirs if plan.kind == "study" else settings.organization_dirs
    dirs = [
        d
        for key, label in zip(plan.keys, plan.labels, strict=True)
        for d in format_dirs(templates, key, label)
    ]
    study = models.get("study")
    if plan.kind == "organization" and study is not None:
        table = staged.tables.get(study.root)
        if table is not None:
            for key, label in db.execute(_labels_query(study, table.temp)).fetchall():
                dirs.extend(format_dirs(settings.study_dirs, str(key), str(label or key)))
    return dirs


def format_dirs(templates: list[str], key: str, label: str) -> list[str]:
    """Fill ``{key}``/``{label}`` in directory templates, refusing paths that escape."""
    paths = []
    for template in templates:
        path = template.format(key=key, label=label)
        if not path or path.startswith("/") or ".." in path.split("/"):
            raise InvalidInputError(f"scope directory {path!r} escapes the files root")
        paths.append(path)
    return paths


def _entries(plan: GranularPlan, directories: list[str]) -> list[FileEntry]:
    if plan.manifest.files is None or not directories:
        return []
    index = [FileEntry.from_json(e) for e in plan.manifest.files.entries]
    return entries_under(index, directories)


def new_work_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _labels_query(model: ScopeModel, temp: str) -> sql.Composed:
    label = model.label_column or model.key_column
    return sql.SQL("SELECT {}::text, {}::text FROM {} ORDER BY 1").format(
        sql.Identifier(model.key_column), sql.Identifier(label), temp_table(temp)
    )
