"""Restoring a dump with its table rows loaded over several connections at once.

``pg_restore --jobs`` restores tables side by side, but each table through one COPY. On a
platform where one table holds most of the rows (lab results), one core loads while the
others wait: at scale 10, the observations table took 13 of the 18 seconds of a
``pg_restore -j2``, and the second worker sat idle for 12 of them. Here the rows are read
as the COPY text ``pg_restore --file=-`` writes, cut at line ends into pieces of a few MiB,
and ``jobs`` connections load the pieces at once, each piece its own COPY (two COPYs of half
the table each: 6.5 s against 11.8 s for one).

Everything else stays with ``pg_restore``: the schema first (``pre-data``), then, after the
rows, the rest of the data section (sequence values, large objects) and ``post-data``
(indexes, constraints, triggers, in parallel as usual). Indexes and constraints only come
after the rows, so the pieces can go in in any order, as with ``pg_restore`` itself.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psycopg
from psycopg import errors as pg_errors

from clinvault.engine.copytext import ScriptReader
from clinvault.engine.granular_script import NO_SERVER, toc_lines
from clinvault.engine.pgconn import ConnInfo
from clinvault.engine.pginspect import connect
from clinvault.engine.pgtools import PgTool, open_tool
from clinvault.engine.readahead import read_pipe
from clinvault.errors import CancelledError, DatabaseError, FormatError

PIECE_BYTES: Final = 16 << 20
_READ: Final = 1 << 20
_COPY: Final = b"COPY "
_FROM_STDIN: Final = b" FROM stdin;\n"
_TABLE_DATA: Final = " TABLE DATA "


@dataclass(frozen=True, slots=True)
class _Piece:
    statement: bytes
    rows: bytes


def _dump_id(line: str) -> str:
    return line.split(";", 1)[0]


@dataclass(frozen=True)
class SectionPlan:
    """The dump's entries in the three runs of a parallel restore."""

    schema: list[str]
    table_data: list[str]
    rest: list[str]

    @classmethod
    def of(cls, tool: PgTool, dump: Path) -> SectionPlan:
        every = toc_lines(tool, dump)
        schema_ids = {_dump_id(line) for line in toc_lines(tool, dump, "pre-data")}
        schema = [line for line in every if _dump_id(line) in schema_ids]
        table_data = [
            line for line in every if _dump_id(line) not in schema_ids and _TABLE_DATA in line
        ]
        taken = schema_ids | {_dump_id(line) for line in table_data}
        rest = [line for line in every if _dump_id(line) not in taken]
        return cls(schema, table_data, rest)


class _Loaders:
    """``jobs`` connections taking pieces off one bounded queue.

    Every loader takes pieces until it is told to stop, even after a failure (it then drops
    them), so the reader can never be stuck on a full queue.
    """

    def __init__(self, conn: ConnInfo, jobs: int) -> None:
        self.conn = conn
        self.jobs = jobs
        self.settings: list[bytes] = []
        self.tasks: queue.Queue[_Piece | None] = queue.Queue(jobs * 2)
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self._abandoned = threading.Event()
        self._all_done = threading.Barrier(jobs)

    def start(self) -> None:
        for index in range(self.jobs):
            thread = threading.Thread(target=self._run, name=f"clinvault-load-{index}", daemon=True)
            thread.start()
            self.threads.append(thread)

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    def put(self, piece: _Piece) -> None:
        self.tasks.put(piece)

    def finish(self) -> None:
        """Wait for every piece to be loaded; raise the first failure."""
        self._stop()
        if self.errors:
            raise self.errors[0]

    def abandon(self) -> None:
        """Stop without loading what is still queued (the caller is failing anyway)."""
        self._abandoned.set()
        self._stop()

    def _stop(self) -> None:
        for _ in self.threads:
            self.tasks.put(None)
        for thread in self.threads:
            thread.join()
        self.threads.clear()

    def _run(self) -> None:
        """Load pieces until told to stop; then, once every loader is done, all commit or,
        after any failure, all roll back.

        One transaction per loader: rows become visible (and autovacuum starts on them)
        once, at the end, as with pg_restore's one transaction per table.
        """
        db: psycopg.Connection[Any] | None = None
        try:
            db = connect(self.conn, autocommit=False)
            self._prepare(db)
            while (piece := self.tasks.get()) is not None:
                if not self.errors and not self._abandoned.is_set():
                    with db.cursor().copy(piece.statement) as copy:
                        copy.write(piece.rows)
        except BaseException as exc:
            self._record(exc)
            while self.tasks.get() is not None:  # keep the reader from blocking
                pass
        finally:
            with contextlib.suppress(threading.BrokenBarrierError):
                self._all_done.wait()
            if db is not None:
                self._end(db)

    def _end(self, db: psycopg.Connection[Any]) -> None:
        try:
            if self.errors or self._abandoned.is_set():
                db.rollback()
            else:
                db.commit()
        except BaseException as exc:
            self._record(exc)
        finally:
            db.close()

    def _record(self, exc: BaseException) -> None:
        if isinstance(exc, psycopg.Error):
            exc = DatabaseError(f"loading table data failed: {str(exc).strip()}")
        self.errors.append(exc)

    def _prepare(self, db: psycopg.Connection[Any]) -> None:
        """The session settings the script opens with (encoding, search path, row security);
        one a server does not know is skipped, as psql would carry on past it."""
        for statement in self.settings:
            try:
                with db.transaction():
                    db.execute(statement)
            except pg_errors.UndefinedObject:
                continue


def load_table_data(
    tool: PgTool,
    dump: Path,
    conn: ConnInfo,
    list_file: Path,
    *,
    jobs: int,
    piece_bytes: int = PIECE_BYTES,
    on_bytes: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
    timeout: float = 6 * 3600.0,
) -> int:
    """Load the ``TABLE DATA`` entries named in ``list_file`` into ``conn``'s database over
    ``jobs`` connections; returns the bytes of row text loaded."""
    loaders = _Loaders(conn, max(1, jobs))
    args = ["--file=-", f"--use-list={list_file}", str(dump)]
    with open_tool(tool, args, NO_SERVER, read_stdout=True, timeout=timeout, cancel=cancel) as run:
        script = ScriptReader(read_pipe(run.stdout, _READ, 16))
        try:
            loaded = _feed(script, loaders, piece_bytes, on_bytes, cancel)
        except BaseException:
            loaders.abandon()
            raise
        finally:
            script.close()
        loaders.finish()  # a loader's failure is raised here, and pg_restore is stopped
    return loaded


def _feed(
    script: ScriptReader,
    loaders: _Loaders,
    piece_bytes: int,
    on_bytes: Callable[[int], None] | None,
    cancel: threading.Event | None,
) -> int:
    loaded = 0
    while (line := script.line()) is not None:
        if not line.startswith(_COPY):
            if not loaders.threads and _is_setting(line):
                loaders.settings.append(line.rstrip(b"\n"))
            continue
        if not line.endswith(_FROM_STDIN):
            raise FormatError(f"unexpected COPY line in pg_restore output: {line[:80]!r}")
        if not loaders.threads:
            loaders.start()
        statement = line[: -len(b";\n")]
        for rows in script.rows(piece_bytes):
            if cancel is not None and cancel.is_set():
                raise CancelledError("restore cancelled while loading table data")
            if loaders.failed:
                return loaded
            loaders.put(_Piece(statement, rows))
            loaded += len(rows)
            if on_bytes is not None:
                on_bytes(len(rows))
    return loaded


def _is_setting(line: bytes) -> bool:
    return line.startswith((b"SET ", b"SELECT pg_catalog.set_config(")) and line.endswith(b";\n")
