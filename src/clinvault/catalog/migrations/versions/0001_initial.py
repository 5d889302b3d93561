"""The first catalog schema: backups, schedules, restore operations and the audit trail.

Written out by hand (not generated from the models at run time) so that it stays the schema of
revision 0001 whatever the models become; a test checks that models and migrations agree.
The audit trail is made append-only here by triggers, on SQLite and on PostgreSQL.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKUP_TYPES = ("full", "database", "files")
BACKUP_STATUSES = ("pending", "in_progress", "completed", "failed")
SCOPES = ("all", "study", "organization")
RESTORE_STATUSES = ("pending", "validating", "in_progress", "completed", "failed", "rolled_back")
AUDIT_OUTCOMES = ("success", "failure", "denied")
COMPRESSIONS = ("zstd", "gzip")

APPEND_ONLY_MESSAGE = "audit_events is append-only"


def _json() -> sa.JSON:
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _one_of(table: str, column: str, values: Sequence[str]) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(f"ck_{table}_{column}"))


def _create_backup_schedules() -> None:
    table = "backup_schedules"
    op.create_table(
        table,
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("backup_type", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("scope_ids", _json(), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("cron_expression", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), server_default="UTC", nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column("keep_rules", _json(), nullable=True),
        sa.Column("compression", sa.String(8), nullable=False),
        sa.Column("compression_level", sa.Integer(), nullable=True),
        sa.Column("last_run_at", _timestamp(), nullable=True),
        sa.Column("next_run_at", _timestamp(), nullable=True),
        sa.Column("last_status", sa.String(32), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", _timestamp(), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", _timestamp(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup_schedules")),
        _one_of(table, "backup_type", BACKUP_TYPES),
        _one_of(table, "scope", SCOPES),
        _one_of(table, "compression", COMPRESSIONS),
    )
    op.create_index("ix_backup_schedules_name", table, ["name"], unique=True)
    op.create_index(
        "ix_backup_schedules_is_active_next_run_at", table, ["is_active", "next_run_at"]
    )


def _create_backups() -> None:
    table = "backups"
    op.create_table(
        table,
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("scope_ids", _json(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("file_path", sa.Text(), nullable=True),
        sa.Column("file_size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("file_size_compressed", sa.BigInteger(), nullable=True),
        sa.Column("compression_ratio", sa.Float(), nullable=True),
        sa.Column("compression", sa.String(8), nullable=False),
        sa.Column("compression_level", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", _timestamp(), server_default=sa.func.now(), nullable=False),
        sa.Column("started_at", _timestamp(), nullable=True),
        sa.Column("completed_at", _timestamp(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("is_safety_backup", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("legal_hold", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("deleted_at", _timestamp(), nullable=True),
        sa.Column("deleted_by", sa.String(255), nullable=True),
        sa.Column("schedule_id", sa.Uuid(), nullable=True),
        sa.Column("verified_at", _timestamp(), nullable=True),
        sa.Column("verify_status", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backups")),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["backup_schedules.id"],
            name=op.f("fk_backups_schedule_id_backup_schedules"),
            ondelete="SET NULL",
        ),
        _one_of(table, "type", BACKUP_TYPES),
        _one_of(table, "status", BACKUP_STATUSES),
        _one_of(table, "scope", SCOPES),
        _one_of(table, "compression", COMPRESSIONS),
    )
    op.create_index("ix_backups_name", table, ["name"], unique=True)
    for column in ("type", "status", "created_at", "deleted_at", "schedule_id"):
        op.create_index(f"ix_backups_{column}", table, [column])


def _create_restore_operations() -> None:
    table = "restore_operations"
    op.create_table(
        table,
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("backup_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("scope_ids", _json(), nullable=False),
        sa.Column("target_database", sa.String(255), nullable=True),
        sa.Column("target_dir", sa.Text(), nullable=True),
        sa.Column("restored_by", sa.String(255), nullable=False),
        sa.Column("started_at", _timestamp(), server_default=sa.func.now(), nullable=False),
        sa.Column("completed_at", _timestamp(), nullable=True),
        sa.Column("validation_results", _json(), nullable=False),
        sa.Column("safety_backup_id", sa.Uuid(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_restore_operations")),
        sa.ForeignKeyConstraint(
            ["backup_id"],
            ["backups.id"],
            name=op.f("fk_restore_operations_backup_id_backups"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["safety_backup_id"],
            ["backups.id"],
            name=op.f("fk_restore_operations_safety_backup_id_backups"),
            ondelete="RESTRICT",
        ),
        _one_of(table, "status", RESTORE_STATUSES),
        _one_of(table, "scope", SCOPES),
    )
    for column in ("backup_id", "status", "started_at"):
        op.create_index(f"ix_restore_operations_{column}", table, [column])


def _create_audit_events() -> None:
    table = "audit_events"
    op.create_table(
        table,
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", _timestamp(), nullable=False),
        sa.Column("actor_id", sa.String(255), nullable=True),
        sa.Column("actor_name", sa.String(255), nullable=False),
        sa.Column("action", sa.String(128), nullable=False),
        sa.Column("target_type", sa.String(64), nullable=True),
        sa.Column("target_id", sa.String(255), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("client_address", sa.String(128), nullable=True),
        sa.Column("details", _json(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("seq", name=op.f("uq_audit_events_seq")),
        _one_of(table, "outcome", AUDIT_OUTCOMES),
    )
    for column in ("occurred_at", "action", "actor_id"):
        op.create_index(f"ix_audit_events_{column}", table, [column])
    op.create_index("ix_audit_events_target_type_target_id", table, ["target_type", "target_id"])


SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END""",
    f"""CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END""",
)

POSTGRESQL_TRIGGERS = (
    f"""CREATE FUNCTION audit_events_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{APPEND_ONLY_MESSAGE} (% refused)', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$""",
    """CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()""",
    """CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()""",
)


def _create_append_only_triggers() -> None:
    """Refuse UPDATE, DELETE (and TRUNCATE on PostgreSQL) of audit events in the database.

    The hash chain detects tampering after the fact; the triggers stop it from happening
    through the application's own connection in the first place.
    """
    dialect = op.get_bind().dialect.name
    statements = SQLITE_TRIGGERS if dialect == "sqlite" else POSTGRESQL_TRIGGERS
    for statement in statements:
        op.execute(statement)


def _drop_append_only_triggers() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update_delete ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS audit_events_append_only()")


def upgrade() -> None:
    _create_backup_schedules()
    _create_backups()
    _create_restore_operations()
    _create_audit_events()
    _create_append_only_triggers()


def downgrade() -> None:
    _drop_append_only_triggers()
    op.drop_table("audit_events")
    op.drop_table("restore_operations")
    op.drop_table("backups")
    op.drop_table("backup_schedules")
