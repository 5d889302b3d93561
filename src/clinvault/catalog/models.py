"""The catalog's tables as SQLAlchemy 2 typed declarative models.

The same models run on SQLite (the embedded default) and on PostgreSQL (shared catalogs), so
every type is chosen to behave the same on both: UUIDs through ``sa.Uuid`` (native ``uuid``
on PostgreSQL), JSON that becomes JSONB on PostgreSQL, string enums stored as plain strings
guarded by CHECK constraints, and timestamps that always come back timezone-aware in UTC.

The schema itself is created by the Alembic migrations in ``migrations/``, not by
``create_all``; a test checks that these models and the migrations agree.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

COMPRESSIONS = ("zstd", "gzip")


class BackupType(StrEnum):
    FULL = "full"
    DATABASE = "database"
    FILES = "files"


class BackupStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


class Scope(StrEnum):
    ALL = "all"
    STUDY = "study"
    ORGANIZATION = "organization"


class RestoreStatus(StrEnum):
    PENDING = "pending"
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


class AuditOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (the only kind the catalog stores)."""
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that is stored in UTC and always read back timezone-aware in UTC.

    SQLite has no time zones: SQLAlchemy stores the wall-clock digits and reads back naive
    values, so an aware value in another zone would silently shift. Binding converts to UTC
    first; reading attaches UTC. Naive datetimes are refused rather than guessed at.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to the catalog: use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# SQL NULL for Python None (sa.JSON would otherwise store the JSON literal ``null``).
JSONType = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _enum(enum_class: type[StrEnum], column: str) -> sa.Enum:
    """A string column limited to ``enum_class``'s values by a CHECK (no native enum type).

    Non-native enums keep the schema identical on SQLite and PostgreSQL and let a later
    migration add a value by replacing a CHECK instead of altering a type.
    """
    return sa.Enum(
        enum_class,
        name=column,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


def _compression_check() -> sa.CheckConstraint:
    """Named ``ck_<table>_compression`` by the naming convention."""
    allowed = ", ".join(f"'{name}'" for name in COMPRESSIONS)
    return sa.CheckConstraint(f"compression IN ({allowed})", name="compression")


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class BackupSchedule(Base):
    """A recurring backup: what to back up, when (cron in a time zone) and how long to keep it."""

    __tablename__ = "backup_schedules"
    __table_args__ = (
        sa.Index("ix_backup_schedules_name", "name", unique=True),
        sa.Index("ix_backup_schedules_is_active_next_run_at", "is_active", "next_run_at"),
        _compression_check(),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(255))
    backup_type: Mapped[BackupType] = mapped_column(_enum(BackupType, "backup_type"))
    scope: Mapped[Scope] = mapped_column(_enum(Scope, "scope"), default=Scope.ALL)
    scope_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True, server_default=sa.true())
    cron_expression: Mapped[str] = mapped_column(sa.String(255))
    timezone: Mapped[str] = mapped_column(sa.String(64), default="UTC", server_default="UTC")
    retention_days: Mapped[int | None] = mapped_column(sa.Integer)
    keep_rules: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    compression: Mapped[str] = mapped_column(sa.String(8), default="zstd")
    compression_level: Mapped[int | None] = mapped_column(sa.Integer)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[str | None] = mapped_column(sa.String(32))
    created_by: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=sa.func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )


class Backup(Base):
    """One backup bundle: its identity, progress, sizes, checksum and lifecycle flags.

    ``checksum`` is the SHA-256 of the bundle's ``manifest.json`` (which holds the hash of
    every part). Deletion is soft (``deleted_at``) so the record outlives the bundle.
    """

    __tablename__ = "backups"
    __table_args__ = (
        sa.Index("ix_backups_name", "name", unique=True),
        sa.Index("ix_backups_type", "type"),
        sa.Index("ix_backups_status", "status"),
        sa.Index("ix_backups_created_at", "created_at"),
        sa.Index("ix_backups_deleted_at", "deleted_at"),
        sa.Index("ix_backups_live_created_at", "deleted_at", "created_at", "id"),
        sa.Index("ix_backups_schedule_id", "schedule_id"),
        _compression_check(),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(255))
    type: Mapped[BackupType] = mapped_column(_enum(BackupType, "type"))
    status: Mapped[BackupStatus] = mapped_column(
        _enum(BackupStatus, "status"), default=BackupStatus.PENDING
    )
    scope: Mapped[Scope] = mapped_column(_enum(Scope, "scope"), default=Scope.ALL)
    scope_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    description: Mapped[str | None] = mapped_column(sa.Text)
    file_path: Mapped[str | None] = mapped_column(sa.Text)
    file_size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    file_size_compressed: Mapped[int | None] = mapped_column(sa.BigInteger)
    compression_ratio: Mapped[float | None] = mapped_column(sa.Float)
    compression: Mapped[str] = mapped_column(sa.String(8), default="zstd")
    compression_level: Mapped[int] = mapped_column(sa.Integer)
    checksum: Mapped[str | None] = mapped_column(sa.String(64))
    created_by: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=sa.func.now()
    )
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(sa.Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    is_safety_backup: Mapped[bool] = mapped_column(
        sa.Boolean, default=False, server_default=sa.false()
    )
    legal_hold: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_by: Mapped[str | None] = mapped_column(sa.String(255))
    schedule_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.Uuid, sa.ForeignKey("backup_schedules.id", ondelete="SET NULL")
    )
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    verify_status: Mapped[str | None] = mapped_column(sa.String(32))


