"""Writing one backup bundle: the parts in parallel, then the manifest, last.

Knows nothing of the catalog or of users: it is given what to back up, where to, and the
audit events to ship, and returns the manifest it wrote. On any failure every object it
wrote is removed before the error propagates, so storage never holds a half bundle that
could pass for a backup (and without ``manifest.json`` it never could).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg

from clinvault import __version__
from clinvault.engine import bundle
from clinvault.engine.archive import plan_files, write_files_archive
from clinvault.engine.compression import Codec, StreamCompressor, StreamResult
from clinvault.engine.dbdump import dump_database, estimate_dump_bytes
from clinvault.engine.manifest import (
    AuditInfo,
    BackupInfo,
    DatabaseInfo,
    FilesInfo,
    Manifest,
    PartInfo,
    ScopeCounts,
    SourceInfo,
    ToolInfo,
    dump_manifest,
)
from clinvault.engine.pgconn import ConnInfo
from clinvault.engine.pginspect import (
    ScopeRoot,
    SnapshotSession,
    discover_scope,
    server_facts,
    user_tables,
)
from clinvault.engine.pgtools import PgToolkit
from clinvault.engine.progress import ProgressTracker
from clinvault.engine.scope import ForeignKey, ScopeModel, TableRef
from clinvault.errors import CancelledError, DatabaseError
from clinvault.storage.base import Storage


@dataclass(frozen=True)
class DatabaseSource:
    conn: ConnInfo
    toolkit: PgToolkit
    scope_roots: tuple[ScopeRoot, ...] = ()
    extra_links: tuple[ForeignKey, ...] = ()
    exclude: tuple[TableRef, ...] = ()
    timeout: float = 6 * 3600.0


@dataclass(frozen=True)
class FilesSource:
    root: Path
    selections: tuple[str, ...]


@dataclass(frozen=True)
class BundleSpec:
    """What to write: the backup's identity, its sources and its compression."""

    backup_id: str
    name: str
    type: str
    created_by: str
    started_at: datetime
    codec: Codec
    level: int
    scope: str = "all"
    scope_ids: tuple[str, ...] = ()
    description: str | None = None
    safety_backup: bool = False
    database: DatabaseSource | None = None
    files: FilesSource | None = None
    threads: int = 2


@dataclass
class _Parts:
    parts: list[PartInfo] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    database: DatabaseInfo | None = None
    files: FilesInfo | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, part: PartInfo) -> None:
        with self.lock:
            self.parts.append(part)


class _Digests(Protocol):
    """What every part writer reports: sizes and hashes, stored and decompressed."""

    @property
    def size(self) -> int: ...
    @property
    def compressed_size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def raw_sha256(self) -> str | None: ...


def _part_info(
    kind: str,
    codec: Codec,
    level: int,
    result: _Digests,
    parameters: dict[str, int | str] | None = None,
) -> PartInfo:
    return PartInfo(
        name=bundle.part_name(kind, codec),
        kind=kind,
        codec=codec,
        level=level,
        size=result.size,
        compressed_size=result.compressed_size,
        sha256=result.sha256,
        raw_sha256=result.raw_sha256,
        parameters=parameters,
    )


