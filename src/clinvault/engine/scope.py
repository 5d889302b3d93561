"""Which rows belong to a study or an organization, discovered from foreign keys.

A scope has a root table (``studies``, ``organizations``) keyed by its primary key. Every
table that reaches the root through a chain of foreign keys (child column -> parent key) is
part of the scope, along its shortest chain. Links the schema does not declare (a column that
names a study by convention) are added from configuration as extra edges; tables can be left
out. The same model serves the per-scope row counts of a backup and granular restore.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

_ROWS = "clinvault_rows"


@dataclass(frozen=True, slots=True, order=True)
class TableRef:
    schema: str
    name: str

    @classmethod
    def parse(cls, text: str, default_schema: str = "public") -> TableRef:
        schema, _, name = text.rpartition(".")
        return cls(schema or default_schema, name)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return self.qualified


@dataclass(frozen=True, slots=True)
class ForeignKey:
    """``child(child_columns)`` references ``parent(parent_columns)``."""

    name: str
    child: TableRef
    child_columns: tuple[str, ...]
    parent: TableRef
    parent_columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ScopeModel:
    """How to find the rows of one kind of scope in every table that belongs to it."""

    kind: str
    root: TableRef
    key_column: str
    label_column: str | None
    paths: dict[TableRef, tuple[ForeignKey, ...]] = field(default_factory=dict)

    @property
    def tables(self) -> list[TableRef]:
        return sorted(self.paths)

    def _from_clause(
        self, table: TableRef, *, counted: bool = False
    ) -> tuple[sql.Composable, sql.Composable]:
        """FROM/JOIN clause for ``table`` and the expression giving the root key of a row.

        ``counted``: ``t0`` is ``table`` grouped by the columns of its first link, with the
        rows of each group in a column named ``_ROWS``.
        """
        hops = self.paths[table]
        parts: list[sql.Composable] = [sql.SQL("{} AS t0").format(table.ident())]
        if counted and hops:
            columns = sql.SQL(", ").join(sql.Identifier(c) for c in hops[0].child_columns)
            parts = [
                sql.SQL(
                    "(SELECT {cols}, count(*) AS {rows} FROM {table} GROUP BY {cols}) AS t0"
                ).format(cols=columns, rows=sql.Identifier(_ROWS), table=table.ident())
            ]
        if not hops:
            return sql.SQL(" ").join(parts), sql.SQL("t0.{}").format(
                sql.Identifier(self.key_column)
            )
        for index, fk in enumerate(hops[:-1], start=1):
            parts.append(_join(fk, f"t{index - 1}", f"t{index}"))
        last = hops[-1]
        last_alias = f"t{len(hops) - 1}"
        if last.parent_columns == (self.key_column,):
            key = sql.SQL("{}.{}").format(
                sql.Identifier(last_alias), sql.Identifier(last.child_columns[0])
            )
        else:
            parts.append(_join(last, last_alias, "r"))
            key = sql.SQL("r.{}").format(sql.Identifier(self.key_column))
        return sql.SQL(" ").join(parts), key

    def count_query(self, table: TableRef) -> sql.Composed:
        """Rows of ``table`` per root key (as text), for every root key present.

        A table that reaches the root through joins is first counted per value of its own
        link column, and only those counts travel through the joins: on a large table that
        is less than half the work of joining every row (and the same sums, duplicates of a
        parent key included).
        """
        hops = self.paths[table]
        if len(hops) < 2 and (not hops or hops[0].parent_columns == (self.key_column,)):
            from_clause, key = self._from_clause(table)
            return sql.SQL(
                "SELECT ({key})::text, count(*) FROM {src} WHERE {key} IS NOT NULL GROUP BY 1"
            ).format(key=key, src=from_clause)
        from_clause, key = self._from_clause(table, counted=True)
        return sql.SQL(
            "SELECT ({key})::text, sum(t0.{rows})::bigint FROM {src} "
            "WHERE {key} IS NOT NULL GROUP BY 1"
        ).format(key=key, src=from_clause, rows=sql.Identifier(_ROWS))

    def key_pairs_query(self, table: TableRef, column: str) -> sql.Composed:
        """``(table.column, root key)`` for every row of ``table`` in any scope, as text."""
        from_clause, key = self._from_clause(table)
        return sql.SQL(
            "SELECT (t0.{col})::text, ({key})::text FROM {src} WHERE {key} IS NOT NULL"
        ).format(col=sql.Identifier(column), key=key, src=from_clause)

    def passes_through(self, table: TableRef, inner: ScopeModel) -> bool:
        """True when ``table`` reaches this root only by way of ``inner``'s root.

        Then its rows per key of this scope are sums of its rows per key of ``inner``, and
        need no query of their own.
        """
        if table not in self.paths or table not in inner.paths or inner.root not in self.paths:
            return False
        return self.paths[table] == inner.paths[table] + self.paths[inner.root]

    def select_query(self, table: TableRef, columns: Sequence[str] | None = None) -> sql.Composed:
        """The rows of ``table`` in scope; takes one parameter, a list of root keys as text."""
        from_clause, key = self._from_clause(table)
        cols: sql.Composable = (
            sql.SQL(", ").join(sql.SQL("t0.{}").format(sql.Identifier(c)) for c in columns)
            if columns
            else sql.SQL("t0.*")
        )
        return sql.SQL("SELECT {cols} FROM {src} WHERE ({key})::text = ANY(%s)").format(
            cols=cols, src=from_clause, key=key
        )

    def labels_query(self) -> sql.Composed:
        """Key and label of every root row."""
        label = (
            sql.Identifier(self.label_column)
            if self.label_column
            else sql.Identifier(self.key_column)
        )
        return sql.SQL("SELECT {key}::text, {label}::text FROM {root} ORDER BY 1").format(
            key=sql.Identifier(self.key_column), label=label, root=self.root.ident()
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-ready account of the model, kept in the manifest for inspection."""
        return {
            "root": self.root.qualified,
            "key_column": self.key_column,
            "label_column": self.label_column,
            "tables": {
                t.qualified: [
                    f"{fk.child.qualified}({','.join(fk.child_columns)})->{fk.parent.qualified}"
                    for fk in hops
                ]
                for t, hops in sorted(self.paths.items())
            },
        }


