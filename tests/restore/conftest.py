"""Fixtures and probes for restore tests: the sample platform, and exact state fingerprints.

A fingerprint is what a restore must bring back identically: the schema (``pg_dump
--schema-only``), the content of every table as an ordered hash, every sequence's value,
and every file's kind, mode, modification time and SHA-256.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from clinvault.config import Settings
from clinvault.engine.dbdump import dump_args
from clinvault.engine.dbrestore import databases_with_prefix, drop_database
from clinvault.engine.pgconn import ConnInfo
from clinvault.engine.pginspect import server_facts, user_tables
from clinvault.engine.pgtools import PgTool, PgToolkit, open_tool, run_tool
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from tests.services.conftest import Platform, platform  # noqa: F401

ACTOR = Actor("u-restore", "Restore Tester")


@pytest.fixture
def make_database(
    make_database: Callable[[], ConnInfo], pg_server: ConnInfo
) -> Iterator[Callable[[], ConnInfo]]:
    """The shared factory, plus cleanup of the databases a restore derives from each one
    (``<db>__restore_*``, ``<db>__pre_restore_*``, sandboxes), which it does not know."""
    created: list[str] = []

    def make() -> ConnInfo:
        conn = make_database()
        created.append(conn.database)
        return conn

    yield make
    for name in created:
        for derived in databases_with_prefix(pg_server, f"{name}__"):
            drop_database(pg_server, derived)


def table_hashes(conn: ConnInfo) -> dict[str, str]:
    """Ordered hash of every user table's rows, and every sequence's state."""
    with psycopg.connect(**conn.psycopg_kwargs()) as db:
        found = {}
        for table in user_tables(db):
            row = db.execute(
                sql.SQL(
                    "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {} t"
                ).format(table.ident())
            ).fetchone()
            assert row is not None
            found[table.qualified] = f"{row[0]}:{row[1]}"
        for schema, name, value in db.execute(
            "SELECT schemaname, sequencename, last_value FROM pg_sequences"
        ):
            found[f"sequence {schema}.{name}"] = str(value)
    return found


def schema_text(conn: ConnInfo) -> str:
    """The schema as ``pg_dump --schema-only`` writes it, minus comments and session keys."""
    with psycopg.connect(**conn.psycopg_kwargs()) as db:
        major = server_facts(db).major
    tool = PgToolkit().find("pg_dump", major)
    text = run_tool(tool, ["--schema-only", "--no-password"], conn).decode()
    keep = [
        line
        for line in text.splitlines()
        if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))
    ]
    return "\n".join(keep)


def fingerprint(conn: ConnInfo) -> tuple[str, dict[str, str]]:
    return schema_text(conn), table_hashes(conn)


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root``: kind, mode, mtime (µs) and content hash or link target."""
    found: dict[str, tuple[object, ...]] = {}
    if not root.exists():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            info = path.lstat()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir", info.st_mode & 0o7777)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[rel] = ("file", info.st_mode & 0o7777, info.st_mtime_ns // 1000, digest)
    return found


def database_names(server: ConnInfo, prefix: str) -> list[str]:
    return databases_with_prefix(server, prefix)


def change_platform(site: Platform) -> None:
    """Changes made after a backup: updated, deleted and new rows, a new table, changed,
    removed and new files."""
    with psycopg.connect(**site.conn.psycopg_kwargs(), autocommit=True) as db:
        db.execute(
            "UPDATE subjects SET demographics = '{\"edited\": true}'"
            " WHERE id IN (SELECT id FROM subjects ORDER BY id LIMIT 3)"
        )
        db.execute("DELETE FROM adverse_events WHERE id IN (SELECT min(id) FROM adverse_events)")
        db.execute(
            "INSERT INTO lab_tests VALUES"
            " ('ZZ1', 'New', 'LP-NEW', 'blood', 'mg', 0, 1, 1, false, 999)"
        )
        db.execute("CREATE TABLE after_backup (id int PRIMARY KEY, note text)")
        db.execute("INSERT INTO after_backup VALUES (1, 'written after the backup')")
    files = sorted(p for p in (site.files_root / "studies").rglob("*") if p.is_file())
    files[0].write_bytes(b"changed after the backup")
    files[1].unlink()
    (site.files_root / "uploads" / "new-after-backup.txt").write_text("new")


