"""A schedule whose previous run is still going does not start another; the skip is recorded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from clinvault.catalog.models import AuditOutcome, Backup, BackupStatus, BackupType, Job, JobStatus
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.jobs import JobService
from clinvault.services.processes import current_worker
from clinvault.services.scheduler import Scheduler
from clinvault.services.schedules import ScheduleService, ScheduleSpec
from tests.schedule.conftest import FakeLauncher, audit_events, schedule_row

START = datetime(2025, 2, 3, 9, 0, tzinfo=UTC)
ADMIN = Actor("u-1", "Ada Admin")


def _jobs(ctx: ServiceContext) -> list[Job]:
    with ctx.catalog.session() as session:
        return list(session.scalars(sa.select(Job).order_by(Job.created_at)))


def test_a_queued_run_blocks_the_next_until_it_ends(ctx: ServiceContext) -> None:
    row = ScheduleService(ctx, clock=lambda: START).create(
        ScheduleSpec("quarter-hourly", "database", "*/15 * * * *"), ADMIN
    )
    scheduler = Scheduler(ctx)  # the real launcher: a backup.create job, left queued here

    first = scheduler.tick(START + timedelta(minutes=15))
    assert first.fired == ["quarter-hourly"]
    (job,) = _jobs(ctx)
    assert job.kind == "backup.create" and job.status is JobStatus.PENDING
    assert job.params["schedule_id"] == str(row.id)
    assert job.params["type"] == "database"
    assert job.created_by == Actor.system().name
    assert schedule_row(ctx, "quarter-hourly").last_status == "running"

    second = scheduler.tick(START + timedelta(minutes=30))
    assert second.skipped == ["quarter-hourly"] and second.fired == []
    assert len(_jobs(ctx)) == 1
    skip = audit_events(ctx, "schedule.skipped")
    assert len(skip) == 1 and skip[0].outcome is AuditOutcome.FAILURE
    assert str(job.id) in skip[0].details["reason"]
    current = schedule_row(ctx, "quarter-hourly")
    assert current.last_status == "skipped"
    assert current.next_run_at == START + timedelta(minutes=45)

    JobService(ctx).cancel(job.id, ADMIN)
    third = scheduler.tick(START + timedelta(minutes=45))
    assert third.fired == ["quarter-hourly"] and third.skipped == []
    assert [j.status for j in _jobs(ctx)] == [JobStatus.CANCELLED, JobStatus.PENDING]


def test_a_backup_of_the_schedule_still_being_written_blocks_the_next(ctx: ServiceContext) -> None:
    row = ScheduleService(ctx, clock=lambda: START).create(
        ScheduleSpec("hourly", "files", "0 * * * *"), ADMIN
    )
    with ctx.catalog.session() as session:
        session.add(
            Backup(
                id=uuid.uuid4(),
                name="hourly-in-progress",
                type=BackupType.FILES,
                status=BackupStatus.IN_PROGRESS,
                compression="zstd",
                compression_level=3,
                created_by="ClinVault system",
                schedule_id=row.id,
                metadata_={"worker": current_worker()},
            )
        )
    launcher = FakeLauncher()
    scheduler = Scheduler(ctx, launcher=launcher)

    assert scheduler.tick(START + timedelta(hours=1)).skipped == ["hourly"]
    assert launcher.fired == []

    with ctx.catalog.session() as session:
        backup = session.scalars(sa.select(Backup)).one()
        backup.status = BackupStatus.COMPLETED
    assert scheduler.tick(START + timedelta(hours=2)).fired == ["hourly"]
    assert launcher.times("hourly") == [START + timedelta(hours=2)]


def test_a_backup_left_by_a_dead_process_does_not_block(ctx: ServiceContext) -> None:
    row = ScheduleService(ctx, clock=lambda: START).create(
        ScheduleSpec("hourly", "files", "0 * * * *"), ADMIN
    )
    dead = {**current_worker(), "start": "not-this-process"}
    with ctx.catalog.session() as session:
        session.add(
            Backup(
                name="left-behind",
                type=BackupType.FILES,
                status=BackupStatus.IN_PROGRESS,
                compression="zstd",
                compression_level=3,
                created_by="ClinVault system",
                schedule_id=row.id,
                metadata_={"worker": dead},
            )
        )
    launcher = FakeLauncher()

    assert Scheduler(ctx, launcher=launcher).tick(START + timedelta(hours=1)).fired == ["hourly"]
