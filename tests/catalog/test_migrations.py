"""The Alembic migrations: they build the schema the models describe, idempotently, reversibly."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from clinvault.catalog import Base, Catalog, downgrade, head_revision, upgrade
from clinvault.errors import DatabaseError

CATALOG_TABLES = {
    "backups",
    "backup_schedules",
    "restore_operations",
    "audit_events",
    "users",
    "sessions",
    "api_tokens",
    "signatures",
    "jobs",
}


def _tables(catalog: Catalog) -> set[str]:
    return set(sa.inspect(catalog.engine).get_table_names())


def test_upgrade_creates_every_table_and_column(empty_catalog: Catalog) -> None:
    assert empty_catalog.current_revision() is None

    upgrade(empty_catalog.engine)

    inspector = sa.inspect(empty_catalog.engine)
    assert set(inspector.get_table_names()) == CATALOG_TABLES | {"alembic_version"}
    for table in Base.metadata.sorted_tables:
        columns = {column["name"] for column in inspector.get_columns(table.name)}
        assert columns == set(table.columns.keys()), table.name
    assert "metadata" in {column["name"] for column in inspector.get_columns("backups")}
    assert empty_catalog.current_revision() == head_revision()


def test_upgrade_creates_the_indexes_list_queries_use(catalog: Catalog) -> None:
    inspector = sa.inspect(catalog.engine)
    indexes = {
        table: {
            index["name"]: tuple(index["column_names"]) for index in inspector.get_indexes(table)
        }
        for table in CATALOG_TABLES
    }
    assert indexes["backups"]["ix_backups_type"] == ("type",)
    assert indexes["backups"]["ix_backups_status"] == ("status",)
    assert indexes["backups"]["ix_backups_created_at"] == ("created_at",)
    assert indexes["backups"]["ix_backups_deleted_at"] == ("deleted_at",)
    assert indexes["backup_schedules"]["ix_backup_schedules_is_active_next_run_at"] == (
        "is_active",
        "next_run_at",
    )
    assert indexes["restore_operations"]["ix_restore_operations_backup_id"] == ("backup_id",)
    assert indexes["audit_events"]["ix_audit_events_target_type_target_id"] == (
        "target_type",
        "target_id",
    )
    unique = {index["name"] for index in inspector.get_indexes("backups") if index["unique"]}
    assert "ix_backups_name" in unique


def test_models_and_migrations_describe_the_same_schema(catalog: Catalog) -> None:
    with catalog.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_upgrade_twice_is_a_no_op_that_keeps_data(catalog: Catalog) -> None:
    with catalog.session() as session:
        session.execute(
            sa.text(
                "INSERT INTO backup_schedules (id, name, backup_type, scope, scope_ids,"
                " cron_expression, compression, created_by)"
                " VALUES (:id, 'nightly', 'full', 'all', '[]', '0 2 * * *', 'zstd', 'alice')"
            ),
            {
                "id": "0" * 32
                if catalog.dialect == "sqlite"
                else "00000000-0000-0000-0000-000000000000"
            },
        )

    catalog.upgrade()
    upgrade(catalog.engine)

    assert catalog.current_revision() == head_revision()
    with catalog.session() as session:
        assert session.execute(sa.text("SELECT name FROM backup_schedules")).scalars().all() == [
            "nightly"
        ]


def test_concurrent_upgrades_do_not_collide(catalog_url: str) -> None:
    catalogs = [Catalog.from_url(catalog_url) for _ in range(3)]
    errors: list[BaseException] = []

    def run(catalog: Catalog) -> None:
        try:
            catalog.upgrade()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(catalog,)) for catalog in catalogs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert all(catalog.is_current() for catalog in catalogs)
    finally:
        for catalog in catalogs:
            catalog.dispose()


def test_downgrade_to_base_removes_every_table_and_trigger(catalog: Catalog) -> None:
    downgrade(catalog.engine, "base")

    assert _tables(catalog) <= {"alembic_version"}
    assert catalog.current_revision() is None
    with catalog.engine.connect() as connection:
        if catalog.dialect == "sqlite":
            leftover = connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type IN ('trigger', 'index')"
                " AND name NOT LIKE 'sqlite_%'"
            ).all()
        else:
            leftover = connection.exec_driver_sql(
                "SELECT proname FROM pg_proc WHERE proname = 'audit_events_append_only'"
            ).all()
    assert leftover == []


def test_upgrade_after_downgrade_rebuilds_the_schema(catalog: Catalog) -> None:
    downgrade(catalog.engine, "base")
    upgrade(catalog.engine)

    assert _tables(catalog) == CATALOG_TABLES | {"alembic_version"}


def test_upgrade_accepts_a_url_and_creates_the_sqlite_directory(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "there" / "catalog.db"

    upgrade(f"sqlite:///{path}")

    assert path.is_file()
    catalog = Catalog.from_url(f"sqlite:///{path}")
    try:
        assert _tables(catalog) == CATALOG_TABLES | {"alembic_version"}
    finally:
        catalog.dispose()


def test_unreachable_catalog_is_a_database_error_without_the_password() -> None:
    with pytest.raises(DatabaseError) as caught:
        upgrade("postgresql://clin:hunter2@127.0.0.1:1/catalog")
    assert "hunter2" not in caught.value.message
    assert "clin:***@127.0.0.1:1/catalog" in caught.value.message


def test_schema_revision_constant_is_alembic_head() -> None:
    from clinvault.catalog.db import SCHEMA_REVISION

    assert head_revision() == SCHEMA_REVISION
