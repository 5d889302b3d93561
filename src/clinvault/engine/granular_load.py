"""Loading one scope's rows out of a staged dump into temporary tables of a live session.

Restoring the whole dump somewhere to pick one study out of it costs about what a full
restore costs (measured at scale 10: 20 s to load the scope tables' data, unindexed and
unlogged, into a scratch database, against 36 s for a whole ``pg_restore -j2``). Instead,
``pg_restore --file=-`` replays only the ``TABLE DATA`` entries of the scope tables as COPY
text (2.6 s for 1 GB), parents before children, and every row is kept or dropped on the
way by following the scope's foreign-key path one hop up: a subject is kept when its
``study_id`` is the study's key, a visit when its ``subject_id`` is a kept subject's ``id``,
and so on. Kept rows flow straight into ``COPY ... FROM STDIN`` of a session temporary
table in the live database; nothing of the platform changes, and no scratch database is
needed (so none can be left behind).

Keys are matched on their COPY text where that is exact (integers, uuids, dates: one
canonical text per value, nothing to escape). Any other key type is matched by the server
instead: the table's rows go to a temporary table whole and are filtered with SQL
equality against the parent's kept rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from clinvault.engine.granular_schema import (
    ScopeSchema,
    TableFacts,
    column_list,
    raw_comparable,
    raw_key_type,
    temp_table,
)
from clinvault.engine.granular_script import (
    NO_SERVER,
    KeyValue,
    RestoreScript,
    TocEntry,
    find_table_data,
    keep_all,
    keep_by_key,
    keep_matching,
    key_value,
    parse_copy_header,
    write_list,
)
from clinvault.engine.pgtools import PgTool, open_tool
from clinvault.engine.scope import ForeignKey, TableRef
from clinvault.errors import FormatError, InvalidInputError


@dataclass(frozen=True, slots=True)
class StagedTable:
    """The backup's rows of one scope table, in ``pg_temp.<temp>`` of the loading session."""

    table: TableRef
    temp: str
    columns: tuple[str, ...]
    rows: int

    @property
    def ident(self) -> sql.Identifier:
        return temp_table(self.temp)


@dataclass(frozen=True, slots=True)
class StagedScope:
    schema: ScopeSchema
    keys: tuple[str, ...]
    tables: dict[TableRef, StagedTable]

    def counts(self) -> dict[str, int]:
        return {t.qualified: s.rows for t, s in sorted(self.tables.items())}


@dataclass
class _Step:
    """How one table's rows are chosen: by raw key text in Python, or by the server."""

    facts: TableFacts
    entry: TocEntry
    hop: ForeignKey | None
    raw: bool
    temp: str
    collect: list[tuple[str, ...]] = field(default_factory=list)


