"""Schedules, retention runs, drills and notification tests: what is sent and read back."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clinvault.api.security import SignatureIn
from clinvault.catalog.models import BackupSchedule, BackupType, Job, Scope
from clinvault.services.schedules import schedule_to_json

_SCHEDULE_EXAMPLE: dict[str, Any] = {
    "id": "1c9e7f0e-2b8a-4d7e-9a41-3f5b2c6d8e10",
    "name": "nightly-full",
    "backup_type": "full",
    "scope": "all",
    "scope_ids": [],
    "is_active": True,
    "cron_expression": "0 2 * * *",
    "timezone": "Europe/Berlin",
    "retention_days": 30,
    "keep_rules": {"daily": 7, "weekly": 4, "monthly": 12},
    "compression": "zstd",
    "compression_level": None,
    "last_run_at": "2026-11-27T01:00:00+00:00",
    "next_run_at": "2026-11-28T01:00:00+00:00",
    "last_status": "completed",
    "created_by": "Jane Doe",
    "created_at": "2026-11-01T08:00:00+00:00",
    "updated_at": "2026-11-01T08:00:00+00:00",
}


class KeepRules(BaseModel):
    """restic-style keep rules: for each, how many (0 or absent: not used)."""

    model_config = ConfigDict(extra="forbid")

    last: int | None = Field(default=None, ge=0, le=100_000, description="The N newest.")
    daily: int | None = Field(default=None, ge=0, le=100_000, description="Newest per day.")
    weekly: int | None = Field(default=None, ge=0, le=100_000, description="Newest per ISO week.")
    monthly: int | None = Field(default=None, ge=0, le=100_000, description="Newest per month.")
    yearly: int | None = Field(default=None, ge=0, le=100_000, description="Newest per year.")

    def rules(self) -> dict[str, int]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ScheduleIn(BaseModel):
    """A new schedule. Times are read in ``timezone``; ``next_run_at`` is answered in UTC."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "nightly-full",
                    "backup_type": "full",
                    "cron_expression": "0 2 * * *",
                    "timezone": "Europe/Berlin",
                    "retention_days": 30,
                    "keep_rules": {"daily": 7, "weekly": 4, "monthly": 12},
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=255)
    backup_type: BackupType
    cron_expression: str = Field(
        min_length=1,
        max_length=255,
        description="Five fields (minute hour day-of-month month day-of-week) or a macro such "
        "as @daily.",
    )
    timezone: str = Field(default="UTC", max_length=64, description="IANA name.")
    retention_days: int | None = Field(default=None, ge=1, le=36_600)
    keep_rules: KeepRules | None = None
    scope: Scope = Scope.ALL
    scope_ids: list[str] = Field(default_factory=list, max_length=1000)
    compression: Literal["zstd", "gzip"] | None = None
    compression_level: int | None = None
    is_active: bool = True


class ScheduleUpdateIn(BaseModel):
    """Fields to change; those not sent stay as they are (``null`` clears a nullable one)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"cron_expression": "30 1 * * *", "retention_days": 14}]},
    )

    name: str | None = Field(default=None, min_length=1, max_length=255)
    backup_type: BackupType | None = None
    cron_expression: str | None = Field(default=None, min_length=1, max_length=255)
    timezone: str | None = Field(default=None, max_length=64)
    retention_days: int | None = Field(default=None, ge=1, le=36_600)
    keep_rules: KeepRules | None = None
    scope: Scope | None = None
    scope_ids: list[str] | None = Field(default=None, max_length=1000)
    compression: Literal["zstd", "gzip"] | None = None
    compression_level: int | None = None
    is_active: bool | None = None

    def changes(self) -> dict[str, Any]:
        sent = self.model_dump(exclude_unset=True)
        not_nullable = ("name", "backup_type", "cron_expression", "timezone", "scope", "is_active")
        for key in not_nullable:
            if key in sent and sent[key] is None:
                sent.pop(key)
        if "keep_rules" in sent:
            sent["keep_rules"] = self.keep_rules.rules() if self.keep_rules else None
        if sent.get("scope_ids") is None:
            sent.pop("scope_ids", None)
        return sent


class ScheduleOut(BaseModel):
    """A schedule, with its last and next run (UTC)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_SCHEDULE_EXAMPLE]})

    id: uuid.UUID
    name: str
    backup_type: BackupType
    scope: Scope
    scope_ids: list[str]
    is_active: bool
    cron_expression: str
    timezone: str
    retention_days: int | None
    keep_rules: dict[str, int]
    compression: str
    compression_level: int | None
    last_run_at: datetime | None
    next_run_at: datetime | None = Field(description="UTC; null while paused.")
    last_status: str | None = Field(
        description="running, completed, failed, cancelled or skipped (previous run still going)."
    )
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: BackupSchedule) -> ScheduleOut:
        return cls.model_validate(schedule_to_json(row))


class PreviewOut(BaseModel):
    """The next run times of a cron expression in a time zone."""

    cron_expression: str
    timezone: str
    runs: list[datetime] = Field(description="UTC.")
    runs_local: list[str] = Field(description="The same instants as wall-clock times in the zone.")


class RetentionRunIn(BaseModel):
    """A retention run: ``dry_run`` (the default) only reports. A real run deletes backups,
    so it needs an electronic signature (meaning ``Approved deletion``)."""

    model_config = ConfigDict(extra="forbid")

    dry_run: bool = True
    schedule_id: uuid.UUID | None = Field(default=None, description="Only this schedule's backups.")
    signature: SignatureIn | None = None
    signature_id: uuid.UUID | None = None


class DecisionOut(BaseModel):
    backup_id: uuid.UUID
    name: str
    type: str
    created_at: datetime
    group: str = Field(description="schedule:<name>, safety or manual.")
    action: Literal["keep", "delete"]
    reasons: list[str] = Field(description="Every rule that keeps it, or why it goes.")


class RetentionOut(BaseModel):
    dry_run: bool
    ran_at: datetime
    schedule_id: uuid.UUID | None
    deleted: list[uuid.UUID] = Field(description="Deleted (or, in a dry run, to be deleted).")
    kept: int
    decisions: list[DecisionOut]
    errors: list[str]

    @classmethod
    def of(cls, data: dict[str, Any]) -> RetentionOut:
        deleted = data.get("deleted", data.get("would_delete", []))
        return cls.model_validate({**data, "deleted": deleted})


class CheckRunIn(BaseModel):
    kind: Literal["drill", "verify"] = Field(
        default="drill", description="A restore drill, or an integrity verification."
    )


class CheckOut(BaseModel):
    """One drill or verification run and its per-backup results."""

    id: uuid.UUID
    kind: str = Field(description="drill.run or verify.run.")
    status: str = Field(description="running, completed or failed (the job's state).")
    outcome: str | None = Field(description="passed, failed or skipped, once finished.")
    created_by: str
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    result: dict[str, Any] | None

    @classmethod
    def of(cls, job: Job) -> CheckOut:
        result = job.result or None
        return cls(
            id=job.id,
            kind=job.kind,
            status=job.status.value,
            outcome=(result or {}).get("status"),
            created_by=job.created_by,
            started_at=job.started_at,
            finished_at=job.finished_at,
            error=job.error,
            result=result,
        )


class DeliveryOut(BaseModel):
    channel: Literal["email", "webhook"]
    target: str = Field(description="Recipients and server, or the webhook's scheme and host.")
    ok: bool
    error: str | None


class NotificationTestOut(BaseModel):
    ok: bool
    deliveries: list[DeliveryOut]
