"""Restore drills and scheduled verification: a good backup passes and leaves no sandbox; a
corrupted one fails, is recorded and notified."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from clinvault.catalog.models import (
    AuditOutcome,
    Backup,
    BackupStatus,
    BackupType,
    Job,
    JobStatus,
    RestoreOperation,
)
from clinvault.engine import bundle
from clinvault.engine.dbrestore import databases_with_prefix
from clinvault.services.actor import Actor
from clinvault.services.backup import BackupRequest, BackupService
from clinvault.services.context import ServiceContext
from clinvault.services.drills import DRILL_KIND, VERIFY_KIND, DrillService, check_history
from clinvault.services.scheduler import Scheduler
from tests.schedule.conftest import (
    QUIET,
    SmtpSink,
    WebhookSink,
    audit_events,
    notify_settings,
)
from tests.services.conftest import Platform

ADMIN = Actor("u-1", "Ada Admin")


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))


def _sandboxes(platform: Platform) -> list[str]:
    return databases_with_prefix(platform.conn, f"{platform.conn.database}__drill_")


@pytest.mark.pg
def test_a_drill_passes_on_a_good_backup_and_fails_and_notifies_on_a_corrupted_one(
    platform: Platform, smtp_sink: SmtpSink, webhook_sink: WebhookSink
) -> None:
    ctx = platform.context(**QUIET, **notify_settings(smtp_sink, webhook_sink))
    good = BackupService(ctx).create(BackupRequest(BackupType.FULL), ADMIN)
    drills = DrillService(ctx)

    passed = drills.run_drill(ADMIN)

    assert passed.ok and passed.status == "passed", passed.to_json()
    (item,) = passed.items
    assert item.backup_id == str(good.id) and item.status == "passed"
    assert item.detail["validation"]["ok"] is True
    assert item.detail["validation"]["tables"] > 0 and item.detail["validation"]["files"] > 0
    assert item.detail["sandbox_dropped"] is True
    assert _sandboxes(platform) == []
    assert not (platform.home / "drills").exists() or not any((platform.home / "drills").iterdir())
    with ctx.catalog.session() as session:
        op = session.scalars(sa.select(RestoreOperation)).one()
        assert op.target_database == item.detail["sandbox_database"]
        assert session.get_one(Backup, good.id).metadata_["drill"]["status"] == "passed"
    assert webhook_sink.hooks == []

    bad = BackupService(ctx).create(BackupRequest(BackupType.DATABASE), ADMIN)
    _flip_byte(platform.home / "store" / bundle.object_key(str(bad.id), "database.dump.zst"))

    failed = drills.run_drill(ADMIN)

    assert not failed.ok and failed.status == "failed"
    results = {i.backup_id: i for i in failed.items}
    assert results[str(bad.id)].status == "failed"
    assert any("database.dump.zst" in p for p in results[str(bad.id)].problems)
    assert results[str(good.id)].status == "passed"  # the random older one: the only other
    assert _sandboxes(platform) == []
    with ctx.catalog.session() as session:
        job = session.get_one(Job, uuid.UUID(str(failed.job_id)))
    assert job.kind == DRILL_KIND and job.status is JobStatus.FAILED
    assert job.result is not None and job.result["status"] == "failed"
    assert check_history(ctx, kind=DRILL_KIND)[0].id == job.id
    (event,) = [e for e in audit_events(ctx, "drill.run") if e.outcome is AuditOutcome.FAILURE]
    assert event.target_id == str(job.id)

    hooks = [json.loads(h.body) for h in webhook_sink.hooks]
    assert [h["event"] for h in hooks] == ["drill.failed"]
    assert hooks[0]["details"]["backups"][0]["backup_id"] == str(bad.id)
    assert len(smtp_sink.mails) == 1 and bad.name in smtp_sink.mails[0].message["Subject"]


def _fake_completed(ctx: ServiceContext, name: str, when: datetime) -> uuid.UUID:
    """A catalog row whose bundle is not in storage: verification must fail on it."""
    backup_id = uuid.uuid4()
    with ctx.catalog.session() as session:
        session.add(
            Backup(
                id=backup_id,
                name=name,
                type=BackupType.FULL,
                status=BackupStatus.COMPLETED,
                compression="zstd",
                compression_level=3,
                created_by="test",
                created_at=when,
                completed_at=when,
                checksum="0" * 64,
            )
        )
    return backup_id


def test_scheduled_verification_runs_once_per_cron_period_and_notifies_failures(
    make_ctx: Callable[..., ServiceContext], smtp_sink: SmtpSink, webhook_sink: WebhookSink
) -> None:
    ctx = make_ctx(**notify_settings(smtp_sink, webhook_sink), verify_cron="0 3 * * *")
    first_backup = datetime(2025, 5, 1, 12, tzinfo=UTC)
    missing = _fake_completed(ctx, "lost-bundle", first_backup)
    scheduler = Scheduler(ctx, background_checks=False)

    assert scheduler.tick(datetime(2025, 5, 2, 2, 59, tzinfo=UTC)).checks == []
    assert scheduler.tick(datetime(2025, 5, 2, 3, 0, tzinfo=UTC)).checks == [VERIFY_KIND]
    assert scheduler.tick(datetime(2025, 5, 2, 3, 1, tzinfo=UTC)).checks == []

    (job,) = check_history(ctx)
    assert job.kind == VERIFY_KIND and job.status is JobStatus.FAILED
    assert job.params == {"scheduled": True, "cron": "0 3 * * *"}
    assert job.result is not None and job.result["items"][0]["backup_id"] == str(missing)
    with ctx.catalog.session() as session:
        assert session.get_one(Backup, missing).verify_status == "failed"
    hooks = [json.loads(h.body) for h in webhook_sink.hooks]
    assert [h["event"] for h in hooks] == ["verify.failed"]
    assert "lost-bundle" in hooks[0]["subject"]


def test_a_drill_with_no_backup_is_skipped_not_failed(ctx: ServiceContext) -> None:
    report = DrillService(ctx).run_drill(ADMIN)
    assert report.ok and report.status == "skipped" and report.items == []
    (job,) = check_history(ctx)
    assert job.status is JobStatus.COMPLETED
    assert job.finished_at is not None
    assert job.finished_at - job.started_at < timedelta(seconds=30)  # type: ignore[operator]
