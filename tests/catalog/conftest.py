"""Catalog fixtures: every catalog test runs on an SQLite file and on PostgreSQL.

``tamper`` runs SQL behind the append-only triggers' back, as an attacker with direct access
to the database could, so that tests can prove the hash chain still notices.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from clinvault.catalog import Catalog
from clinvault.engine.pgconn import ConnInfo

Tamper = Callable[..., None]


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.pg)],
)
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty catalog database; the SQLite file's directory does not exist yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog-dir' / 'catalog.db'}"
    database: ConnInfo = request.getfixturevalue("database")
    return database.url()


@pytest.fixture
def empty_catalog(catalog_url: str) -> Iterator[Catalog]:
    """A catalog on an empty database, not migrated."""
    catalog = Catalog.from_url(catalog_url)
    yield catalog
    catalog.dispose()


@pytest.fixture
def catalog(empty_catalog: Catalog) -> Catalog:
    """A catalog migrated to the newest schema."""
    empty_catalog.upgrade()
    return empty_catalog


@pytest.fixture
def tamper(catalog: Catalog, catalog_url: str) -> Tamper:
    """Run SQL statements on the catalog, in one transaction, with the triggers out of the way."""
    if catalog.dialect == "sqlite":
        database = sa.make_url(catalog_url).database
        assert database is not None
        return lambda *statements: _tamper_sqlite(database, statements)
    return lambda *statements: _tamper_postgresql(ConnInfo.from_url(catalog_url), statements)


def _tamper_sqlite(path: str, statements: tuple[str, ...]) -> None:
    """Drop the triggers, run the statements and recreate the triggers, over raw sqlite3."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        triggers = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
            ("audit_events",),
        ).fetchall()
        assert len(triggers) == 2
        conn.execute("BEGIN IMMEDIATE")
        for name, _ in triggers:
            conn.execute(f'DROP TRIGGER "{name}"')
        for sql in statements:
            conn.execute(sql)
        for _, create in triggers:
            conn.execute(create)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _tamper_postgresql(info: ConnInfo, statements: tuple[str, ...]) -> None:
    """Disable the table's triggers (as its owner may), run the statements, enable them."""
    with psycopg.connect(**info.psycopg_kwargs()) as conn:
        conn.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
        for sql in statements:
            conn.execute(sql)
        conn.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
