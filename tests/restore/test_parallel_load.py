"""Restoring with the rows loaded over several connections: exactly what ``pg_restore``
restores, on a schema full of awkward cases, with big tables cut into many pieces."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from clinvault.engine.dbrestore import restore_dump_parallel
from clinvault.engine.granular_script import write_list
from clinvault.engine.parallel_load import SectionPlan, load_table_data
from clinvault.engine.pgconn import ConnInfo
from clinvault.errors import DatabaseError
from tests.restore.conftest import (
    custom_database,
    dump_through_a_pipe,
    matview_hash,
    schema_text,
    table_hashes,
)

pytestmark = pytest.mark.pg

EXTRA = r"""
CREATE TABLE "Odd ""Rows"" table" (id serial PRIMARY KEY, "Ünïcode" text, doc jsonb, raw bytea);
INSERT INTO "Odd ""Rows"" table" ("Ünïcode", doc, raw)
SELECT 'row ' || g || E'\twith a tab\nand a newline \\ and a backslash',
       jsonb_build_object('g', g, 'text', E'quote " and \\'),
       decode(lpad(to_hex(g), 8, '0'), 'hex')
FROM generate_series(1, 20000) g;
-- one-column values that look like the end-of-data line once escaped
CREATE TABLE ends (v text);
INSERT INTO ends VALUES ('\.'), (E'\\.'), ('\'), (''), (NULL), (E'\\.\n\\.');
CREATE TABLE nothing_in_it (x int);
SELECT lo_from_bytea(0, 'a large object, restored by pg_restore after the rows');
"""


def _lo(conn: ConnInfo) -> list[bytes]:
    with psycopg.connect(**conn.psycopg_kwargs()) as db:
        rows = db.execute(
            "SELECT lo_get(oid) FROM pg_largeobject_metadata ORDER BY lo_get(oid)"
        ).fetchall()
    return [bytes(r[0]) for r in rows]


@pytest.mark.parametrize("jobs", [2, 3])
def test_parallel_restore_equals_the_source(
    make_database: Callable[[], ConnInfo], tmp_path: Path, jobs: int
) -> None:
    source, target = make_database(), make_database()
    custom_database(source)
    with psycopg.connect(**source.psycopg_kwargs(), autocommit=True) as db:
        db.execute(EXTRA)
    dump = tmp_path / "database.dump"
    tool = dump_through_a_pipe(source, dump)
    loaded: list[int] = []

    restore_dump_parallel(
        tool,
        target,
        dump,
        jobs=jobs,
        piece_bytes=64 << 10,  # the biggest table goes in as several pieces
        on_bytes=loaded.append,
    )

    assert table_hashes(target) == table_hashes(source)
    assert schema_text(target) == schema_text(source)
    assert matview_hash(target) == matview_hash(source)
    assert _lo(target) == _lo(source) == [b"a large object, restored by pg_restore after the rows"]
    assert len(loaded) >= 3 and sum(loaded) > 2_000_000
    assert sorted(p.name for p in tmp_path.glob("*.list")) == [
        "data.list",
        "rest.list",
        "schema.list",
    ]


def test_a_failing_piece_fails_the_load_and_commits_nothing(
    make_database: Callable[[], ConnInfo], tmp_path: Path
) -> None:
    source, target = make_database(), make_database()
    with psycopg.connect(**source.psycopg_kwargs(), autocommit=True) as db:
        db.execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text);"
            "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g;"
            "INSERT INTO t VALUES (0, 'the one row the target refuses');"
        )
    dump = tmp_path / "database.dump"
    tool = dump_through_a_pipe(source, dump)
    # The table as the target has it: a check one row of the backup breaks.
    with psycopg.connect(**target.psycopg_kwargs(), autocommit=True) as db:
        db.execute("CREATE TABLE t (id int, v text CHECK (v LIKE 'x%'))")
    data = write_list(tmp_path / "data.list", SectionPlan.of(tool, dump).table_data)

    with pytest.raises(DatabaseError, match="loading table data failed"):
        load_table_data(tool, dump, target, data, jobs=2, piece_bytes=64 << 10)

    with psycopg.connect(**target.psycopg_kwargs()) as db:
        row = db.execute("SELECT count(*) FROM t").fetchone()
    assert row is not None and row[0] == 0  # every loader rolled back