class RestoreOperation(Base):
    """One restore attempt, kept forever with its validation results (Part 11 record).

    Both foreign keys to ``backups`` are RESTRICT: a backup a restore came from (or the safety
    backup taken before it) cannot vanish from under the record; backups are soft-deleted.
    """

    __tablename__ = "restore_operations"
    __table_args__ = (
        sa.Index("ix_restore_operations_backup_id", "backup_id"),
        sa.Index("ix_restore_operations_status", "status"),
        sa.Index("ix_restore_operations_started_at", "started_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    backup_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("backups.id", ondelete="RESTRICT")
    )
    status: Mapped[RestoreStatus] = mapped_column(
        _enum(RestoreStatus, "status"), default=RestoreStatus.PENDING
    )
    scope: Mapped[Scope] = mapped_column(_enum(Scope, "scope"), default=Scope.ALL)
    scope_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    target_database: Mapped[str | None] = mapped_column(sa.String(255))
    target_dir: Mapped[str | None] = mapped_column(sa.Text)
    restored_by: Mapped[str] = mapped_column(sa.String(255))
    started_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=sa.func.now()
    )
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    validation_results: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    safety_backup_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.Uuid, sa.ForeignKey("backups.id", ondelete="RESTRICT")
    )
    error: Mapped[str | None] = mapped_column(sa.Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)


class AuditEvent(Base):
    """One entry of the append-only, hash-chained audit trail.

    Rows are written only by ``clinvault.catalog.audit.append_event``; database triggers
    reject UPDATE and DELETE. ``hash`` covers every other field, ``prev_hash`` included.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        sa.UniqueConstraint("seq", name="uq_audit_events_seq"),
        sa.Index("ix_audit_events_occurred_at", "occurred_at"),
        sa.Index("ix_audit_events_action", "action"),
        sa.Index("ix_audit_events_actor_id", "actor_id"),
        sa.Index("ix_audit_events_target_type_target_id", "target_type", "target_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_id: Mapped[str | None] = mapped_column(sa.String(255))
    actor_name: Mapped[str] = mapped_column(sa.String(255))
    action: Mapped[str] = mapped_column(sa.String(128))
    target_type: Mapped[str | None] = mapped_column(sa.String(64))
    target_id: Mapped[str | None] = mapped_column(sa.String(255))
    outcome: Mapped[AuditOutcome] = mapped_column(_enum(AuditOutcome, "outcome"))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    request_id: Mapped[str | None] = mapped_column(sa.String(128))
    client_address: Mapped[str | None] = mapped_column(sa.String(128))
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))


class Role(StrEnum):
    SYSTEM_ADMIN = "SYSTEM_ADMIN"
    AUDITOR = "AUDITOR"


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class User(Base):
    """A person who may sign in: printed name, role, argon2id hash, lockout state."""

    __tablename__ = "users"
    __table_args__ = (sa.Index("ix_users_username", "username", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(sa.String(64))
    full_name: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True, server_default=sa.true())
    failed_attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=sa.func.now()
    )


class UserSession(Base):
    """A signed-in browser session; only the SHA-256 of its cookie token is stored."""

    __tablename__ = "sessions"
    __table_args__ = (
        sa.Index("ix_sessions_token_hash", "token_hash", unique=True),
        sa.Index("ix_sessions_user_id", "user_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("users.id", ondelete="CASCADE")
    )
    token_hash: Mapped[str] = mapped_column(sa.String(64))
    csrf_token: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=sa.func.now()
    )
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(sa.String(32))
    client_address: Mapped[str | None] = mapped_column(sa.String(128))
    user_agent: Mapped[str | None] = mapped_column(sa.String(512))


class ApiToken(Base):
    """A bearer token for automation; only its SHA-256 is stored, its prefix is shown."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        sa.Index("ix_api_tokens_token_hash", "token_hash", unique=True),
        sa.Index("ix_api_tokens_user_id", "user_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("users.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(sa.String(255))
    token_hash: Mapped[str] = mapped_column(sa.String(64))
    prefix: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=sa.func.now()
    )
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Signature(Base):
    """An electronic signature (21 CFR 11.50): who, when, meaning, reason, and what exactly.

    ``operation_hash`` is the SHA-256 of the canonical JSON of the signed operation, so a
    signature cannot be carried over to another operation.
    """

    __tablename__ = "signatures"
    __table_args__ = (
        sa.Index("ix_signatures_user_id", "user_id"),
        sa.Index("ix_signatures_target_type_target_id", "target_type", "target_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("users.id", ondelete="RESTRICT")
    )
    printed_name: Mapped[str] = mapped_column(sa.String(255))
    meaning: Mapped[str] = mapped_column(sa.String(64))
    reason: Mapped[str] = mapped_column(sa.Text)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    operation_hash: Mapped[str] = mapped_column(sa.String(64))
    operation: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    target_type: Mapped[str | None] = mapped_column(sa.String(64))
    target_id: Mapped[str | None] = mapped_column(sa.String(255))


class Job(Base):
    """Long work run by a worker: state, progress and log lines, polled and streamed."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index("ix_jobs_status_created_at", "status", "created_at"),
        sa.Index("ix_jobs_target_type_target_id", "target_type", "target_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(sa.String(32))
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "status"), default=JobStatus.PENDING)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(sa.Text)
    stage: Mapped[str | None] = mapped_column(sa.String(64))
    percent: Mapped[float] = mapped_column(sa.Float, default=0.0)
    bytes_done: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    bytes_total: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    eta_seconds: Mapped[float | None] = mapped_column(sa.Float)
    log: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    target_type: Mapped[str | None] = mapped_column(sa.String(64))
    target_id: Mapped[str | None] = mapped_column(sa.String(255))
    created_by: Mapped[str] = mapped_column(sa.String(255))
    created_by_id: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=sa.func.now()
    )
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(
        sa.Boolean, default=False, server_default=sa.false()
    )
    worker: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
