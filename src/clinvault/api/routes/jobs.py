"""Jobs: list them, read one, stream its progress as server-sent events, cancel it.

The event stream (``text/event-stream``) polls the catalog twice a second, so it works the
same whichever instance runs the job. Events:

* ``progress`` — ``{status, stage, percent, bytes_done, bytes_total, eta_seconds}``, sent
  when any of it changes;
* ``log`` — one log line ``{seq, at, level, message}``;
* ``done`` — the job's end ``{status, result, error}``; the stream then closes.

Every event's ``id`` is the number of the last log line sent, so a client reconnecting with
``Last-Event-ID`` gets only the lines it missed (and the current progress). A comment line
keeps idle connections open through proxies.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Header, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from clinvault.api.deps import ContextDep, client_address, request_id
from clinvault.api.schemas.jobs import JobOut, JobPage
from clinvault.api.security import AdminDep
from clinvault.catalog.models import Job, JobStatus
from clinvault.services.jobs import JobService
from clinvault.services.stats import printable

router = APIRouter(prefix="/jobs", tags=["jobs"])

POLL_SECONDS: Final = 0.5
KEEPALIVE_SECONDS: Final = 15.0
RETRY_MS: Final = 2000


def get_job_or_404(
    job_id: Annotated[uuid.UUID, Path(description="The job's id.")], ctx: ContextDep
) -> Job:
    """The job named in the path, or 404."""
    return JobService(ctx).get(job_id)


JobDep = Annotated[Job, Depends(get_job_or_404)]


@router.get("", summary="List jobs")
def list_jobs(
    _: AdminDep,
    ctx: ContextDep,
    status: Annotated[JobStatus | None, Query(description="Only this status.")] = None,
    kind: Annotated[str | None, Query(max_length=32, description="Only this kind.")] = None,
    target_id: Annotated[str | None, Query(max_length=255, description="Backup id.")] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobPage:
    """Jobs newest first, without their log lines."""
    rows, total = JobService(ctx).list(
        status=status,
        kind=kind,
        target_id=target_id,
        offset=(page - 1) * page_size,
        limit=page_size,
    )
    items = [JobOut.of(job, with_log=False) for job in rows]
    return JobPage(items=items, total=total, page=page, page_size=page_size)


@router.get("/{job_id}", summary="One job")
def get_job(_: AdminDep, job: JobDep) -> JobOut:
    """State, progress, result or error, and the last 500 log lines."""
    return JobOut.of(job)


@router.get(
    "/{job_id}/events",
    summary="Stream a job's progress (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The event stream."}},
)
async def job_events(
    _: AdminDep,
    job: JobDep,
    ctx: ContextDep,
    last_event_id: Annotated[
        str | None, Header(description="Resume after this event id (a log line number).")
    ] = None,
) -> StreamingResponse:
    """``progress``, ``log`` and a final ``done`` event; closes when the job ends."""
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    stream = _events(JobService(ctx), job.id, min(after, 2**62))
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, summary="Cancel a job")
def cancel_job(principal: AdminDep, job: JobDep, ctx: ContextDep, request: Request) -> JobOut:
    """A pending job is cancelled at once; a running one is asked to stop and cleans up its
    partial work (watch for its ``done`` event). 409 if it has already finished."""
    cancelled = JobService(ctx).cancel(
        job.id,
        principal.actor(),
        request_id=request_id(request),
        client_address=client_address(request),
    )
    return JobOut.of(cancelled)


def _event(name: str, data: dict[str, Any], event_id: int) -> str:
    text = json.dumps(printable(data), separators=(",", ":"))
    return f"id: {event_id}\nevent: {name}\ndata: {text}\n\n"


def _progress(job: Job) -> dict[str, Any]:
    return {
        "status": job.status.value,
        "stage": job.stage,
        "percent": job.percent,
        "bytes_done": job.bytes_done,
        "bytes_total": job.bytes_total,
        "eta_seconds": job.eta_seconds,
    }


async def _events(service: JobService, job_id: uuid.UUID, after: int) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    sent: dict[str, Any] | None = None
    quiet_since = time.monotonic()
    while True:
        update = await run_in_threadpool(service.events, job_id, after)
        chunks = []
        for line in update.lines:
            after = int(line["seq"])
            chunks.append(_event("log", line, after))
        progress = _progress(update.job)
        if progress != sent:
            sent = progress
            chunks.append(_event("progress", progress, after))
        if update.finished:
            job = update.job
            end = {"status": job.status.value, "result": job.result, "error": job.error}
            chunks.append(_event("done", end, after))
            yield "".join(chunks)
            return
        if chunks:
            quiet_since = time.monotonic()
            yield "".join(chunks)
        elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_SECONDS)
