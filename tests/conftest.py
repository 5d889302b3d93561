"""Shared fixtures: a real PostgreSQL server and throwaway databases on it.

By default the embedded PostgreSQL (pgserver) is started in a temporary directory for the
test session. ``CLINVAULT_TEST_PG_URL`` points the tests at another server instead (CI uses
the machine's PostgreSQL 15 this way).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from clinvault.engine.embedded import ensure_embedded_server, stop_embedded_server
from clinvault.engine.pgconn import ConnInfo


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnInfo]:
    """Admin connection to the test PostgreSQL server (database ``postgres``)."""
    url = os.environ.get("CLINVAULT_TEST_PG_URL")
    if url:
        yield ConnInfo.from_url(url)
        return
    pgdata = tmp_path_factory.mktemp("embedded") / "pg"
    info = ensure_embedded_server(pgdata)
    try:
        yield info
    finally:
        stop_embedded_server(pgdata)


def _drop_database(server: ConnInfo, name: str) -> None:
    with psycopg.connect(**server.psycopg_kwargs(), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def make_database(pg_server: ConnInfo) -> Iterator[Callable[[], ConnInfo]]:
    """Factory of fresh, empty databases, dropped after the test."""
    created: list[str] = []

    def make() -> ConnInfo:
        name = f"cvtest_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(**pg_server.psycopg_kwargs(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return pg_server.with_database(name)

    yield make
    for name in created:
        _drop_database(pg_server, name)


@pytest.fixture
def database(make_database: Callable[[], ConnInfo]) -> ConnInfo:
    """One fresh, empty database for the test."""
    return make_database()


def cli_env(home: Path) -> dict[str, str]:
    """The environment of a ``clinvault`` process with everything under ``home``: SQLite
    catalog, local storage, and a platform database that refuses connections."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINVAULT_")}
    env.update(
        CLINVAULT_DATA_DIR=str(home),
        CLINVAULT_CATALOG_URL=f"sqlite:///{home / 'catalog.db'}",
        CLINVAULT_STORAGE_URL=(home / "store").as_uri(),
        CLINVAULT_DATABASE_URL="postgresql://clinvault@127.0.0.1:1/none",
    )
    return env


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A clean directory for the test's own files."""
    path = tmp_path / "work"
    path.mkdir()
    return path
