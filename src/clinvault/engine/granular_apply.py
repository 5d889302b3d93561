"""Putting a staged scope into the live database in one transaction, or previewing it.

The transaction locks the scope tables and the tables that reference them against writes
(reads go on), removes the live rows of the scope the backup does not have, and upserts
the backup's rows (``INSERT ... ON CONFLICT (key) DO UPDATE``, only where a row differs).
Before anything is written it refuses rows that belong to another scope live and rows
outside the scope that would be left pointing at a removed row; after writing, every
restored row's parents must exist and the scope's per-table counts must equal the
manifest's. Any failure rolls the whole transaction back.

Triggers. With ``session_replication_role = replica`` (superuser, or a role granted
``SET`` on it) neither user triggers nor foreign-key actions fire, so restored
``updated_at`` values stay as backed up and nothing cascades outside the scope. Without
that right the *ordered* mode runs instead: foreign keys stay enforced, removals go
children first and inserts parents first, and enabled user triggers are switched off for
the transaction where the role owns the table (a warning says when they could not be).
In ordered mode a kept row that was re-pointed after the backup to a row being removed
is refused as a broken reference, since removing its parent would cascade to it.

Sequences are only ever moved forward, to the largest restored value (``setval`` is not
transactional: a rolled-back restore may leave a sequence ahead, which is harmless).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import sql

from clinvault.engine.granular_diff import BrokenReference, ScopeDiff, TableChange
from clinvault.engine.granular_load import StagedScope, StagedTable
from clinvault.engine.granular_schema import TableFacts, column_list
from clinvault.engine.scope import TableRef
from clinvault.errors import ConflictError, DatabaseError, IntegrityError

Mode = Literal["auto", "replica", "ordered"]
_FIRES = {True: ("A", "R"), False: ("O", "A")}  # tgenabled values that fire, by replica mode
_ENABLE = {"O": "ENABLE TRIGGER", "A": "ENABLE ALWAYS TRIGGER", "R": "ENABLE REPLICA TRIGGER"}
_INTEGER_TYPES = (20, 21, 23)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    mode: str
    changes: list[TableChange]
    deleted: dict[str, int]
    inserted: dict[str, int]
    updated: dict[str, int]
    counts: dict[str, int]
    sequences: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "tables": [c.to_json() for c in self.changes],
            "deleted": self.deleted,
            "inserted": self.inserted,
            "updated": self.updated,
            "counts": self.counts,
            "sequences": self.sequences,
            "warnings": self.warnings,
        }


@dataclass(frozen=True, slots=True)
class ScopePreview:
    mode: str
    changes: list[TableChange]
    broken_references: list[BrokenReference]
    missing_parents: list[BrokenReference]
    modified_after_backup: dict[str, int]


@dataclass(frozen=True, slots=True)
class _Trigger:
    table: TableRef
    name: str
    enabled: str


def preview_scope(
    db: psycopg.Connection[Any], staged: StagedScope, backup_time: datetime
) -> ScopePreview:
    """What :func:`apply_scope` would do, computed in a transaction that is rolled back."""
    try:
        with db.transaction(force_rollback=True):
            # Not READ ONLY: the comparison needs temporary tables; live tables are only read.
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            replica = _can_use_replica(db)
            diff = ScopeDiff(db, staged)
            diff.materialize()
            return ScopePreview(
                "replica" if replica else "ordered",
                diff.changes(),
                diff.broken_references(overwritten_ok=replica),
                diff.parents_missing_after(),
                diff.modified_since(backup_time),
            )
    except psycopg.Error as exc:
        raise DatabaseError(f"previewing the restore failed: {_message(exc)}") from exc


def apply_scope(
    db: psycopg.Connection[Any],
    staged: StagedScope,
    expected_counts: Mapping[str, int],
    *,
    mode: Mode = "auto",
    lock_timeout: float = 30.0,
    before_commit: Callable[[int], None] | None = None,
) -> ApplyResult:
    """Replace the live rows of the staged scope with the backup's, all or nothing.

    ``before_commit`` gets the transaction id once every check has passed, just before the
    commit: whoever must act on the outcome (undo a file swap, or keep it) can record it and
    ask :func:`transaction_outcome` later, even if this process dies during the commit.
    """
    try:
        with db.transaction():
            result = _Apply(db, staged, expected_counts).run(mode, lock_timeout)
            if before_commit is not None:
                row = db.execute("SELECT pg_current_xact_id()::text").fetchone()
                assert row is not None
                before_commit(int(row[0]))
            return result
    except psycopg.errors.LockNotAvailable as exc:
        raise ConflictError(
            "the platform tables of this scope stayed locked by other sessions; nothing was "
            "changed, try again when they are idle"
        ) from exc
    except psycopg.errors.IntegrityError as exc:
        raise IntegrityError(f"the restore was rolled back: {_message(exc)}") from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"the restore was rolled back: {_message(exc)}") from exc


def transaction_outcome(db: psycopg.Connection[Any], xid: int) -> str | None:
    """``committed``, ``aborted`` or ``in progress`` for a transaction id of this server
    (None once it is too old for the server to know)."""
    row = db.execute("SELECT pg_xact_status(%s::text::xid8)", (str(xid),)).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def _message(exc: psycopg.Error) -> str:
    diag = exc.diag
    text = diag.message_primary or str(exc).strip()
    return f"{text} ({diag.message_detail})" if diag.message_detail else text


def _can_use_replica(db: psycopg.Connection[Any]) -> bool:
    """Switch this transaction to replica role if the server lets this role."""
    try:
        with db.transaction():
            db.execute("SET LOCAL session_replication_role = replica")
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


class _Apply:
    def __init__(
        self, db: psycopg.Connection[Any], staged: StagedScope, expected: Mapping[str, int]
    ) -> None:
        self._db = db
        self._staged = staged
        self._schema = staged.schema
        self._expected = expected
        self._diff = ScopeDiff(db, staged)
        self._warnings: list[str] = []

    def run(self, mode: Mode, lock_timeout: float) -> ApplyResult:
        self._lock(lock_timeout)
        replica = mode != "ordered" and _can_use_replica(self._db)
        if mode == "replica" and not replica:
            raise DatabaseError("this role may not set session_replication_role")
        self._diff.materialize()
        changes = self._diff.changes(compare=False)
        self._refuse_moved(changes)
        self._refuse(
            self._diff.broken_references(overwritten_ok=replica),
            "rows outside the scope would lose their parent",
        )
        triggers = self._disable_triggers(replica)
        order = self._schema.parents_first()
        deleted = {t.qualified: self._delete(t) for t in reversed(order)}
        written = {t.qualified: self._upsert(t) for t in order}
        self._enable_triggers(triggers)
        self._refuse(self._diff.missing_parents(), "restored rows would lack a parent")
        self._refuse(
            self._diff.dangling_unique_references(),
            "rows would reference values the restore changed",
        )
        counts = self._diff.live_counts()
        self._check_counts(counts)
        sequences = self._advance_sequences()
        return ApplyResult(
            "replica" if replica else "ordered",
            [replace(c, to_update=written[c.table][1]) for c in changes],
            deleted,
            {t: w[0] for t, w in written.items()},
            {t: w[1] for t, w in written.items()},
            counts,
            sequences,
            self._warnings,
        )

    def _lock(self, timeout: float) -> None:
        """Block writers of the scope tables and of the tables referencing them.

        The lock timeout stays for the whole transaction: a row another session holds
        ``FOR UPDATE`` for longer fails the restore instead of hanging it.
        """
        tables = set(self._schema.tables) | {fk.child for fk in self._schema.inbound()}
        self._db.execute(
            "SELECT set_config('lock_timeout', %s, true)", (f"{max(1, int(timeout * 1000))}ms",)
        )
        self._db.execute(
            sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(
                sql.SQL(", ").join(sql.SQL("ONLY {}").format(t.ident()) for t in sorted(tables))
            )
        )

    def _refuse_moved(self, changes: list[TableChange]) -> None:
        moved = [c for c in changes if c.moved]
        if moved:
            detail = "; ".join(f"{c.moved} rows of {c.table}" for c in moved)
            raise IntegrityError(
                f"the restore was refused: {detail} of this backup belong to another scope in "
                "the live database now; restoring them would change that scope"
            )

    @staticmethod
    def _refuse(problems: list[BrokenReference], what: str) -> None:
        if problems:
            detail = "; ".join(p.describe() for p in problems[:10])
            raise IntegrityError(f"the restore was rolled back: {what}: {detail}")

    def _disable_triggers(self, replica: bool) -> list[_Trigger]:
        """Switch off the user triggers that would fire in this mode, where allowed."""
        disabled = []
        for table in self._schema.tables:
            regclass = sql.Identifier(table.schema, table.name).as_string(self._db)
            found = self._db.execute(
                "SELECT t.tgname, t.tgenabled, pg_has_role(c.relowner, 'USAGE') "
                "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE t.tgrelid = %s::regclass AND NOT t.tgisinternal "
                "AND t.tgenabled::text = ANY(%s) ORDER BY 1",
                (regclass, list(_FIRES[replica])),
            ).fetchall()
            for name, enabled, owner in found:
                if not owner:
                    self._warnings.append(
                        f"trigger {name} on {table} fired during the restore (this role does "
                        "not own the table), so it may have changed restored values"
                    )
                    continue
                self._db.execute(
                    sql.SQL("ALTER TABLE ONLY {} DISABLE TRIGGER {}").format(
                        table.ident(), sql.Identifier(name)
                    )
                )
                disabled.append(_Trigger(table, str(name), str(enabled)))
        return disabled

    def _enable_triggers(self, triggers: list[_Trigger]) -> None:
        for trig in triggers:
            self._db.execute(
                sql.SQL("ALTER TABLE ONLY {} {} {}").format(
                    trig.table.ident(), sql.SQL(_ENABLE[trig.enabled]), sql.Identifier(trig.name)
                )
            )

    def _delete(self, table: TableRef) -> int:
        facts = self._schema.facts(table)
        removed = self._diff.removed_table(table)
        if facts.has_key:
            query = sql.SQL("DELETE FROM ONLY {} AS d USING {} AS x WHERE {}").format(
                table.ident(),
                removed,
                sql.SQL(" AND ").join(
                    sql.SQL("d.{c} = x.{c}").format(c=sql.Identifier(c)) for c in facts.key
                ),
            )
        else:
            query = sql.SQL(
                "DELETE FROM ONLY {} WHERE ctid = ANY(ARRAY(SELECT cv_ctid FROM {}))"
            ).format(table.ident(), removed)
        return self._db.execute(query).rowcount

    def _upsert(self, table: TableRef) -> tuple[int, int]:
        """Insert the backup's rows; update live ones only where they differ."""
        facts = self._schema.facts(table)
        staged = self._staged.tables[table]
        cols = column_list(staged.columns)
        insert = sql.SQL(
            "INSERT INTO {} AS d ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {}"
        ).format(table.ident(), cols, cols, staged.ident)
        if not facts.has_key:
            return self._db.execute(insert).rowcount, 0
        query = sql.SQL(
            "WITH w AS ({} {} RETURNING (d.xmax = 0) AS fresh) "
            "SELECT count(*) FILTER (WHERE fresh), count(*) FILTER (WHERE NOT fresh) "
            "FROM w"
        ).format(insert, _on_conflict(facts, staged))
        row = self._db.execute(query).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def _check_counts(self, counts: Mapping[str, int]) -> None:
        wrong = {
            t: (n, self._expected.get(t, 0))
            for t, n in counts.items()
            if n != self._expected.get(t, 0)
        }
        if wrong:
            detail = "; ".join(
                f"{t}: {n} rows, the manifest says {e}" for t, (n, e) in sorted(wrong.items())
            )
            raise IntegrityError(f"the restore was rolled back: counts differ: {detail}")

    def _advance_sequences(self) -> dict[str, int]:
        moved: dict[str, int] = {}
        for table in self._schema.tables:
            for column, sequence in self._sequences(self._schema.facts(table)):
                value = self._advance(table, column, sequence)
                if value is not None:
                    moved[sequence] = value
        return moved

    def _sequences(self, facts: TableFacts) -> list[tuple[str, str]]:
        name = sql.Identifier(facts.table.schema, facts.table.name).as_string(self._db)
        found = []
        for column, oid in facts.types.items():
            if oid not in _INTEGER_TYPES:
                continue
            row = self._db.execute(
                "SELECT pg_get_serial_sequence(%s, %s)", (name, column)
            ).fetchone()
            if row and row[0]:
                found.append((column, str(row[0])))
        return found

    def _advance(self, table: TableRef, column: str, sequence: str) -> int | None:
        top = self._db.execute(
            sql.SQL("SELECT max({}) FROM ONLY {}").format(sql.Identifier(column), table.ident())
        ).fetchone()
        if top is None or top[0] is None:
            return None
        row = self._db.execute(
            "SELECT last_value, min_value FROM pg_sequences "
            "WHERE format('%%I.%%I', schemaname, sequencename)::regclass = %s::regclass",
            (sequence,),
        ).fetchone()
        if row is None:
            return None
        last, lowest = row
        needed = int(top[0]) > int(last) if last is not None else int(top[0]) >= int(lowest)
        if not needed:
            return None
        self._db.execute("SELECT setval(%s::regclass, %s, true)", (sequence, int(top[0])))
        return int(top[0])


def _on_conflict(facts: TableFacts, staged: StagedTable) -> sql.Composed:
    values = tuple(c for c in staged.columns if c not in facts.key)
    key = column_list(facts.key)
    if not values:
        return sql.SQL("ON CONFLICT ({}) DO NOTHING").format(key)
    return sql.SQL(
        "ON CONFLICT ({}) DO UPDATE SET ({}) = ROW({}) "
        "WHERE ROW({})::text IS DISTINCT FROM ROW({})::text"
    ).format(
        key,
        column_list(values),
        column_list(values, "excluded"),
        column_list(values, "d"),
        column_list(values, "excluded"),
    )
