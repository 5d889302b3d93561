"""Database restores of a schema that is not the sample platform: by swap, and in place
where the role may not create or rename databases."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from clinvault.catalog.models import BackupType, RestoreStatus
from clinvault.engine.pgconn import ConnInfo
from clinvault.errors import InvalidInputError
from clinvault.services.backup import BackupRequest, BackupService
from clinvault.services.restore import RestoreService
from tests.restore.conftest import (
    ACTOR,
    context_for,
    custom_database,
    database_names,
    fingerprint,
    matview_hash,
    table_hashes,
)

pytestmark = pytest.mark.pg


def _damage(conn: ConnInfo) -> None:
    with psycopg.connect(**conn.psycopg_kwargs(), autocommit=True) as db:
        db.execute('TRUNCATE "Lab Data"."Samples"')
        db.execute("DROP VIEW sample_labels")
        db.execute("INSERT INTO events VALUES (9999, '2024-05-05', 'late')")
        db.execute("SELECT setval('counter', 1)")
        db.execute("REFRESH MATERIALIZED VIEW mood_counts")


def test_database_restore_round_trip_of_a_non_sample_schema(
    make_database: Callable[[], ConnInfo], tmp_path: Path
) -> None:
    conn = make_database()
    custom_database(conn)
    ctx = context_for(conn, tmp_path / "home", restore_jobs=3)
    backup = BackupService(ctx).create(BackupRequest(BackupType.DATABASE), ACTOR)
    at_backup, matview = fingerprint(conn), matview_hash(conn)
    _damage(conn)
    assert fingerprint(conn) != at_backup

    op = RestoreService(ctx).restore_database(backup.id, ACTOR, safety_backup=False)

    assert op.status is RestoreStatus.COMPLETED, op.error
    assert op.metadata_["method"] == "swap"
    assert fingerprint(conn) == at_backup
    assert matview_hash(conn) == matview
    restored = op.validation_results["restored"]["database"]
    assert restored["ok"] and restored["tables"] == 4 and restored["rows"] == 750
    assert database_names(conn, f"{conn.database}__") == [op.metadata_["checkpoint"]["database"]]
    with psycopg.connect(**conn.psycopg_kwargs()) as db:  # planner statistics from the start
        unanalyzed = db.execute(
            "SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NULL"
        ).fetchall()
    assert unanalyzed == []


@pytest.fixture
def owner_role(pg_server: ConnInfo) -> ConnInfo:
    """A login role that owns its database but may not create databases."""
    return pg_server.__class__(
        pg_server.host, pg_server.port, f"cv_owner_{uuid.uuid4().hex[:8]}", pg_server.database
    )


def test_role_without_createdb_restores_in_place_in_one_transaction(
    make_database: Callable[[], ConnInfo],
    pg_server: ConnInfo,
    owner_role: ConnInfo,
    tmp_path: Path,
) -> None:
    admin = make_database()
    role = sql.Identifier(owner_role.user)
    with psycopg.connect(**pg_server.psycopg_kwargs(), autocommit=True) as db:
        db.execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEDB NOSUPERUSER").format(role))
        db.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(admin.database), role)
        )
    conn = owner_role.with_database(admin.database)
    try:
        custom_database(conn)
        ctx = context_for(conn, tmp_path / "home")
        backup = BackupService(ctx).create(BackupRequest(BackupType.DATABASE), ACTOR)
        at_backup = fingerprint(conn)
        _damage(conn)
        damaged = table_hashes(conn)
        service = RestoreService(ctx)

        with pytest.raises(InvalidInputError, match="in place needs the safety backup"):
            service.restore_database(backup.id, ACTOR, safety_backup=False)
        assert table_hashes(conn) == damaged

        op = service.restore_database(backup.id, ACTOR)

        assert op.status is RestoreStatus.COMPLETED, op.error
        assert op.metadata_["method"] == "in_place"
        assert op.safety_backup_id is not None
        assert op.metadata_["checkpoint"] is None
        assert fingerprint(conn) == at_backup
        assert database_names(admin, f"{admin.database}__") == []
    finally:
        with psycopg.connect(**admin.psycopg_kwargs(), autocommit=True) as db:
            user = db.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
            db.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(role, sql.Identifier(user)))
            db.execute(sql.SQL("DROP OWNED BY {}").format(role))
        with psycopg.connect(**pg_server.psycopg_kwargs(), autocommit=True) as db:
            db.execute(sql.SQL("DROP ROLE {}").format(role))
