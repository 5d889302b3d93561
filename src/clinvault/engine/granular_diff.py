"""Comparing a staged scope with the live database, inside one transaction.

Both the preview and the restore itself ask the same questions, so they share this code:
which live rows are in the scope now, which of them the backup does not have (they would be
removed), which backup rows are new, changed or belong to another scope live, which rows
outside the scope reference a row that would be removed, and, after applying, whether every
restored row's parents exist and the scope's counts are the manifest's.

Everything is computed by the server over the staged temporary tables; the sets that are
used more than once (the live scope's row ids, the rows to remove) are materialized as
temporary tables that vanish with the transaction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from clinvault.engine.granular_load import StagedScope, StagedTable
from clinvault.engine.granular_schema import TableFacts, column_list, temp_table
from clinvault.engine.scope import ForeignKey, TableRef

_TIMESTAMPS = (1114, 1184)  # timestamp, timestamptz
_CHANGE_STAMPS = ("updated_at", "created_at")


@dataclass(frozen=True, slots=True)
class TableChange:
    """What restoring one table of the scope does to it."""

    table: str
    live_rows: int
    backup_rows: int
    to_delete: int
    to_insert: int
    to_update: int
    moved: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BrokenReference:
    """Rows of ``table`` that would reference rows of ``references`` the restore removes."""

    constraint: str
    table: str
    references: str
    rows: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"{self.rows} rows of {self.table} reference rows of {self.references} that the "
            f"backup does not have ({self.constraint})"
        )


def _row(columns: tuple[str, ...], alias: str) -> sql.Composed:
    return sql.SQL("({})").format(column_list(columns, alias))


def _equal(
    left: str, left_cols: tuple[str, ...], right: str, right_cols: tuple[str, ...]
) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, a), sql.Identifier(right, b))
        for a, b in zip(left_cols, right_cols, strict=True)
    )


def _live_ids(facts: TableFacts) -> sql.Composable:
    """The id columns kept of the live scope: the key, or the ``ctid`` as ``cv_ctid`` (a
    table may not have a column named like a system column)."""
    if facts.has_key:
        return column_list(facts.key, "q")
    return sql.SQL("q.ctid AS cv_ctid")


def _not_null(alias: str, columns: tuple[str, ...]) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{} IS NOT NULL").format(sql.Identifier(alias, c)) for c in columns
    )


class ScopeDiff:
    """The staged scope against the live rows, within the caller's open transaction."""

    def __init__(self, db: psycopg.Connection[Any], staged: StagedScope) -> None:
        self._db = db
        self._staged = staged
        self._schema = staged.schema
        names = sorted(staged.tables)
        self._live = {t: f"cv_live_{i}" for i, t in enumerate(names)}
        self._removed = {t: f"cv_removed_{i}" for i, t in enumerate(names)}

    @property
    def tables(self) -> list[TableRef]:
        return sorted(self._staged.tables)

    def _one(self, query: sql.Composed, params: Any = None) -> int:
        row = self._db.execute(query, params).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def materialize(self) -> None:
        """Record the live scope's row ids and the live rows the backup does not have."""
        for table in self.tables:
            facts = self._schema.facts(table)
            scope = self._schema.model.select_query(table, list(facts.row_id))
            self._db.execute(
                sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM ({}) AS q").format(
                    temp_table(self._live[table]), _live_ids(facts), scope
                ),
                (list(self._staged.keys),),
            )
            self._db.execute(self._removed_query(facts, self._staged.tables[table]))

    def _removed_query(self, facts: TableFacts, staged: StagedTable) -> sql.Composed:
        live = temp_table(self._live[facts.table])
        target = temp_table(self._removed[facts.table])
        if not facts.has_key:
            return sql.SQL(
                "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT d.ctid AS cv_ctid, d.* "
                "FROM ONLY {} AS d WHERE d.ctid = ANY(ARRAY(SELECT cv_ctid FROM {}))"
            ).format(target, facts.table.ident(), live)
        key = column_list(facts.key)
        return sql.SQL(
            "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT d.* FROM ONLY {} AS d "
            "WHERE {} IN (SELECT {} FROM {} EXCEPT SELECT {} FROM {})"
        ).format(target, facts.table.ident(), _row(facts.key, "d"), key, live, key, staged.ident)

    def removed_table(self, table: TableRef) -> sql.Identifier:
        return temp_table(self._removed[table])

    def changes(self, *, compare: bool = True) -> list[TableChange]:
        """Per table: rows to delete, insert, update and rows that moved scope.

        Without ``compare`` rows are not compared value by value and ``to_update`` is 0: a
        restore learns that number from its upsert, and comparing twice cost it a second
        pass over every staged row.
        """
        return [self._change(table, compare) for table in self.tables]

    def _change(self, table: TableRef, compare: bool) -> TableChange:
        facts = self._schema.facts(table)
        staged = self._staged.tables[table]
        live_rows = self._one(
            sql.SQL("SELECT count(*) FROM {}").format(temp_table(self._live[table]))
        )
        removed = self._one(sql.SQL("SELECT count(*) FROM {}").format(self.removed_table(table)))
        if not facts.has_key:
            return TableChange(table.qualified, live_rows, staged.rows, removed, staged.rows, 0, 0)
        values = [c for c in staged.columns if c not in facts.key]
        differs = (
            sql.SQL("ROW({})::text IS DISTINCT FROM ROW({})::text").format(
                column_list(tuple(values), "d"), column_list(tuple(values), "s")
            )
            if values and compare
            else sql.SQL("false")
        )
        query = sql.SQL(
            "SELECT count(*) FILTER (WHERE d.{k} IS NULL), "
            "count(*) FILTER (WHERE d.{k} IS NOT NULL AND l.{k} IS NOT NULL AND {differs}), "
            "count(*) FILTER (WHERE d.{k} IS NOT NULL AND l.{k} IS NULL) "
            "FROM {stage} AS s LEFT JOIN ONLY {table} AS d ON {on_d} "
            "LEFT JOIN {live} AS l ON {on_l}"
        ).format(
            k=sql.Identifier(facts.key[0]),
            differs=differs,
            stage=staged.ident,
            table=table.ident(),
            on_d=_equal("d", facts.key, "s", facts.key),
            live=temp_table(self._live[table]),
            on_l=_equal("l", facts.key, "s", facts.key),
        )
        row = self._db.execute(query).fetchone()
        assert row is not None
        inserts, updates, moved = (int(v) for v in row)
        return TableChange(
            table.qualified, live_rows, staged.rows, removed, inserts, updates, moved
        )

    def broken_references(self, *, overwritten_ok: bool) -> list[BrokenReference]:
        """Rows that would keep pointing at a removed row (outside references that break).

        A row of a scope table that is itself removed does not count, nor, with
        ``overwritten_ok``, one the backup's version replaces (its new parents are checked
        after applying); with enforced foreign keys that row would cascade first, so it counts.
        """
        broken = []
        for fk in self._schema.inbound():
            rows = self._one(self._broken_query(fk, overwritten_ok=overwritten_ok))
            if rows:
                broken.append(
                    BrokenReference(fk.name, fk.child.qualified, fk.parent.qualified, rows)
                )
        return broken

    def _broken_query(self, fk: ForeignKey, *, overwritten_ok: bool) -> sql.Composed:
        parent_stage = self._staged.tables[fk.parent].ident
        pcols = column_list(fk.parent_columns)
        conditions: list[sql.Composable] = [
            sql.SQL("{} IN (SELECT {} FROM {} EXCEPT SELECT {} FROM {})").format(
                _row(fk.child_columns, "c"),
                pcols,
                self.removed_table(fk.parent),
                pcols,
                parent_stage,
            )
        ]
        if fk.child in self._staged.tables:
            conditions.extend(self._kept_outside(fk.child, overwritten_ok=overwritten_ok))
        return sql.SQL("SELECT count(*) FROM ONLY {} AS c WHERE {}").format(
            fk.child.ident(), sql.SQL(" AND ").join(conditions)
        )

    def _kept_outside(self, table: TableRef, *, overwritten_ok: bool) -> list[sql.Composable]:
        facts = self._schema.facts(table)
        if not facts.has_key:
            return [
                sql.SQL("c.ctid <> ALL(ARRAY(SELECT cv_ctid FROM {}))").format(
                    self.removed_table(table)
                )
            ]
        key, row = column_list(facts.key), _row(facts.key, "c")
        found: list[sql.Composable] = [
            sql.SQL("{} NOT IN (SELECT {} FROM {})").format(row, key, self.removed_table(table))
        ]
        if overwritten_ok:
            found.append(
                sql.SQL("{} NOT IN (SELECT {} FROM {})").format(
                    row, key, self._staged.tables[table].ident
                )
            )
        return found

    def missing_parents(self) -> list[BrokenReference]:
        """Restored rows whose parent row does not exist (checked after applying)."""
        missing = []
        for fk in self._schema.outbound():
            staged = self._staged.tables[fk.child]
            if not set(fk.child_columns) <= set(staged.columns):
                continue
            query = sql.SQL(
                "SELECT count(*) FROM {} AS c WHERE {} AND NOT EXISTS "
                "(SELECT 1 FROM ONLY {} AS p WHERE {})"
            ).format(
                staged.ident,
                _not_null("c", fk.child_columns),
                fk.parent.ident(),
                _equal("p", fk.parent_columns, "c", fk.child_columns),
            )
            rows = self._one(query)
            if rows:
                missing.append(
                    BrokenReference(fk.name, fk.child.qualified, fk.parent.qualified, rows)
                )
        return missing

    def parents_missing_after(self) -> list[BrokenReference]:
        """Before applying: backup rows whose parent will exist neither in the backup's
        scope nor among the live rows the restore keeps (the restore would refuse them)."""
        missing = []
        for fk in self._schema.outbound():
            staged = self._staged.tables[fk.child]
            if not set(fk.child_columns) <= set(staged.columns):
                continue
            kept = sql.SQL("EXISTS (SELECT 1 FROM ONLY {} AS p WHERE {}{})").format(
                fk.parent.ident(),
                _equal("p", fk.parent_columns, "c", fk.child_columns),
                self._not_removed(fk.parent),
            )
            found = [kept]
            if fk.parent in self._staged.tables:
                found.append(
                    sql.SQL("EXISTS (SELECT 1 FROM {} AS p WHERE {})").format(
                        self._staged.tables[fk.parent].ident,
                        _equal("p", fk.parent_columns, "c", fk.child_columns),
                    )
                )
            query = sql.SQL("SELECT count(*) FROM {} AS c WHERE {} AND NOT ({})").format(
                staged.ident, _not_null("c", fk.child_columns), sql.SQL(" OR ").join(found)
            )
            rows = self._one(query)
            if rows:
                missing.append(
                    BrokenReference(fk.name, fk.child.qualified, fk.parent.qualified, rows)
                )
        return missing

    def _not_removed(self, table: TableRef) -> sql.Composable:
        if table not in self._staged.tables:
            return sql.SQL("")
        facts = self._schema.facts(table)
        if not facts.has_key:
            return sql.SQL(" AND p.ctid <> ALL(ARRAY(SELECT cv_ctid FROM {}))").format(
                self.removed_table(table)
            )
        return sql.SQL(" AND {} NOT IN (SELECT {} FROM {})").format(
            _row(facts.key, "p"), column_list(facts.key), self.removed_table(table)
        )

    def dangling_unique_references(self) -> list[BrokenReference]:
        """Rows anywhere whose reference to a scope table's non-key unique columns now
        leads nowhere (an update may have changed such a value; key columns never change)."""
        dangling = []
        for fk in self._schema.inbound():
            if fk.parent_columns == self._schema.facts(fk.parent).key:
                continue
            query = sql.SQL(
                "SELECT count(*) FROM ONLY {} AS c WHERE {} AND NOT EXISTS "
                "(SELECT 1 FROM ONLY {} AS p WHERE {})"
            ).format(
                fk.child.ident(),
                _not_null("c", fk.child_columns),
                fk.parent.ident(),
                _equal("p", fk.parent_columns, "c", fk.child_columns),
            )
            rows = self._one(query)
            if rows:
                dangling.append(
                    BrokenReference(fk.name, fk.child.qualified, fk.parent.qualified, rows)
                )
        return dangling

    def live_counts(self) -> dict[str, int]:
        """Rows of the scope in each table, as the live database has them now."""
        counts = {}
        for table in self.tables:
            facts = self._schema.facts(table)
            scope = self._schema.model.select_query(table, list(facts.row_id))
            counts[table.qualified] = self._one(
                sql.SQL("SELECT count(*) FROM ({}) AS q").format(scope), (list(self._staged.keys),)
            )
        return counts

    def modified_since(self, when: datetime) -> dict[str, int]:
        """Live rows of the scope created or updated after ``when`` (their changes would be
        lost), for the tables that keep ``updated_at`` or ``created_at`` timestamps."""
        found = {}
        for table in self.tables:
            facts = self._schema.facts(table)
            stamps = [c for c in _CHANGE_STAMPS if facts.types.get(c) in _TIMESTAMPS]
            if not stamps:
                continue
            latest = sql.SQL("greatest({})").format(column_list(tuple(stamps), "d"))
            ids = column_list(facts.key or ("cv_ctid",))
            query = sql.SQL(
                "SELECT count(*) FROM ONLY {} AS d WHERE {} IN (SELECT {} FROM {}) AND {} > %s"
            ).format(
                table.ident(), _row(facts.row_id, "d"), ids, temp_table(self._live[table]), latest
            )
            found[table.qualified] = self._one(query, (when,))
        return found