def _join(fk: ForeignKey, child_alias: str, parent_alias: str) -> sql.Composed:
    conditions = sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}.{}").format(
            sql.Identifier(child_alias),
            sql.Identifier(c),
            sql.Identifier(parent_alias),
            sql.Identifier(p),
        )
        for c, p in zip(fk.child_columns, fk.parent_columns, strict=True)
    )
    return sql.SQL("JOIN {} AS {} ON {}").format(
        fk.parent.ident(), sql.Identifier(parent_alias), conditions
    )


def build_scope(
    kind: str,
    root: TableRef,
    key_column: str,
    label_column: str | None,
    foreign_keys: Iterable[ForeignKey],
    exclude: Iterable[TableRef] = (),
) -> ScopeModel:
    """Shortest foreign-key chain from every table that reaches ``root``."""
    excluded = set(exclude)
    children: dict[TableRef, list[ForeignKey]] = {}
    for fk in sorted(foreign_keys, key=lambda f: (f.child, f.name)):
        if fk.child != fk.parent and fk.child not in excluded:
            children.setdefault(fk.parent, []).append(fk)
    paths: dict[TableRef, tuple[ForeignKey, ...]] = {root: ()}
    queue: deque[TableRef] = deque([root])
    while queue:
        parent = queue.popleft()
        for fk in children.get(parent, []):
            if fk.child not in paths:
                paths[fk.child] = (fk, *paths[parent])
                queue.append(fk.child)
    return ScopeModel(kind, root, key_column, label_column, paths)