class BundleWriter:
    def __init__(
        self,
        storage: Storage,
        spec: BundleSpec,
        tracker: ProgressTracker | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.storage = storage
        self.spec = spec
        self.tracker = tracker or ProgressTracker()
        self.cancel = cancel or threading.Event()
        self._out = _Parts()

    def write(self, audit_events: Iterable[Mapping[str, Any]]) -> tuple[Manifest, bytes]:
        """Write every part and the manifest; return the manifest and its exact bytes."""
        prefix = bundle.bundle_prefix(self.spec.backup_id)
        try:
            self._write_data_parts()
            self._check_cancel()
            audit = self._write_audit_part(audit_events)
            manifest = self._manifest(audit)
            data = dump_manifest(manifest)
            self.tracker.start("finalize")
            self.storage.write_bytes(prefix + bundle.MANIFEST, data)
            self.tracker.finish("finalize")
            return manifest, data
        except BaseException:
            self.cancel.set()
            self.storage.delete_prefix(prefix)
            raise

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise CancelledError("backup cancelled")

    def _write_data_parts(self) -> None:
        jobs: list[Callable[[], None]] = []
        if self.spec.database is not None:
            jobs.append(self._database_part)
        if self.spec.files is not None:
            jobs.append(self._files_part)
        with ThreadPoolExecutor(max_workers=max(1, len(jobs)), thread_name_prefix="part") as pool:
            futures: list[Future[None]] = [pool.submit(job) for job in jobs]
            done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.exception() is not None for f in done):
                self.cancel.set()
            wait(futures)
        errors = [e for f in futures if (e := f.exception()) is not None]
        if errors:
            # The part that failed first is the cause; the other part was only cancelled.
            errors.sort(key=lambda e: isinstance(e, CancelledError))
            raise errors[0]

    def _database_part(self) -> None:
        try:
            self._dump_and_count()
        except psycopg.Error as exc:
            raise DatabaseError(
                f"reading the platform database failed: {str(exc).strip()}"
            ) from exc

    def _dump_and_count(self) -> None:
        source = self.spec.database
        assert source is not None
        key = bundle.object_key(self.spec.backup_id, bundle.part_name("database", self.spec.codec))
        with SnapshotSession.open(source.conn) as session:
            db = session.connection
            facts = server_facts(db)
            tables = user_tables(db)
            self.tracker.plan("database", estimate_dump_bytes(db, tables))
            self.tracker.start("database", "dumping the database")
            tool = source.toolkit.find("pg_dump", facts.major)
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg_dump") as pool:
                dump = pool.submit(self._dump, tool, source, session.snapshot_id, key)
                try:
                    counts = session.table_counts(tables)
                    scopes = self._scope_counts(session, source)
                except BaseException:
                    self.cancel.set()
                    raise
                result = dump.result()
        self.tracker.finish("database")
        self._out.add(
            _part_info("database", self.spec.codec, self.spec.level, result, result.parameters)
        )
        with self._out.lock:
            self._out.source.update(facts.to_json())
            self._out.source["snapshot"] = session.snapshot_id
            self._out.source["dump_tool"] = f"pg_dump {tool.version}"
            self._out.database = DatabaseInfo(tables=counts, scopes=scopes)

    def _dump(self, tool: Any, source: DatabaseSource, snapshot: str, key: str) -> StreamResult:
        with self.storage.writer(key) as sink:
            return dump_database(
                tool,
                source.conn,
                sink,
                self.spec.codec,
                self.spec.level,
                snapshot=snapshot,
                on_bytes=lambda n: self.tracker.advance("database", n),
                cancel=self.cancel,
                timeout=source.timeout,
            )

    def _scope_counts(
        self, session: SnapshotSession, source: DatabaseSource
    ) -> dict[str, ScopeCounts]:
        """Counts per scope key; a scope nested in another (studies in organizations) first."""
        models = {}
        for root in source.scope_roots:
            model = discover_scope(session.connection, root, source.extra_links, source.exclude)
            if model is not None:
                models[root.kind] = model
        order = sorted(models.values(), key=lambda m: len(m.paths))
        counted: list[tuple[ScopeModel, dict[str, dict[str, Any]]]] = []
        for model in order:
            inner = next((c for c in counted if c[0].root in model.paths), None)
            counted.append((model, session.scope_counts(model, inner)))
        return {
            model.kind: ScopeCounts(model=model.describe(), counts=counts)
            for model, counts in counted
        }

    def _files_part(self) -> None:
        source = self.spec.files
        assert source is not None
        plan = plan_files(source.root, list(source.selections))
        self.tracker.plan("files", plan.total_bytes)
        self.tracker.start("files", "archiving files")
        name = bundle.part_name("files", self.spec.codec)
        with self.storage.writer(bundle.object_key(self.spec.backup_id, name)) as sink:
            result = write_files_archive(
                plan,
                sink,
                self.spec.codec,
                self.spec.level,
                threads=self.spec.threads,
                on_progress=lambda n: self.tracker.advance("files", n),
                cancel=self.cancel,
            )
        self.tracker.finish("files")
        self._out.add(_part_info("files", self.spec.codec, self.spec.level, result))
        entries = [{**e.to_json(), "part": name} for e in result.entries]
        with self._out.lock:
            self._out.source["files_root"] = str(source.root)
            self._out.files = FilesInfo(
                selections=list(source.selections),
                file_count=result.file_count,
                dir_count=result.dir_count,
                symlink_count=result.symlink_count,
                total_bytes=sum(e.size for e in result.entries),
                frame_count=result.frame_count,
                warnings=result.warnings,
                entries=entries,
            )

    def _write_audit_part(self, events: Iterable[Mapping[str, Any]]) -> AuditInfo:
        self.tracker.start("audit", "shipping the audit trail")
        name = bundle.part_name("audit", self.spec.codec)
        count, last_seq, last_hash = 0, None, None
        with self.storage.writer(bundle.object_key(self.spec.backup_id, name)) as sink:
            compressor = StreamCompressor(sink, self.spec.codec, self.spec.level)
            for event in events:
                line = json.dumps(event, sort_keys=True, ensure_ascii=False, default=str)
                compressor.write(line.encode("utf-8") + b"\n")
                count += 1
                last_seq, last_hash = event.get("seq"), event.get("hash")
            result = compressor.close()
        self._out.add(_part_info("audit", self.spec.codec, self.spec.level, result))
        self.tracker.finish("audit")
        return AuditInfo(
            events=count,
            last_seq=int(last_seq) if last_seq is not None else None,
            last_hash=str(last_hash) if last_hash is not None else None,
        )

    def _manifest(self, audit: AuditInfo) -> Manifest:
        spec = self.spec
        order = {"database": 0, "files": 1, "audit": 2}
        source = dict(self._out.source)
        source["hostname"] = socket.gethostname()
        return Manifest(
            tool=ToolInfo(version=__version__),
            backup=BackupInfo(
                id=spec.backup_id,
                name=spec.name,
                type=spec.type,
                scope=spec.scope,
                scope_ids=list(spec.scope_ids),
                description=spec.description,
                created_by=spec.created_by,
                started_at=spec.started_at,
                completed_at=datetime.now(UTC),
                safety_backup=spec.safety_backup,
            ),
            source=SourceInfo(**source),
            parts=sorted(self._out.parts, key=lambda p: order[p.kind]),
            database=self._out.database,
            files=self._out.files,
            audit=audit,
        )
