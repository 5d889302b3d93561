"""The audit trail (21 CFR 11.10(e)): search it, check its chain, export it whole.

Readers are SYSTEM_ADMIN and AUDITOR. Times are UTC throughout; query times without a zone
are taken as UTC. An export is itself audited (``audit.export``) before it starts, and
contains its own event.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from clinvault.api.deps import ContextDep, client_address, request_id
from clinvault.api.schemas.audit import AuditEventOut, AuditPage, ChainCheck
from clinvault.api.security import ReaderDep
from clinvault.catalog.audit import format_timestamp
from clinvault.catalog.models import AuditOutcome, utcnow
from clinvault.services.audit import MAX_PAGE_SIZE, AuditFilter

router = APIRouter(prefix="/audit", tags=["audit"])

EXPORT_FORMAT = "clinvault-audit-export/1"
CSV_COLUMNS = (
    "seq",
    "occurred_at_utc",
    "actor_id",
    "actor_name",
    "action",
    "target_type",
    "target_id",
    "outcome",
    "reason",
    "request_id",
    "client_address",
    "details",
    "id",
    "prev_hash",
    "hash",
)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get("", summary="Search the audit trail")
def list_events(
    _: ReaderDep,
    ctx: ContextDep,
    actor: Annotated[str | None, Query(description="Actor id (a user id).")] = None,
    action: Annotated[
        str | None, Query(description="Exact action, or a prefix ending in * (backup.*).")
    ] = None,
    target_type: str | None = None,
    target_id: str | None = None,
    outcome: AuditOutcome | None = None,
    since: Annotated[datetime | None, Query(description="From this time (inclusive).")] = None,
    until: Annotated[datetime | None, Query(description="Before this time (exclusive).")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
) -> AuditPage:
    """Events matching every given filter, newest first, one page at a time."""
    filters = AuditFilter(
        action=action,
        actor_id=actor,
        target_type=target_type,
        target_id=target_id,
        outcome=outcome,
        since=_utc(since),
        until=_utc(until),
    )
    events = ctx.audit.list(filters, offset=offset, limit=limit)
    return AuditPage(
        total=ctx.audit.count(filters),
        offset=offset,
        limit=limit,
        items=[AuditEventOut.of(event) for event in events],
    )


@router.get("/verify", summary="Check the hash chain")
def verify(principal: ReaderDep, request: Request, ctx: ContextDep) -> ChainCheck:
    """Walk the whole trail and report where the chain first breaks, if it does."""
    report = ctx.audit.verify()
    actor = principal.actor()
    ctx.audit.record(
        "audit.verify",
        actor_id=actor.id,
        actor_name=actor.name,
        outcome=AuditOutcome.SUCCESS if report.ok else AuditOutcome.FAILURE,
        details={
            "ok": report.ok,
            "events_checked": report.events_checked,
            "first_bad_seq": report.first_bad_seq,
        },
        request_id=request_id(request),
        client_address=client_address(request),
    )
    return ChainCheck(
        ok=report.ok,
        events_checked=report.events_checked,
        first_bad_seq=report.first_bad_seq,
        problem=report.problem,
        checked_at=utcnow(),
    )


@router.get(
    "/export",
    summary="Export the whole trail (CSV or JSON)",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/csv": {}, "application/json": {}},
            "description": "Every event in seq order, times in UTC (Z), streamed.",
        }
    },
)
def export(
    principal: ReaderDep,
    request: Request,
    ctx: ContextDep,
    format_: Annotated[Literal["csv", "json"], Query(alias="format")] = "json",
) -> StreamingResponse:
    """Every event from the first to this export's own ``audit.export`` event.

    JSON carries each event's hashes, so the file can be verified on its own; CSV has one
    row per event with ``details`` as JSON, times in the ``occurred_at_utc`` column.
    """
    actor = principal.actor()
    event = ctx.audit.record(
        "audit.export",
        actor_id=actor.id,
        actor_name=actor.name,
        details={"format": format_},
        request_id=request_id(request),
        client_address=client_address(request),
    )
    events = ctx.audit.export_all(until_seq=event.seq)
    stamp = event.occurred_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    header = {
        "time_zone": "UTC",
        "format": EXPORT_FORMAT,
        "exported_at": format_timestamp(event.occurred_at),
        "exported_by": {"id": actor.id, "name": actor.name},
        "last_seq": event.seq,
    }
    body = _csv_lines(events) if format_ == "csv" else _json_chunks(header, events)
    return StreamingResponse(
        body,
        media_type="text/csv; charset=utf-8" if format_ == "csv" else "application/json",
        headers={
            "Content-Disposition": f'attachment; filename="clinvault-audit-{stamp}.{format_}"',
            "Cache-Control": "no-store",
            "X-Time-Zone": "UTC",
        },
    )


def _csv_lines(events: Iterable[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def take() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield take()
    for event in events:
        row = {**event, "occurred_at_utc": event["occurred_at"]}
        row["details"] = json.dumps(event["details"], sort_keys=True, ensure_ascii=False)
        writer.writerow(["" if row[name] is None else row[name] for name in CSV_COLUMNS])
        yield take()


def _json_chunks(header: dict[str, Any], events: Iterable[dict[str, Any]]) -> Iterator[str]:
    yield json.dumps(header, ensure_ascii=False)[:-1] + ', "events": ['
    count = 0
    for event in events:
        yield ("," if count else "") + "\n" + json.dumps(event, ensure_ascii=False)
        count += 1
    yield f'\n], "count": {count}}}\n'
