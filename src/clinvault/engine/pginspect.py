"""Reading facts from a platform database: server identity, tables, keys, row counts.

All reads of a backup happen inside one exported snapshot (:class:`SnapshotSession`) that
``pg_dump --snapshot`` also uses, so the counts recorded in the manifest describe exactly the
rows in the dump.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from clinvault.engine.pgconn import ConnInfo
from clinvault.engine.scope import ForeignKey, ScopeModel, TableRef, build_scope
from clinvault.errors import DatabaseError

_USER_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

_FOREIGN_KEYS = """
SELECT con.conname, cn.nspname, cc.relname, pn.nspname, pc.relname,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(attnum, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.i),
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(attnum, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.i)
FROM pg_constraint con
JOIN pg_class cc ON cc.oid = con.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
JOIN pg_class pc ON pc.oid = con.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE con.contype = 'f'
ORDER BY 2, 3, 1
"""

_PRIMARY_KEY = """
SELECT a.attname FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = %s::regclass AND i.indisprimary
ORDER BY array_position(i.indkey::int2[], a.attnum)
"""


@dataclass(frozen=True, slots=True)
class ServerFacts:
    version: str
    version_num: int
    database: str
    encoding: str
    system_identifier: str | None

    @property
    def major(self) -> int:
        return self.version_num // 10000

    def to_json(self) -> dict[str, Any]:
        return {
            "server_version": self.version,
            "server_version_num": self.version_num,
            "database": self.database,
            "encoding": self.encoding,
            "system_identifier": self.system_identifier,
        }


def connect(conn: ConnInfo, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """Open a connection, turning failures into a clear ``DatabaseError`` without secrets."""
    try:
        return psycopg.connect(**conn.psycopg_kwargs(), autocommit=autocommit, connect_timeout=30)
    except psycopg.Error as exc:
        message = str(exc).replace(conn.password, "********") if conn.password else str(exc)
        raise DatabaseError(f"cannot connect to {conn}: {message.strip()}") from exc


def server_facts(db: psycopg.Connection[Any]) -> ServerFacts:
    row = db.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int,"
        " current_database(), pg_encoding_to_char(encoding) FROM pg_database"
        " WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    system_id: str | None
    try:
        with db.transaction():
            found = db.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
        system_id = found[0] if found else None
    except psycopg.Error:
        system_id = None
    return ServerFacts(str(row[0]), int(row[1]), str(row[2]), str(row[3]), system_id)


def user_tables(db: psycopg.Connection[Any]) -> list[TableRef]:
    return [TableRef(s, n) for s, n in db.execute(_USER_TABLES).fetchall()]


def foreign_keys(db: psycopg.Connection[Any]) -> list[ForeignKey]:
    return [
        ForeignKey(name, TableRef(cs, cn), tuple(ccols), TableRef(ps, pn), tuple(pcols))
        for name, cs, cn, ps, pn, ccols, pcols in db.execute(_FOREIGN_KEYS).fetchall()
    ]


def primary_key(db: psycopg.Connection[Any], table: TableRef) -> list[str]:
    regclass = sql.Identifier(table.schema, table.name).as_string(db)
    return [r[0] for r in db.execute(_PRIMARY_KEY, (regclass,)).fetchall()]


def column_names(db: psycopg.Connection[Any], table: TableRef) -> list[str]:
    rows = db.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
        (sql.Identifier(table.schema, table.name).as_string(db),),
    ).fetchall()
    return [r[0] for r in rows]


@dataclass(frozen=True, slots=True)
class ScopeRoot:
    """Configuration of one kind of scope: its root table and extra links."""

    kind: str
    table: TableRef
    label_column: str | None = "code"


def discover_scope(
    db: psycopg.Connection[Any],
    root: ScopeRoot,
    extra_links: Iterable[ForeignKey] = (),
    exclude: Iterable[TableRef] = (),
) -> ScopeModel | None:
    """The scope model for ``root``, or None when the database has no usable root table."""
    tables = set(user_tables(db))
    if root.table not in tables:
        return None
    key = primary_key(db, root.table)
    if len(key) != 1:
        return None
    label = root.label_column if root.label_column in column_names(db, root.table) else None
    fks = [*foreign_keys(db), *extra_links]
    return build_scope(root.kind, root.table, key[0], label, fks, exclude)


class SnapshotSession:
    """A repeatable-read, read-only transaction whose snapshot is exported for ``pg_dump``."""

    def __init__(self, db: psycopg.Connection[Any]) -> None:
        self._db = db
        self.snapshot_id = ""

    @classmethod
    @contextmanager
    def open(cls, conn: ConnInfo) -> Iterator[SnapshotSession]:
        with connect(conn) as db:
            db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            session = cls(db)
            row = db.execute("SELECT pg_export_snapshot()").fetchone()
            assert row is not None
            session.snapshot_id = str(row[0])
            try:
                yield session
            finally:
                if not db.closed:
                    db.execute("ROLLBACK")

    @property
    def connection(self) -> psycopg.Connection[Any]:
        return self._db

    def table_counts(self, tables: Iterable[TableRef]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for table in tables:
            row = self._db.execute(
                sql.SQL("SELECT count(*) FROM {}").format(table.ident())
            ).fetchone()
            counts[table.qualified] = int(row[0]) if row else 0
        return counts

    def scope_counts(
        self,
        model: ScopeModel,
        inner: tuple[ScopeModel, dict[str, dict[str, Any]]] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Per root key: its label and the rows each scope table holds for it.

        With ``inner`` (a nested scope and its counts, e.g. studies within organizations),
        tables that reach this root only through the inner root are summed from the inner
        counts instead of scanned again: on a large database that halves the work.
        """
        result: dict[str, dict[str, Any]] = {
            key: {"label": label, "tables": {}}
            for key, label in self._db.execute(model.labels_query())
        }
        derived = [t for t in model.tables if inner and model.passes_through(t, inner[0])]
        for table in model.tables:
            if table in derived:
                continue
            for key, count in self._db.execute(model.count_query(table)):
                entry = result.setdefault(key, {"label": None, "tables": {}})
                entry["tables"][table.qualified] = int(count)
        if inner is not None and derived:
            self._sum_inner(model, inner, derived, result)
        return result

    def _sum_inner(
        self,
        model: ScopeModel,
        inner: tuple[ScopeModel, dict[str, dict[str, Any]]],
        tables: list[TableRef],
        result: dict[str, dict[str, Any]],
    ) -> None:
        inner_model, inner_counts = inner
        pairs = self._db.execute(model.key_pairs_query(inner_model.root, inner_model.key_column))
        owner = {str(inner_key): str(key) for inner_key, key in pairs}
        for inner_key, entry in inner_counts.items():
            key = owner.get(inner_key)
            if key is None:
                continue
            target = result.setdefault(key, {"label": None, "tables": {}})["tables"]
            for table in tables:
                rows = entry["tables"].get(table.qualified)
                if rows:
                    target[table.qualified] = target.get(table.qualified, 0) + rows
