"""The catalog: what backups, schedules, restores and audit events exist (SQLAlchemy + Alembic).

It lives outside the database being backed up, so that restoring the platform never rolls back
the catalog or its audit trail: an SQLite file by default, PostgreSQL when shared.
"""

from __future__ import annotations

from clinvault.catalog.db import (
    Catalog,
    create_catalog_engine,
    current_revision,
    display_url,
    downgrade,
    head_revision,
    to_sqlalchemy_url,
    upgrade,
)
from clinvault.catalog.models import (
    ApiToken,
    AuditEvent,
    AuditOutcome,
    Backup,
    BackupSchedule,
    BackupStatus,
    BackupType,
    Base,
    Job,
    JobStatus,
    RestoreOperation,
    RestoreStatus,
    Role,
    Scope,
    Signature,
    User,
    UserSession,
)

__all__ = [
    "ApiToken",
    "AuditEvent",
    "AuditOutcome",
    "Backup",
    "BackupSchedule",
    "BackupStatus",
    "BackupType",
    "Base",
    "Catalog",
    "Job",
    "JobStatus",
    "RestoreOperation",
    "RestoreStatus",
    "Role",
    "Scope",
    "Signature",
    "User",
    "UserSession",
    "create_catalog_engine",
    "current_revision",
    "display_url",
    "downgrade",
    "head_revision",
    "to_sqlalchemy_url",
    "upgrade",
]
