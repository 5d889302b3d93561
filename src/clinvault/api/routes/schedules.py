"""Schedules, retention, drills and notifications; and the scheduler's place in the app.

Readers (SYSTEM_ADMIN, AUDITOR) may list schedules, preview run times and read drill
results; every change is SYSTEM_ADMIN only and audited with old and new values. A real
retention run deletes backups, so, like any deletion, it needs an electronic signature.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Final

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response, status

from clinvault.api.deps import ContextDep, client_address, request_id
from clinvault.api.routes.backups import DELETE_MEANING, require_signature
from clinvault.api.schemas.schedules import (
    CheckOut,
    CheckRunIn,
    NotificationTestOut,
    PreviewOut,
    RetentionOut,
    RetentionRunIn,
    ScheduleIn,
    ScheduleOut,
    ScheduleUpdateIn,
)
from clinvault.api.security import AdminDep, ReaderDep
from clinvault.catalog.models import BackupSchedule
from clinvault.errors import NotFoundError
from clinvault.services.context import ServiceContext
from clinvault.services.cron import zone
from clinvault.services.drills import DRILL_KIND, VERIFY_KIND, check_history, start_check
from clinvault.services.jobs import JobService
from clinvault.services.notify import Notifier
from clinvault.services.retention import cleanup_old_backups
from clinvault.services.scheduler import Scheduler
from clinvault.services.schedules import ScheduleService, ScheduleSpec, preview_runs

router = APIRouter(tags=["schedules"])

_CHECK_KINDS: Final = {"drill": DRILL_KIND, "verify": VERIFY_KIND}


def install_scheduler(app: FastAPI, ctx: ServiceContext) -> None:
    """Run the scheduler while the app is up (unless ``scheduler_enabled`` is false)."""
    if not ctx.settings.scheduler_enabled:
        return
    scheduler = Scheduler(ctx)
    app.state.scheduler = scheduler
    app.state.startup_hooks.append(scheduler.start)
    app.state.shutdown_hooks.append(scheduler.stop)


def get_schedule_or_404(
    schedule_id: Annotated[uuid.UUID, Path(description="The schedule's id.")], ctx: ContextDep
) -> BackupSchedule:
    """The schedule named in the path, or 404."""
    return ScheduleService(ctx).get(schedule_id)


ScheduleDep = Annotated[BackupSchedule, Depends(get_schedule_or_404)]


def _origin(request: Request) -> dict[str, str | None]:
    return {"request_id": request_id(request), "client_address": client_address(request)}


def _preview(expression: str, timezone: str, count: int) -> PreviewOut:
    runs = preview_runs(expression, timezone, datetime.now(UTC), count)
    tz = zone(timezone)
    return PreviewOut(
        cron_expression=expression,
        timezone=timezone,
        runs=runs,
        runs_local=[r.astimezone(tz).isoformat() for r in runs],
    )


# --- schedules ---------------------------------------------------------------------------------


@router.get("/backup/schedules", summary="List backup schedules")
def list_schedules(_: ReaderDep, ctx: ContextDep) -> list[ScheduleOut]:
    return [ScheduleOut.of(row) for row in ScheduleService(ctx).list_schedules()]


@router.post(
    "/backup/schedules",
    status_code=status.HTTP_201_CREATED,
    summary="Create a backup schedule",
    responses={409: {"description": "A schedule with this name exists"}},
)
def create_schedule(
    principal: AdminDep, body: ScheduleIn, ctx: ContextDep, request: Request
) -> ScheduleOut:
    spec = ScheduleSpec(
        name=body.name,
        backup_type=body.backup_type,
        cron_expression=body.cron_expression,
        timezone=body.timezone,
        retention_days=body.retention_days,
        keep_rules=body.keep_rules.rules() if body.keep_rules else None,
        scope=body.scope,
        scope_ids=tuple(body.scope_ids),
        compression=body.compression,
        compression_level=body.compression_level,
        is_active=body.is_active,
    )
    row = ScheduleService(ctx).create(spec, principal.actor(), **_origin(request))
    return ScheduleOut.of(row)


@router.get("/backup/schedules/preview", summary="Next run times of a cron expression")
def preview_expression(
    _: ReaderDep,
    cron: Annotated[str, Query(min_length=1, max_length=255, description="Cron expression.")],
    timezone: Annotated[str, Query(max_length=64, description="IANA time zone.")] = "UTC",
    count: Annotated[int, Query(ge=1, le=50)] = 5,
) -> PreviewOut:
    """For the schedule dialog: check an expression and show when it would run."""
    return _preview(cron, timezone, count)


@router.get("/backup/schedules/{schedule_id}", summary="One backup schedule")
def get_schedule(_: ReaderDep, schedule: ScheduleDep) -> ScheduleOut:
    return ScheduleOut.of(schedule)


@router.put("/backup/schedules/{schedule_id}", summary="Change a backup schedule")
def update_schedule(
    principal: AdminDep,
    schedule: ScheduleDep,
    body: ScheduleUpdateIn,
    ctx: ContextDep,
    request: Request,
) -> ScheduleOut:
    """Change the fields sent; the next run is recomputed when the timing changes."""
    row = ScheduleService(ctx).update(
        schedule.id, body.changes(), principal.actor(), **_origin(request)
    )
    return ScheduleOut.of(row)


@router.delete(
    "/backup/schedules/{schedule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a backup schedule",
    responses={409: {"description": "A run of the schedule is in progress"}},
)
def delete_schedule(
    principal: AdminDep, schedule: ScheduleDep, ctx: ContextDep, request: Request
) -> Response:
    """Its backups stay, no longer bound to its retention rules."""
    ScheduleService(ctx).delete(schedule.id, principal.actor(), **_origin(request))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/backup/schedules/{schedule_id}/toggle", summary="Pause or resume a schedule")
def toggle_schedule(
    principal: AdminDep,
    schedule: ScheduleDep,
    ctx: ContextDep,
    request: Request,
    active: Annotated[
        bool | None, Query(description="Set active or paused; flips when not given.")
    ] = None,
) -> ScheduleOut:
    row = ScheduleService(ctx).toggle(
        schedule.id, principal.actor(), active=active, **_origin(request)
    )
    return ScheduleOut.of(row)


@router.get("/backup/schedules/{schedule_id}/preview", summary="Next run times of a schedule")
def preview_schedule(
    _: ReaderDep,
    schedule: ScheduleDep,
    count: Annotated[int, Query(ge=1, le=50)] = 5,
) -> PreviewOut:
    return _preview(schedule.cron_expression, schedule.timezone, count)


# --- retention ---------------------------------------------------------------------------------


@router.post(
    "/retention/run",
    summary="Apply retention (dry run by default)",
    responses={403: {"description": "A real run without a valid signature"}},
)
def run_retention(
    principal: AdminDep, body: RetentionRunIn, ctx: ContextDep, request: Request
) -> RetentionOut:
    """Every backup with its decision and reasons. A real run (``dry_run: false``) deletes
    and purges what the rules let go, each deletion audited; it must be signed."""
    if body.schedule_id is not None:
        ScheduleService(ctx).get(body.schedule_id)
    if not body.dry_run:
        operation = {
            "action": "retention.run",
            "target_type": "schedule" if body.schedule_id else "retention",
            "target_id": str(body.schedule_id) if body.schedule_id else "all",
            "dry_run": False,
        }
        require_signature(
            ctx,
            principal,
            request,
            signature=body.signature,
            signature_id=body.signature_id,
            operation=operation,
            meaning=DELETE_MEANING,
        )
    report = cleanup_old_backups(
        ctx, dry_run=body.dry_run, schedule_id=body.schedule_id, actor=principal.actor()
    )
    return RetentionOut.of(report.to_json())


# --- drills and verification -------------------------------------------------------------------


@router.get("/drills", summary="Restore drills and integrity verifications")
def list_drills(
    _: ReaderDep,
    ctx: ContextDep,
    kind: Annotated[str | None, Query(pattern="^(drill|verify)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[CheckOut]:
    """Newest first, with each backup's result (restored and validated, or re-read)."""
    jobs = check_history(ctx, kind=_CHECK_KINDS[kind] if kind else None, limit=limit)
    return [CheckOut.of(job) for job in jobs]


