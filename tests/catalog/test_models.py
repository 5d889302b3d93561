"""The models on a migrated catalog, and the engine and session plumbing under them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, StatementError

from clinvault.catalog import (
    Backup,
    BackupSchedule,
    BackupStatus,
    BackupType,
    Catalog,
    RestoreOperation,
    RestoreStatus,
    Scope,
    create_catalog_engine,
    display_url,
    to_sqlalchemy_url,
)
from clinvault.errors import ConfigError


def _backup(name: str = "nightly-1", **fields: object) -> Backup:
    values: dict[str, object] = {
        "name": name,
        "type": BackupType.FULL,
        "compression": "zstd",
        "compression_level": 3,
        "created_by": "alice",
    }
    values.update(fields)
    return Backup(**values)


def test_backup_round_trips_json_metadata_and_aware_timestamps(catalog: Catalog) -> None:
    paris = timezone(timedelta(hours=2))
    started = datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=paris)
    metadata = {"tables": {"subjects": 1200}, "parts": ["database", "files"], "ratio": 0.25}
    with catalog.session() as session:
        backup = _backup(
            scope=Scope.STUDY,
            scope_ids=["study-7"],
            started_at=started,
            file_size_bytes=5 * 2**40,
            metadata_=metadata,
        )
        session.add(backup)

    with catalog.session() as session:
        stored = session.get_one(Backup, backup.id)
        assert stored.metadata_ == metadata
        assert stored.scope_ids == ["study-7"]
        assert stored.scope is Scope.STUDY
        assert stored.status is BackupStatus.PENDING
        assert stored.started_at == started
        assert stored.started_at is not None and stored.started_at.tzinfo == UTC
        assert stored.started_at.hour == 12  # 14:30 at UTC+2
        assert stored.created_at.tzinfo == UTC
        assert abs(stored.created_at - datetime.now(UTC)) < timedelta(minutes=1)
        assert stored.file_size_bytes == 5 * 2**40
        assert stored.is_safety_backup is False and stored.legal_hold is False
        assert stored.deleted_at is None and stored.compression_ratio is None


def test_enums_are_stored_as_their_string_values(catalog: Catalog) -> None:
    with catalog.session() as session:
        session.add(_backup(type=BackupType.DATABASE, status=BackupStatus.IN_PROGRESS))
    with catalog.session() as session:
        row = session.execute(sa.text("SELECT type, status, scope FROM backups")).one()
    assert tuple(row) == ("database", "in_progress", "all")


def test_check_constraints_refuse_unknown_enum_values(catalog: Catalog) -> None:
    with pytest.raises(IntegrityError), catalog.session() as session:
        session.execute(
            sa.text(
                "INSERT INTO backups (id, name, type, status, scope, scope_ids, compression,"
                " compression_level, created_by, metadata)"
                " VALUES (:id, 'x', 'weekly', 'pending', 'all', '[]', 'zstd', 3, 'a', '{}')"
            ),
            {"id": uuid.uuid4().hex},
        )


def test_backup_name_is_unique(catalog: Catalog) -> None:
    with catalog.session() as session:
        session.add(_backup("same"))
    with pytest.raises(IntegrityError), catalog.session() as session:
        session.add(_backup("same"))
    with catalog.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Backup)) == 1


def test_backup_with_a_restore_cannot_be_deleted(catalog: Catalog) -> None:
    with catalog.session() as session:
        backup = _backup()
        session.add(backup)
        session.flush()
        session.add(RestoreOperation(backup_id=backup.id, restored_by="bob"))

    with pytest.raises(IntegrityError), catalog.session() as session:
        session.execute(sa.delete(Backup).where(Backup.id == backup.id))

    with catalog.session() as session:
        restore = session.scalars(sa.select(RestoreOperation)).one()
        assert restore.backup_id == backup.id
        assert restore.status is RestoreStatus.PENDING
        assert restore.validation_results == {}
        assert session.get(Backup, backup.id) is not None


def test_restore_cannot_point_at_a_missing_backup(catalog: Catalog) -> None:
    with pytest.raises(IntegrityError), catalog.session() as session:
        session.add(RestoreOperation(backup_id=uuid.uuid4(), restored_by="bob"))


def test_deleting_a_schedule_keeps_its_backups_unlinked(catalog: Catalog) -> None:
    with catalog.session() as session:
        schedule = BackupSchedule(
            name="nightly",
            backup_type=BackupType.FULL,
            cron_expression="0 2 * * *",
            created_by="alice",
        )
        session.add(schedule)
        session.flush()
        backup = _backup(schedule_id=schedule.id)
        session.add(backup)
    assert schedule.timezone == "UTC" and schedule.is_active is True

    with catalog.session() as session:
        session.execute(sa.delete(BackupSchedule).where(BackupSchedule.id == schedule.id))

    with catalog.session() as session:
        assert session.get_one(Backup, backup.id).schedule_id is None


def test_nullable_json_column_stores_sql_null(catalog: Catalog) -> None:
    with catalog.session() as session:
        session.add(
            BackupSchedule(
                name="n", backup_type=BackupType.FILES, cron_expression="@daily", created_by="a"
            )
        )
    with catalog.session() as session:
        count = session.scalar(
            sa.text("SELECT count(*) FROM backup_schedules WHERE keep_rules IS NULL")
        )
    assert count == 1


def test_naive_datetimes_are_refused(catalog: Catalog) -> None:
    with pytest.raises(StatementError, match="naive datetime"), catalog.session() as session:
        session.add(_backup(started_at=datetime(2024, 1, 1, 12, 0)))


def test_session_rolls_back_when_the_block_raises(catalog: Catalog) -> None:
    with pytest.raises(RuntimeError), catalog.session() as session:
        session.add(_backup("kept?"))
        session.flush()
        raise RuntimeError("boom")
    with catalog.session() as session:
        assert session.scalars(sa.select(Backup)).all() == []


def test_objects_stay_readable_after_the_session_commits(catalog: Catalog) -> None:
    with catalog.session() as session:
        backup = _backup("detached")
        session.add(backup)
    assert backup.name == "detached" and backup.created_at.tzinfo == UTC


def test_write_lock_sessions_work_on_both_backends(catalog: Catalog) -> None:
    with catalog.session(write_lock=True) as session:
        session.add(_backup("locked"))
    with catalog.session() as session:
        assert session.scalars(sa.select(Backup.name)).all() == ["locked"]


# --- URLs and engines ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/cat", "postgresql+psycopg://u:p@db:5432/cat"),
        ("postgres://u@db/cat?sslmode=require", "postgresql+psycopg://u@db/cat?sslmode=require"),
        ("postgresql+psycopg://u@db/cat", "postgresql+psycopg://u@db/cat"),
        ("sqlite:////var/lib/clinvault/catalog.db", "sqlite:////var/lib/clinvault/catalog.db"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_to_sqlalchemy_url_selects_psycopg(given: str, expected: str) -> None:
    assert to_sqlalchemy_url(given) == expected


@pytest.mark.parametrize(
    "url", ["mysql://root:hunter2@db/cat", "postgresql+psycopg2://u:hunter2@db/c", "catalog.db"]
)
def test_unsupported_urls_are_config_errors_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        to_sqlalchemy_url(url)
    assert "hunter2" not in str(caught.value)


def test_display_url_masks_the_password() -> None:
    shown = display_url("postgresql+psycopg://clin:hunter2@db:5432/catalog")
    assert "hunter2" not in shown
    assert shown.startswith("postgresql+psycopg://clin:***@db:5432/catalog")


def test_catalog_repr_masks_the_password() -> None:
    catalog = Catalog.from_url("postgresql://clin:hunter2@127.0.0.1:1/catalog")
    try:
        assert "hunter2" not in repr(catalog) and "clin:***@" in repr(catalog)
    finally:
        catalog.dispose()


def test_sqlite_connections_get_the_catalog_pragmas(tmp_path: Path) -> None:
    engine = create_catalog_engine(f"sqlite:///{tmp_path / 'new' / 'c.db'}")
    try:
        with engine.connect() as connection:
            pragmas = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("foreign_keys", "journal_mode", "busy_timeout")
            }
    finally:
        engine.dispose()
    assert pragmas == {"foreign_keys": 1, "journal_mode": "wal", "busy_timeout": 30000}
    assert (tmp_path / "new").is_dir()


def test_postgresql_engines_use_psycopg_and_pre_ping() -> None:
    engine = create_catalog_engine("postgresql://u:p@127.0.0.1:1/c")
    try:
        assert engine.dialect.driver == "psycopg"
        assert engine.pool._pre_ping
    finally:
        engine.dispose()