class ScopeLoader:
    """Stages the backup's rows of the given root keys into temporary tables of ``db``."""

    def __init__(
        self, db: psycopg.Connection[Any], schema: ScopeSchema, keys: Sequence[str]
    ) -> None:
        self._db = db
        self._schema = schema
        self._keys = tuple(keys)
        self._found: dict[tuple[TableRef, tuple[str, ...]], set[KeyValue]] = {}
        self._staged: dict[TableRef, StagedTable] = {}

    def load(
        self,
        tool: PgTool,
        dump: Path,
        toc_lines: Sequence[str],
        *,
        on_bytes: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
        timeout: float = 6 * 3600.0,
    ) -> StagedScope:
        steps = self._plan(toc_lines)
        listing = dump.with_name(dump.name + ".granular-list")
        args = ["--file=-", f"--use-list={listing}", str(dump)]
        try:
            for wave in self._waves(steps, toc_lines):
                write_list(listing, [step.entry.line for step in wave])
                with open_tool(
                    tool, args, NO_SERVER, read_stdout=True, timeout=timeout, cancel=cancel
                ) as proc:
                    script = RestoreScript(proc.stdout, on_bytes, cancel)
                    try:
                        for step in wave:
                            self._stage(step, script)
                        script.drain()
                    finally:
                        script.close()
        finally:
            listing.unlink(missing_ok=True)
        for staged in self._staged.values():
            self._db.execute(sql.SQL("ANALYZE {}").format(staged.ident))
        return StagedScope(self._schema, self._keys, dict(self._staged))

    def _plan(self, toc_lines: Sequence[str]) -> list[_Step]:
        model = self._schema.model
        order = sorted(model.tables, key=lambda t: (len(model.paths[t]), t))
        steps = []
        for index, table in enumerate(order):
            facts = self._schema.facts(table)
            hops = model.paths[table]
            hop = hops[0] if hops else None
            steps.append(
                _Step(
                    facts,
                    find_table_data(toc_lines, table),
                    hop,
                    self._is_raw(facts, hop),
                    f"cv_granular_{index}",
                )
            )
        by_table = {s.facts.table: s for s in steps}
        for step in steps:
            if step.raw and step.hop is not None and not self._to_root_key(step.hop):
                by_table[step.hop.parent].collect.append(step.hop.parent_columns)
        return steps

    def _waves(self, steps: list[_Step], toc_lines: Sequence[str]) -> list[list[_Step]]:
        """The steps in passes over the dump, each in the dump's own order.

        A dump written to a pipe has no offsets: ``pg_restore`` finds an entry by reading on
        from where it is, and an entry asked for out of order means reading from the start
        again (3.3 s against 0.6 s for a study's tables at scale 10). So each pass takes,
        in dump order, every table whose parent is staged by then (earlier in the pass or
        in an earlier pass); a child that comes before its parent in the dump waits for the
        next pass.
        """
        position = {line: index for index, line in enumerate(toc_lines)}
        pending = sorted(steps, key=lambda step: position.get(step.entry.line, -1))
        staged: set[TableRef] = set()
        waves: list[list[_Step]] = []
        while pending:
            wave, later = [], []
            for step in pending:
                parent = self._parent(step)
                if parent is None or parent in staged:
                    wave.append(step)
                    staged.add(step.facts.table)
                else:
                    later.append(step)
            if not wave:  # a parent outside the scope's steps: cannot happen for a tree
                raise FormatError("the scope's tables cannot be ordered parents first")
            waves.append(wave)
            pending = later
        return waves

    def _parent(self, step: _Step) -> TableRef | None:
        """The table whose staged rows this step filters by, if any."""
        if step.hop is None or self._to_root_key(step.hop):
            return None
        return step.hop.parent

    def _is_raw(self, facts: TableFacts, hop: ForeignKey | None) -> bool:
        model = self._schema.model
        if hop is None:
            return raw_key_type(facts, model.key_column)
        parent = self._schema.facts(hop.parent)
        return raw_comparable(facts, hop.child_columns, parent, hop.parent_columns)

    def _to_root_key(self, hop: ForeignKey) -> bool:
        """A hop onto the root's key matches the requested keys directly, as the scope
        model's queries do (so rows count the same as in the manifest)."""
        model = self._schema.model
        return hop.parent == model.root and hop.parent_columns == (model.key_column,)

    def _wanted(self, step: _Step) -> tuple[tuple[str, ...], set[KeyValue]]:
        model = self._schema.model
        if step.hop is None:
            return (model.key_column,), {k.encode() for k in self._keys}
        if self._to_root_key(step.hop):
            return step.hop.child_columns, {k.encode() for k in self._keys}
        return step.hop.child_columns, self._found[(step.hop.parent, step.hop.parent_columns)]

    def _stage(self, step: _Step, script: RestoreScript) -> None:
        table = step.facts.table
        names, columns = parse_copy_header(script.next_header())
        if names[-2:] != [table.schema, table.name]:
            raise FormatError(f"pg_restore gave data of {'.'.join(names)} instead of {table}")
        _check_columns(step.facts, columns)
        if script.encoding and script.encoding != _client_encoding(self._db):
            # Rows pass through as bytes: the live session must read them in the dump's encoding.
            self._db.execute("SELECT set_config('client_encoding', %s, false)", (script.encoding,))
        target = step.temp if step.raw else f"{step.temp}_all"
        self._db.execute(
            sql.SQL("CREATE TEMP TABLE {} AS SELECT {} FROM ONLY {} WITH NO DATA").format(
                temp_table(target), column_list(columns), table.ident()
            )
        )
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
            temp_table(target), column_list(columns)
        )
        with self._db.cursor() as cur, cur.copy(copy_sql) as copy:
            if step.raw:
                rows = self._copy_raw(step, columns, script, copy.write)
            else:
                rows = keep_all(script, copy.write)
        if not step.raw:
            rows = self._filter_on_server(step, columns)
        self._staged[table] = StagedTable(table, step.temp, tuple(columns), rows)

    def _copy_raw(
        self, step: _Step, columns: list[str], script: RestoreScript, write: Callable[[bytes], None]
    ) -> int:
        """Keep the lines whose hop key is among the parent's kept keys; remember the keys
        the children of this table will look for."""
        key_cols, wanted = self._wanted(step)
        key_pos = [columns.index(c) for c in key_cols]
        collectors = [
            (
                [columns.index(c) for c in cols],
                self._found.setdefault((step.facts.table, cols), set()),
            )
            for cols in step.collect
        ]
        if len(key_pos) == 1 and not collectors:
            return keep_by_key(script, key_pos[0], wanted, write)
        last = max([*key_pos, *(p for pos, _ in collectors for p in pos)])
        return keep_matching(script, key_pos, last + 1, wanted, collectors, write)

    def _filter_on_server(self, step: _Step, columns: list[str]) -> int:
        """Keep, with SQL equality, the rows whose hop key matches a kept parent row."""
        source = temp_table(f"{step.temp}_all")
        condition, params = self._server_condition(step)
        with self._db.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE TEMP TABLE {} AS SELECT * FROM {} AS r WHERE {}").format(
                    temp_table(step.temp), source, condition
                ),
                params,
            )
            rows = cur.rowcount
            cur.execute(sql.SQL("DROP TABLE {}").format(source))
        for cols in step.collect:
            self._found[(step.facts.table, cols)] = self._distinct_keys(step.temp, cols)
        return rows

    def _server_condition(self, step: _Step) -> tuple[sql.Composable, tuple[Any, ...]]:
        model = self._schema.model
        if step.hop is None or self._to_root_key(step.hop):
            column = model.key_column if step.hop is None else step.hop.child_columns[0]
            return (
                sql.SQL("(r.{})::text = ANY(%s)").format(sql.Identifier(column)),
                (list(self._keys),),
            )
        parent = self._staged[step.hop.parent]
        match = sql.SQL(" AND ").join(
            sql.SQL("p.{} = r.{}").format(sql.Identifier(p), sql.Identifier(c))
            for c, p in zip(step.hop.child_columns, step.hop.parent_columns, strict=True)
        )
        return (sql.SQL("EXISTS (SELECT 1 FROM {} AS p WHERE {})").format(parent.ident, match), ())

    def _distinct_keys(self, temp: str, cols: tuple[str, ...]) -> set[KeyValue]:
        found: set[KeyValue] = set()
        query = sql.SQL("COPY (SELECT DISTINCT {} FROM {}) TO STDOUT").format(
            column_list(cols), temp_table(temp)
        )
        with self._db.cursor() as cur, cur.copy(query) as copy:
            text = b"".join(bytes(chunk) for chunk in copy)
        for line in text.splitlines():
            value = key_value(line.split(b"\t"), list(range(len(cols))))
            if value is not None:
                found.add(value)
        return found


def _check_columns(facts: TableFacts, dumped: list[str]) -> None:
    if set(dumped) == set(facts.columns):
        return
    only_backup = sorted(set(dumped) - set(facts.columns))
    only_live = sorted(set(facts.columns) - set(dumped))
    raise InvalidInputError(
        f"{facts.table} differs between the backup and the live database (columns only in "
        f"the backup: {only_backup or 'none'}; only live: {only_live or 'none'}): a granular "
        "restore needs the same table definitions (restore the whole database instead)"
    )


def _client_encoding(db: psycopg.Connection[Any]) -> str | None:
    value = db.info.parameter_status("client_encoding")
    return value.decode() if isinstance(value, bytes) else value
