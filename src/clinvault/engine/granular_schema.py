"""What granular restore needs to know about the live tables of a scope.

Rows of one study or organization are matched, moved and compared by their columns and
primary keys, and the referential checks follow every declared foreign key that touches a
scope table. These facts are read once from the live database (the backup's tables must
have the same definitions, which loading checks) and shared by loading and applying.
"""

from __future__ import annotations

from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from typing import Any

import psycopg
from psycopg import sql

from clinvault.engine.pginspect import foreign_keys, primary_key
from clinvault.engine.scope import ForeignKey, ScopeModel, TableRef
from clinvault.errors import InvalidInputError

# Type families whose text form is canonical and needs no COPY escaping: two values are
# equal exactly when their COPY text is equal, so keys can be matched as raw bytes.
_RAW_KEY_FAMILIES: dict[int, str] = {
    20: "int",  # int8
    21: "int",  # int2
    23: "int",  # int4
    26: "oid",
    16: "bool",
    1082: "date",
    2950: "uuid",
}

_COLUMNS = """
SELECT a.attname, a.attgenerated <> '', coalesce(nullif(t.typbasetype, 0), a.atttypid)::int
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


@dataclass(frozen=True, slots=True)
class TableFacts:
    """One live table: insertable columns in order, primary key, and column base types."""

    table: TableRef
    columns: tuple[str, ...]
    key: tuple[str, ...]
    types: dict[str, int]

    @property
    def has_key(self) -> bool:
        return bool(self.key)

    @property
    def row_id(self) -> tuple[str, ...]:
        """Columns that identify a row: the primary key, else the physical ``ctid``."""
        return self.key or ("ctid",)


@dataclass(frozen=True, slots=True)
class ScopeSchema:
    """The scope model plus the facts of its tables and the foreign keys around them."""

    model: ScopeModel
    tables: dict[TableRef, TableFacts]
    foreign_keys: tuple[ForeignKey, ...]

    def facts(self, table: TableRef) -> TableFacts:
        return self.tables[table]

    def inbound(self) -> list[ForeignKey]:
        """Declared foreign keys whose parent is a scope table (who could lose a parent)."""
        return [fk for fk in self.foreign_keys if fk.parent in self.tables]

    def outbound(self) -> list[ForeignKey]:
        """Declared foreign keys whose child is a scope table (whose parents must exist)."""
        return [fk for fk in self.foreign_keys if fk.child in self.tables]

    def parents_first(self) -> list[TableRef]:
        """Scope tables ordered so that a table comes after the tables it references.

        Follows the declared keys among scope tables and the scope paths; where they form
        a cycle, the order of path lengths (root first) is the best available.
        """
        by_depth = sorted(self.tables, key=lambda t: (len(self.model.paths[t]), t))
        sorter: TopologicalSorter[TableRef] = TopologicalSorter()
        for table in by_depth:
            sorter.add(table)
        for fk in [*self.outbound(), *(h[0] for h in self.model.paths.values() if h)]:
            if fk.parent in self.tables and fk.child in self.tables and fk.child != fk.parent:
                sorter.add(fk.child, fk.parent)
        try:
            return list(sorter.static_order())
        except CycleError:
            return by_depth


def read_scope_schema(db: psycopg.Connection[Any], model: ScopeModel) -> ScopeSchema:
    """Facts of every table of ``model`` and the declared foreign keys touching them."""
    tables = {table: table_facts(db, table) for table in model.tables}
    fks = tuple(fk for fk in foreign_keys(db) if fk.child in tables or fk.parent in tables)
    return ScopeSchema(model, tables, fks)


def table_facts(db: psycopg.Connection[Any], table: TableRef) -> TableFacts:
    regclass = sql.Identifier(table.schema, table.name).as_string(db)
    rows = db.execute(_COLUMNS, (regclass,)).fetchall()
    if not rows:
        raise InvalidInputError(f"table {table} has no columns in the live database")
    columns = tuple(str(name) for name, generated, _ in rows if not generated)
    types = {str(name): int(base) for name, _, base in rows}
    return TableFacts(table, columns, tuple(primary_key(db, table)), types)


def raw_comparable(
    child: TableFacts, child_cols: tuple[str, ...], parent: TableFacts, parent_cols: tuple[str, ...]
) -> bool:
    """True when child and parent key columns can be matched by their COPY text alone."""
    for c, p in zip(child_cols, parent_cols, strict=True):
        family = _RAW_KEY_FAMILIES.get(child.types.get(c, 0))
        if family is None or family != _RAW_KEY_FAMILIES.get(parent.types.get(p, 0)):
            return False
    return True


def raw_key_type(facts: TableFacts, column: str) -> bool:
    """True when ``column``'s COPY text equals its ``::text`` form for every value."""
    return facts.types.get(column, 0) in _RAW_KEY_FAMILIES


def column_list(columns: tuple[str, ...] | list[str], alias: str | None = None) -> sql.Composed:
    """``a, b`` or ``x.a, x.b`` with every name quoted."""
    if alias is None:
        return sql.SQL(", ").join(map(sql.Identifier, columns))
    return sql.SQL(", ").join(sql.Identifier(alias, c) for c in columns)


def temp_table(name: str) -> sql.Identifier:
    """A table of this session's temporary schema."""
    return sql.Identifier("pg_temp", name)
