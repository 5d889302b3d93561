"""Database restore: a new database beside the live one, then a cut-over by two renames.

``pg_restore`` loads the staged dump, in parallel, into a new database created like the
live one (same encoding, collation and owner, from ``template0``) while the platform keeps
serving. Row counts are checked against the manifest there. The cut-over is short: refuse
new connections to the live database, end its sessions, rename it to the checkpoint name,
rename the new one to the live name. Undoing is the reverse rename, decided from which
databases exist, so it also works from another process after a crash.

Where the role may not create or rename databases, :func:`restore_dump` with
``in_place=True`` runs ``pg_restore --clean --if-exists --single-transaction`` on the live
database: all or nothing. It replaces every object the dump holds; objects created after
the backup that the dump does not hold (a new table) stay, and validation reports them.

Administrative statements go through the server's maintenance database (``postgres``, else
``template1``) with identifiers quoted by ``psycopg.sql``; the tools get credentials through
the environment (see :mod:`clinvault.engine.pgtools`), never argv.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from clinvault.engine.granular_script import write_list
from clinvault.engine.parallel_load import PIECE_BYTES, SectionPlan, load_table_data
from clinvault.engine.pgconn import ConnInfo
from clinvault.engine.pginspect import connect, server_facts, user_tables
from clinvault.engine.pgtools import PgTool, open_tool
from clinvault.engine.scope import TableRef
from clinvault.errors import DatabaseError

MAX_NAME_BYTES = 63
_RENAME_ATTEMPTS = 10
_RENAME_PAUSE = 0.3


def derived_name(live: str, tag: str) -> str:
    """``<live>__<tag>``, shortening ``live`` so the name fits PostgreSQL's 63 bytes."""
    suffix = f"__{tag}"
    room = MAX_NAME_BYTES - len(suffix.encode())
    prefix = live.encode()[:room].decode("utf-8", "ignore")
    return prefix + suffix


@contextmanager
def maintenance(server: ConnInfo) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the server's maintenance database."""
    try:
        db = connect(server.with_database("postgres"))
    except DatabaseError:
        db = connect(server.with_database("template1"))
    with db:
        yield db


def _fail(action: str, exc: psycopg.Error) -> DatabaseError:
    return DatabaseError(f"{action} failed: {str(exc).strip()}")


def server_major(server: ConnInfo) -> int:
    with maintenance(server) as db:
        return server_facts(db).major


def database_exists(db: psycopg.Connection[Any], name: str) -> bool:
    row = db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """What a database is created with: kept identical between live and restored copies."""

    encoding: str
    collate: str
    ctype: str
    owner: str
    provider: str | None = None  # 'c' libc, 'i' ICU, 'b' builtin
    locale: str | None = None  # the ICU or builtin locale


def database_settings(db: psycopg.Connection[Any], name: str) -> DatabaseSettings | None:
    columns = {
        r[0]
        for r in db.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'pg_database'::regclass"
            " AND attnum > 0"
        )
    }
    provider = sql.SQL("datlocprovider::text" if "datlocprovider" in columns else "NULL")
    locale_column = next((c for c in ("datlocale", "daticulocale") if c in columns), None)
    locale = sql.Identifier(locale_column) if locale_column else sql.SQL("NULL")
    row = db.execute(
        sql.SQL(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype,"
            " pg_get_userbyid(datdba), {}, {} FROM pg_database WHERE datname = %s"
        ).format(provider, locale),
        (name,),
    ).fetchone()
    if row is None:
        return None
    encoding, collate, ctype, owner, provider_code, locale_name = row
    return DatabaseSettings(
        str(encoding),
        str(collate),
        str(ctype),
        str(owner),
        None if provider_code is None else str(provider_code),
        None if locale_name is None else str(locale_name),
    )


