from __future__ import annotations

import psycopg
import pytest

from clinvault.engine.pgconn import ConnInfo

pytestmark = pytest.mark.pg


def test_fresh_database_is_empty_and_writable(database: ConnInfo) -> None:
    with psycopg.connect(**database.psycopg_kwargs()) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
        assert conn.execute("SELECT sum(x) FROM t").fetchone() == (1,)
