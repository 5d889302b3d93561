"""Jobs: long work (backups, verifications, restores) followed by id, and its events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from clinvault.catalog.models import Job, JobStatus
from clinvault.services.jobs import job_to_json

_JOB_ID = "6a1f0c55-0b7e-4c7e-9d55-1f0f6a3b2c10"
_EXAMPLE_JOB: dict[str, Any] = {
    "id": _JOB_ID,
    "kind": "backup.create",
    "status": "running",
    "params": {"type": "full", "scope": "all", "name": "full-20261127-031500"},
    "result": None,
    "error": None,
    "stage": "database+files",
    "percent": 42.5,
    "bytes_done": 440401920,
    "bytes_total": 1036255232,
    "eta_seconds": 12.4,
    "target_type": None,
    "target_id": None,
    "created_by": "Jane Doe",
    "created_at": "2026-11-27T03:15:00+00:00",
    "started_at": "2026-11-27T03:15:00.250000+00:00",
    "finished_at": None,
    "heartbeat_at": "2026-11-27T03:15:09+00:00",
    "cancel_requested": False,
    "log": [
        {"seq": 1, "at": "2026-11-27T03:15:00+00:00", "level": "info", "message": "queued"},
        {"seq": 2, "at": "2026-11-27T03:15:00+00:00", "level": "info", "message": "started"},
    ],
}


class LogLine(BaseModel):
    seq: int = Field(description="Line number, from 1; an SSE `log` event's id.")
    at: str = Field(description="UTC, ISO 8601.")
    level: str = Field(description="`info` or `error`.")
    message: str


class JobOut(BaseModel):
    """A job: its state, progress, result or error, and its last 500 log lines."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_JOB]})

    id: uuid.UUID
    kind: str = Field(description="`backup.create`, `backup.verify` or `restore.execute`.")
    status: JobStatus
    params: dict[str, Any] = Field(description="The request, as checked when submitted.")
    result: dict[str, Any] | None = Field(description="What a completed job produced.")
    error: str | None = Field(description="Why a job failed.")
    stage: str | None
    percent: float = Field(ge=0, le=100)
    bytes_done: int
    bytes_total: int
    eta_seconds: float | None
    target_type: str | None = Field(description="`backup` or `restore`, once known.")
    target_id: str | None
    created_by: str = Field(description="Printed name of who submitted the job.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    cancel_requested: bool
    log: list[LogLine] = Field(default_factory=list)

    @classmethod
    def of(cls, job: Job, *, with_log: bool = True) -> JobOut:
        return cls.model_validate(job_to_json(job, with_log=with_log))


class JobPage(BaseModel):
    """One page of jobs, newest first (without their log lines)."""

    items: list[JobOut]
    total: int
    page: int
    page_size: int


class JobAccepted(BaseModel):
    """Work accepted: follow it at ``links.job``, or stream it from ``links.events``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": _JOB_ID,
                    "kind": "backup.create",
                    "status": "pending",
                    "links": {
                        "job": f"/api/v1/jobs/{_JOB_ID}",
                        "events": f"/api/v1/jobs/{_JOB_ID}/events",
                        "cancel": f"/api/v1/jobs/{_JOB_ID}/cancel",
                    },
                }
            ]
        }
    )

    job_id: uuid.UUID
    kind: str
    status: JobStatus
    signature_id: uuid.UUID | None = Field(
        default=None, description="The signature that approved the work, where one was needed."
    )
    links: dict[str, str]

    @classmethod
    def of(cls, job: Job, base: str, signature_id: uuid.UUID | None = None) -> JobAccepted:
        """``base`` is the job's own path (``/api/v1/jobs/<id>``)."""
        return cls(
            job_id=job.id,
            kind=job.kind,
            status=job.status,
            signature_id=signature_id,
            links={"job": base, "events": f"{base}/events", "cancel": f"{base}/cancel"},
        )
