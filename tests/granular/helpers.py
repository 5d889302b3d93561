"""Fingerprints of a platform, to prove what a restore changed and what it left alone.

Every scope table's rows are hashed per root key (ordered by their text, so the hash is the
rows' content, ``updated_at`` included); tables outside the scope are hashed whole; files
are hashed per path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql

from clinvault.catalog.models import AuditOutcome, RestoreOperation
from clinvault.config import ScopeSettings
from clinvault.engine.pgconn import ConnInfo
from clinvault.engine.pginspect import connect, user_tables
from clinvault.services.audit import AuditFilter
from clinvault.services.context import ServiceContext
from clinvault.services.scoping import scope_models

RowState = dict[str, tuple[int, str]]


def _digest(
    db: psycopg.Connection[Any], query: sql.Composed, params: Sequence[Any] | None = None
) -> tuple[int, str]:
    wrapped = sql.SQL(
        "SELECT count(*), md5(coalesce(string_agg(q::text, E'\\n' ORDER BY q::text), ''))"
        " FROM ({}) AS q"
    ).format(query)
    row = db.execute(wrapped, params).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def database_state(conn: ConnInfo, scope: ScopeSettings, kind: str) -> RowState:
    """``table@key`` for every scope table and root key, ``table`` for the other tables."""
    state: RowState = {}
    with connect(conn) as db:
        model = scope_models(db, scope)[kind]
        keys = [str(k) for k, _ in db.execute(model.labels_query()).fetchall()]
        for table in user_tables(db):
            if table not in model.paths:
                query = sql.SQL("SELECT * FROM {}").format(table.ident())
                state[table.qualified] = _digest(db, query)
                continue
            for key in keys:
                state[f"{table.qualified}@{key}"] = _digest(db, model.select_query(table), ([key],))
    return state


def scope_keys(conn: ConnInfo, scope: ScopeSettings, kind: str) -> dict[str, str]:
    """Label -> key of every root row."""
    with connect(conn) as db:
        model = scope_models(db, scope)[kind]
        return {str(label): str(key) for key, label in db.execute(model.labels_query())}


def tree_state(root: Path) -> dict[str, str]:
    """Every file and link under ``root`` with its content hash or link target."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = "-> " + str(path.readlink())
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            found[rel] = "dir"
    return found


def of_keys(state: RowState, keys: set[str]) -> RowState:
    """The entries of the given root keys."""
    return {k: v for k, v in state.items() if "@" in k and k.rpartition("@")[2] in keys}


def except_keys(state: RowState, keys: set[str]) -> RowState:
    """Everything but the entries of the given root keys (other scopes, other tables)."""
    return {k: v for k, v in state.items() if "@" not in k or k.rpartition("@")[2] not in keys}


def under(tree: dict[str, str], dirs: set[str]) -> dict[str, str]:
    return {p: v for p, v in tree.items() if any(p == d or p.startswith(d + "/") for d in dirs)}


def outside(tree: dict[str, str], dirs: set[str]) -> dict[str, str]:
    return {p: v for p, v in tree.items() if p not in under(tree, dirs)}


def live_counts(state: RowState, key: str) -> dict[str, int]:
    """Rows per table of one root key, as the manifest counts them (tables with rows)."""
    found = {k.rpartition("@")[0]: v[0] for k, v in of_keys(state, {key}).items()}
    return {t: n for t, n in found.items() if n}


def operations(ctx: ServiceContext) -> list[RestoreOperation]:
    with ctx.catalog.session() as session:
        return list(session.scalars(sa.select(RestoreOperation)))


def audit_actions(ctx: ServiceContext, op_id: object) -> set[tuple[str, AuditOutcome]]:
    return {(e.action, e.outcome) for e in ctx.audit.list(AuditFilter(target_id=str(op_id)))}


def execute(conn: ConnInfo, statement: str, params: Sequence[Any] | None = None) -> None:
    with connect(conn) as db:
        db.execute(statement, params)
