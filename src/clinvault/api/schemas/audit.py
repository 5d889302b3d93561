"""The audit trail: events, pages of events, and the chain check."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from clinvault.catalog.audit import event_document
from clinvault.catalog.models import AuditEvent, AuditOutcome

_EXAMPLE_EVENT: dict[str, Any] = {
    "id": "1d7c8c0a-4a1f-4f43-9a65-0c6a8a3c2b77",
    "seq": 42,
    "occurred_at": "2026-11-27T09:12:03.120000Z",
    "actor_id": "3b0f5d0e-8f55-4c39-9d0a-5a8d2f0c1e11",
    "actor_name": "Jane Doe",
    "action": "user.change_role",
    "target_type": "user",
    "target_id": "8e0e5c1d-2d7b-4f0e-9b7e-4a3c2b1a0f99",
    "outcome": "success",
    "reason": "Moved to QA",
    "request_id": "5f2b9c1e8d7a4b3c",
    "client_address": "10.0.0.7",
    "details": {"old": {"role": "SYSTEM_ADMIN"}, "new": {"role": "AUDITOR"}},
    "prev_hash": "9c1e...",
    "hash": "4be0...",
}


class AuditEventOut(BaseModel):
    """One event of the append-only, hash-chained trail. Times are UTC (``Z``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_EVENT]})

    id: uuid.UUID
    seq: int = Field(description="Position in the chain, from 1.")
    occurred_at: str = Field(description="Server time, UTC, ISO 8601 with microseconds and Z.")
    actor_id: str | None = Field(description="User id (or system / os:user@host).")
    actor_name: str = Field(description="Printed name of who acted.")
    action: str
    target_type: str | None
    target_id: str | None
    outcome: AuditOutcome
    reason: str | None
    request_id: str | None
    client_address: str | None
    details: dict[str, Any] = Field(description="Old and new values where something changed.")
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls.model_validate(event_document(event))


class AuditPage(BaseModel):
    """One page of events, newest first, and how many match in all."""

    total: int
    offset: int
    limit: int
    items: list[AuditEventOut]


class ChainCheck(BaseModel):
    """The result of walking the whole chain."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"ok": True, "events_checked": 1234, "first_bad_seq": None, "problem": None}
            ]
        }
    )

    ok: bool
    events_checked: int
    first_bad_seq: int | None = Field(description="Where the chain first breaks.")
    problem: str | None
    checked_at: datetime | None = None