def create_database(
    server: ConnInfo, name: str, like: DatabaseSettings | None, *, encoding: str | None = None
) -> None:
    """Create an empty database from ``template0`` with ``like``'s settings (or just
    ``encoding`` when there is no database to copy them from)."""
    options: list[sql.Composable] = [sql.SQL("TEMPLATE template0")]
    if like is not None:
        options += [
            sql.SQL("ENCODING {}").format(sql.Literal(like.encoding)),
            sql.SQL("LC_COLLATE {}").format(sql.Literal(like.collate)),
            sql.SQL("LC_CTYPE {}").format(sql.Literal(like.ctype)),
        ]
        if like.provider == "i" and like.locale:
            options.append(
                sql.SQL("LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(like.locale))
            )
        elif like.provider == "b" and like.locale:
            options.append(
                sql.SQL("LOCALE_PROVIDER builtin BUILTIN_LOCALE {}").format(
                    sql.Literal(like.locale)
                )
            )
    elif encoding:
        options.append(sql.SQL("ENCODING {}").format(sql.Literal(encoding)))
    with maintenance(server) as db:
        row = db.execute("SELECT current_user").fetchone()
        if like is not None and row is not None and row[0] != like.owner:
            options.append(sql.SQL("OWNER {}").format(sql.Identifier(like.owner)))
        statement = sql.SQL("CREATE DATABASE {} ").format(sql.Identifier(name))
        try:
            db.execute(statement + sql.SQL(" ").join(options))
        except psycopg.Error as exc:
            raise _fail(f"creating the database {name!r}", exc) from exc


def drop_database(server: ConnInfo, name: str) -> bool:
    """Drop ``name`` (ending its sessions); False when it did not exist."""
    with maintenance(server) as db:
        if not database_exists(db, name):
            return False
        try:
            db.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise _fail(f"dropping the database {name!r}", exc) from exc
    return True


def databases_with_prefix(server: ConnInfo, prefix: str) -> list[str]:
    with maintenance(server) as db:
        rows = db.execute(
            "SELECT datname FROM pg_database WHERE left(datname, %s) = %s ORDER BY datname",
            (len(prefix), prefix),
        ).fetchall()
    return [str(r[0]) for r in rows]


# --- pg_restore ----------------------------------------------------------------------------


def _dbname_conninfo(name: str) -> str:
    """``dbname='...'``: a name holding ``=`` would otherwise be read as a connection string."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def restore_args(
    database: str,
    dump: Path,
    *,
    jobs: int,
    in_place: bool,
    keep_owners: bool = True,
    list_file: Path | None = None,
) -> list[str]:
    args = ["--exit-on-error", "--no-password", f"--dbname={_dbname_conninfo(database)}"]
    if list_file is not None:
        args.append(f"--use-list={list_file}")
    if in_place:
        args += ["--clean", "--if-exists", "--single-transaction"]
    elif jobs > 1:
        args.append(f"--jobs={jobs}")
    if not keep_owners:
        args += ["--no-owner", "--no-privileges"]
    args.append(str(dump))
    return args


def restore_dump(
    tool: PgTool,
    conn: ConnInfo,
    dump: Path,
    *,
    jobs: int,
    in_place: bool = False,
    keep_owners: bool = True,
    timeout: float = 6 * 3600.0,
    cancel: threading.Event | None = None,
) -> None:
    """Run ``pg_restore`` of the staged ``dump`` into ``conn``'s database; stops at the first
    error (``ToolError`` with its message). In place, it is one transaction."""
    args = restore_args(conn.database, dump, jobs=jobs, in_place=in_place, keep_owners=keep_owners)
    with open_tool(tool, args, conn, timeout=timeout, cancel=cancel):
        pass


def restore_dump_parallel(
    tool: PgTool,
    conn: ConnInfo,
    dump: Path,
    *,
    jobs: int,
    keep_owners: bool = True,
    timeout: float = 6 * 3600.0,
    cancel: threading.Event | None = None,
    on_bytes: Callable[[int], None] | None = None,
    piece_bytes: int = PIECE_BYTES,
) -> None:
    """Restore the staged ``dump`` into ``conn``'s (new, empty) database with the table rows
    loaded over ``jobs`` connections at once (see ``parallel_load``): the schema, then the
    rows, then everything else with ``pg_restore --jobs``. The list files go beside the dump.
    """
    plan = SectionPlan.of(tool, dump)
    if plan.schema:
        _restore_listed(
            tool, conn, dump, "schema.list", plan.schema, 1, keep_owners, timeout, cancel
        )
    if plan.table_data:
        data_list = write_list(dump.with_name("data.list"), plan.table_data)
        load_table_data(
            tool,
            dump,
            conn,
            data_list,
            jobs=jobs,
            piece_bytes=piece_bytes,
            on_bytes=on_bytes,
            cancel=cancel,
            timeout=timeout,
        )
    if plan.rest:
        _restore_listed(
            tool, conn, dump, "rest.list", plan.rest, jobs, keep_owners, timeout, cancel
        )


def _restore_listed(
    tool: PgTool,
    conn: ConnInfo,
    dump: Path,
    list_name: str,
    lines: list[str],
    jobs: int,
    keep_owners: bool,
    timeout: float,
    cancel: threading.Event | None,
) -> None:
    list_file = write_list(dump.with_name(list_name), lines)
    args = restore_args(
        conn.database,
        dump,
        jobs=jobs,
        in_place=False,
        keep_owners=keep_owners,
        list_file=list_file,
    )
    with open_tool(tool, args, conn, timeout=timeout, cancel=cancel):
        pass


# --- the cut-over --------------------------------------------------------------------------


def terminate_sessions(db: psycopg.Connection[Any], name: str) -> int:
    row = db.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    ).fetchone()
    return int(row[0]) if row else 0


def set_allow_connections(db: psycopg.Connection[Any], name: str, allow: bool) -> None:
    db.execute(
        sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.SQL("true" if allow else "false")
        )
    )


def rename_database(db: psycopg.Connection[Any], old: str, new: str) -> None:
    """Rename, ending the sessions on ``old`` first; retried while sessions linger."""
    statement = sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
        sql.Identifier(old), sql.Identifier(new)
    )
    for attempt in range(_RENAME_ATTEMPTS):
        terminate_sessions(db, old)
        try:
            db.execute(statement)
            return
        except pg_errors.ObjectInUse as exc:
            if attempt == _RENAME_ATTEMPTS - 1:
                raise _fail(f"renaming {old!r} (sessions keep reconnecting)", exc) from exc
            time.sleep(_RENAME_PAUSE)
        except psycopg.Error as exc:
            raise _fail(f"renaming the database {old!r} to {new!r}", exc) from exc


@dataclass(frozen=True, slots=True)
class CutOver:
    """The three names of a database swap; enough to undo it from any process."""

    live: str
    restored: str
    checkpoint: str

    def to_json(self) -> dict[str, str]:
        return {"live": self.live, "restored": self.restored, "checkpoint": self.checkpoint}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CutOver:
        return cls(str(data["live"]), str(data["restored"]), str(data["checkpoint"]))


def cut_over(server: ConnInfo, record: CutOver) -> None:
    """Live becomes the checkpoint, the restored database becomes live; undone on failure."""
    try:
        with maintenance(server) as db:
            set_allow_connections(db, record.live, False)
            rename_database(db, record.live, record.checkpoint)
            rename_database(db, record.restored, record.live)
            set_allow_connections(db, record.checkpoint, True)
    except BaseException:
        undo_cut_over(server, record)
        raise


def undo_cut_over(server: ConnInfo, record: CutOver) -> None:
    """Put the checkpoint back under the live name; the restored copy gets its staging name
    back (to be dropped). Idempotent: it reads which databases exist."""
    try:
        with maintenance(server) as db:
            if database_exists(db, record.checkpoint):
                if database_exists(db, record.live):
                    set_allow_connections(db, record.live, False)
                    rename_database(db, record.live, record.restored)
                rename_database(db, record.checkpoint, record.live)
            if database_exists(db, record.live):
                set_allow_connections(db, record.live, True)
    except psycopg.Error as exc:
        raise _fail("putting the live database back", exc) from exc


def swap_refusal(server: ConnInfo, live: str) -> str | None:
    """Why this role cannot restore by rename (None when it can)."""
    with maintenance(server) as db:
        role = db.execute(
            "SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        owner = db.execute(
            "SELECT pg_has_role(current_user, datdba, 'MEMBER') FROM pg_database"
            " WHERE datname = %s",
            (live,),
        ).fetchone()
    superuser, createdb = (bool(role[0]), bool(role[1])) if role else (False, False)
    if superuser:
        return None
    if not createdb:
        return "the platform role may not create databases (no CREATEDB)"
    if owner is None or not owner[0]:
        return f"the platform role does not own the database {live!r}"
    return None


# --- counting ------------------------------------------------------------------------------


def count_rows(conn: ConnInfo, tables: Iterable[TableRef] | None = None) -> dict[str, int]:
    """Exact row counts of ``tables`` (default: every user table) keyed ``schema.table``."""
    with connect(conn) as db:
        chosen = list(tables) if tables is not None else user_tables(db)
        counts: dict[str, int] = {}
        for table in chosen:
            row = db.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident())).fetchone()
            counts[table.qualified] = int(row[0]) if row else 0
    return counts


def count_rows_and_analyze(conn: ConnInfo) -> dict[str, int]:
    """Exact row counts of every user table, while ``ANALYZE`` gathers the database's planner
    statistics on a second connection.

    ``pg_restore`` leaves a restored database without statistics, so its first queries are
    planned blind until autovacuum comes by, and autovacuum then competes with whatever runs
    (at scale 10 a study restore right after a full restore took 12.9 to 15.2 s, and 10.5
    to 12.0 s once the database was analyzed). ``ANALYZE`` reads a sample of each table
    (0.8 s at scale 10) beside the counts, which read every row anyway.
    """
    failure: list[BaseException] = []

    def analyze() -> None:
        try:
            with connect(conn) as db:
                db.execute("ANALYZE")
        except BaseException as exc:  # reported by the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=analyze, name="clinvault-analyze", daemon=True)
    thread.start()
    try:
        counts = count_rows(conn)
    finally:
        thread.join()
    if failure:
        raise DatabaseError(
            f"gathering planner statistics on the restored database failed: {failure[0]}"
        ) from failure[0]
    return counts


def compare_counts(expected: Mapping[str, int], actual: Mapping[str, int]) -> list[str]:
    """Problems where ``actual`` differs from the manifest's ``expected`` counts."""
    problems = []
    for table, count in sorted(expected.items()):
        found = actual.get(table)
        if found is None:
            problems.append(f"table {table} is missing")
        elif found != count:
            problems.append(f"{table}: {found} rows, the backup has {count}")
    return problems