@router.post(
    "/drills",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start a restore drill or a verification now",
    responses={409: {"description": "One of this kind is already running"}},
)
def start_drill(
    principal: AdminDep, body: CheckRunIn, ctx: ContextDep, response: Response
) -> CheckOut:
    job = start_check(ctx, _CHECK_KINDS[body.kind], principal.actor())
    response.headers["Location"] = f"/api/v1/drills/{job.id}"
    return CheckOut.of(job)


@router.get("/drills/{check_id}", summary="One drill or verification run")
def get_drill(
    _: ReaderDep,
    ctx: ContextDep,
    check_id: Annotated[uuid.UUID, Path(description="The run's (job) id.")],
) -> CheckOut:
    job = JobService(ctx).get(check_id)
    if job.kind not in _CHECK_KINDS.values():
        raise NotFoundError(f"no drill or verification with id {check_id}")
    return CheckOut.of(job)


# --- notifications -----------------------------------------------------------------------------


@router.post(
    "/notifications/test",
    summary="Send a test notification to every channel",
    responses={422: {"description": "No channel is configured"}},
)
def test_notifications(
    principal: AdminDep, ctx: ContextDep, request: Request
) -> NotificationTestOut:
    deliveries = Notifier(ctx.settings, audit=ctx.audit).test_send(
        principal.actor(), **_origin(request)
    )
    return NotificationTestOut.model_validate(
        {"ok": all(d.ok for d in deliveries), "deliveries": [d.to_json() for d in deliveries]}
    )
