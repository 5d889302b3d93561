"""End to end on the real sample platform: a schedule fires a backup job, the run is
followed to its end, retention applies the schedule's rules, and a failed run is notified."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from clinvault.catalog.models import Backup, BackupStatus, Job, JobStatus
from clinvault.engine import bundle
from clinvault.services.actor import Actor
from clinvault.services.jobs import JobRunner
from clinvault.services.scheduler import Scheduler
from clinvault.services.schedules import ScheduleService, ScheduleSpec
from tests.schedule.conftest import (
    QUIET,
    SmtpSink,
    WebhookSink,
    audit_events,
    notify_settings,
    schedule_row,
)
from tests.services.conftest import Platform

pytestmark = pytest.mark.pg

START = datetime(2025, 4, 7, 8, 0, tzinfo=UTC)
ADMIN = Actor("u-1", "Ada Admin")


def _run_queued_job(runner: JobRunner) -> Job:
    job = runner.claim()
    assert job is not None
    runner.run(job)
    with runner.ctx.catalog.session() as session:
        return session.get_one(Job, job.id)


def test_scheduled_runs_back_up_and_apply_retention(platform: Platform) -> None:
    ctx = platform.context(**QUIET)
    schedule = ScheduleService(ctx, clock=lambda: START).create(
        ScheduleSpec("hourly-full", "full", "0 * * * *", keep_rules={"last": 1}), ADMIN
    )
    scheduler = Scheduler(ctx)
    runner = JobRunner(ctx, workers=0)
    backups = []
    for hour in (1, 2):
        fire_at = START + timedelta(hours=hour)
        assert scheduler.tick(fire_at).fired == ["hourly-full"]
        job = _run_queued_job(runner)
        assert job.status is JobStatus.COMPLETED, job.error
        settled = scheduler.tick(fire_at + timedelta(seconds=15))
        assert settled.settled == ["hourly-full"] and settled.errors == []
        assert schedule_row(ctx, "hourly-full").last_status == "completed"
        with ctx.catalog.session() as session:
            assert job.result is not None
            backups.append(session.get_one(Backup, uuid.UUID(job.result["backup_id"])))

    first, second = backups
    assert first.status is BackupStatus.COMPLETED and first.schedule_id == schedule.id
    assert first.name == f"hourly-full-{(START + timedelta(hours=1)):%Y%m%d-%H%M%S}"
    with ctx.catalog.session() as session:
        rows = {r.id: r for r in session.scalars(sa.select(Backup))}
    assert rows[first.id].deleted_at is not None and rows[first.id].file_path is None
    assert list(ctx.storage.list(bundle.bundle_prefix(str(first.id)))) == []
    assert rows[second.id].deleted_at is None and rows[second.id].schedule_id == schedule.id
    assert ctx.storage.exists(bundle.manifest_key(str(second.id)))
    deletions = audit_events(ctx, "backup.delete")
    assert [(e.target_id, e.actor_id) for e in deletions] == [(str(first.id), "system")]
    runs = audit_events(ctx, "schedule.run")
    assert [e.details["status"] for e in runs] == ["completed", "completed"]
    assert ctx.audit.verify().ok


def test_a_failed_scheduled_run_is_notified_once(
    platform: Platform, smtp_sink: SmtpSink, webhook_sink: WebhookSink
) -> None:
    ctx = platform.context(**QUIET, **notify_settings(smtp_sink, webhook_sink))
    ScheduleService(ctx, clock=lambda: START).create(
        ScheduleSpec("one-study", "files", "0 * * * *", scope="study", scope_ids=["NO-SUCH"]),
        ADMIN,
    )
    scheduler = Scheduler(ctx)
    runner = JobRunner(ctx, workers=0)
    scheduler.tick(START + timedelta(hours=1))
    job = _run_queued_job(runner)
    assert job.status is JobStatus.FAILED

    for seconds in (15, 30, 45):
        scheduler.tick(START + timedelta(hours=1, seconds=seconds))

    assert schedule_row(ctx, "one-study").last_status == "failed"
    hooks = [json.loads(h.body) for h in webhook_sink.hooks]
    assert [h["event"] for h in hooks] == ["backup.failed"]
    assert hooks[0]["details"]["schedule"] == "one-study"
    assert "NO-SUCH" in hooks[0]["summary"]
    assert len(smtp_sink.mails) == 1
    assert "Scheduled backup failed: one-study" in smtp_sink.mails[0].message["Subject"]