CUSTOM_SCHEMA = """
CREATE SCHEMA "Lab Data";
CREATE TYPE "Lab Data".mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE point3 AS (x float8, y float8, z float8);
CREATE SEQUENCE counter START 100;
CREATE TABLE "Lab Data"."Samples" (
    id bigserial PRIMARY KEY,
    label text NOT NULL,
    mood "Lab Data".mood,
    pos point3,
    tags text[],
    payload jsonb,
    data bytea,
    measured numeric(20, 6),
    at timestamptz,
    doubled float8 GENERATED ALWAYS AS (coalesce((pos).x, 0) * 2) STORED
);
CREATE TABLE events (id int, happened date NOT NULL, note text) PARTITION BY RANGE (happened);
CREATE TABLE events_2023 PARTITION OF events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE no_key (a int, b text);
CREATE VIEW sample_labels AS SELECT label FROM "Lab Data"."Samples";
CREATE MATERIALIZED VIEW mood_counts AS
    SELECT mood, count(*) AS n FROM "Lab Data"."Samples" GROUP BY mood;
CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN NEW.note := upper(NEW.note); RETURN NEW; END $$;
CREATE TRIGGER events_shout BEFORE INSERT ON events_2024 FOR EACH ROW EXECUTE FUNCTION shout();
COMMENT ON TABLE events IS 'événements ☃';
INSERT INTO "Lab Data"."Samples" (label, mood, pos, tags, payload, data, measured, at)
SELECT 'sample ' || i || ' ü',
       (ARRAY['sad', 'ok', 'happy', NULL])[1 + i % 4]::"Lab Data".mood,
       CASE WHEN i % 5 = 0 THEN NULL ELSE ROW(i, i / 3.0, -i)::point3 END,
       ARRAY['t' || i % 7, 'x'],
       jsonb_build_object('i', i, 'nested', jsonb_build_array(i, 'a"b')),
       decode(md5(i::text), 'hex'),
       i * 1.000001,
       timestamptz '2024-01-01 00:00+00' + i * interval '1 hour'
FROM generate_series(1, 400) AS i;
INSERT INTO events SELECT i, date '2023-06-01' + i, 'event ' || i FROM generate_series(1, 300) i;
INSERT INTO no_key SELECT i % 10, 'dup' FROM generate_series(1, 50) i;
SELECT setval('counter', 4242);
REFRESH MATERIALIZED VIEW mood_counts;
"""


def custom_database(conn: ConnInfo) -> None:
    """A database that is not the sample schema: schemas and names needing quotes, enum and
    composite types, partitions, a generated column, views, a trigger, bytea and Unicode."""
    with psycopg.connect(**conn.psycopg_kwargs(), autocommit=True) as db:
        db.execute(CUSTOM_SCHEMA)


def matview_hash(conn: ConnInfo) -> str:
    with psycopg.connect(**conn.psycopg_kwargs()) as db:
        row = db.execute(
            "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM mood_counts t"
        ).fetchone()
    assert row is not None
    return str(row[0])


def context_for(conn: ConnInfo, home: Path, **overrides: object) -> ServiceContext:
    """A ClinVault context for any database, with its own home, storage and catalog."""
    home.mkdir(parents=True, exist_ok=True)
    values: dict[str, object] = {
        "data_dir": home,
        "database_url": conn.url(),
        "files_root": home / "files",
        "file_roots": [],
        "storage_url": (home / "store").as_uri(),
        "catalog_url": f"sqlite:///{home / 'catalog.db'}",
    }
    values.update(overrides)
    return ServiceContext(Settings(**values))  # type: ignore[arg-type]


def dump_through_a_pipe(conn: ConnInfo, dest: Path) -> PgTool:
    """The dump as ClinVault takes it (custom format, uncompressed, written to a pipe, so
    without data offsets); returns the ``pg_restore`` that reads it."""
    with psycopg.connect(**conn.psycopg_kwargs()) as db:
        major = server_facts(db).major
    kit = PgToolkit()
    with (
        open_tool(kit.find("pg_dump", major), dump_args(None), conn, read_stdout=True) as run,
        dest.open("wb") as out,
    ):
        while chunk := run.stdout.read(1 << 20):
            out.write(chunk)
    return kit.find("pg_restore", major)
