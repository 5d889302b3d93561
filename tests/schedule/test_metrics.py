"""Prometheus metrics: valid text exposition, values taken from the catalog."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from clinvault.catalog.models import Backup, BackupStatus, BackupType, Job, JobStatus
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.drills import DRILL_KIND
from clinvault.services.metrics import render_metrics
from clinvault.services.schedules import ScheduleService, ScheduleSpec

_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
SAMPLE = re.compile(
    rf"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{{(?P<labels>{_LABEL}(?:,{_LABEL})*)\}})? "
    r"(?P<value>[-+]?(\d+(\.\d*)?([eE][-+]?\d+)?|NaN|Inf))$"
)
T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)


def _parse(text: str) -> dict[str, float]:
    """``name{labels}`` -> value; checks every line is a comment or a well-formed sample and
    that each family is declared before its samples."""
    assert text.endswith("\n")
    declared: set[str] = set()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("gauge", "counter")
            declared.add(name)
            continue
        if line.startswith("# HELP "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        assert match["name"] in declared
        key = match["name"] + (f"{{{match['labels']}}}" if match["labels"] else "")
        samples[key] = float(match["value"])
    return samples


def _backup(
    ctx: ServiceContext,
    kind: BackupType,
    status: BackupStatus,
    started: datetime,
    seconds: float,
    size: int,
) -> None:
    with ctx.catalog.session() as session:
        session.add(
            Backup(
                id=uuid.uuid4(),
                name=f"{kind.value}-{uuid.uuid4().hex[:6]}",
                type=kind,
                status=status,
                compression="zstd",
                compression_level=3,
                created_by="test",
                created_at=started,
                started_at=started,
                completed_at=started + timedelta(seconds=seconds),
                file_size_compressed=size if status is BackupStatus.COMPLETED else None,
                file_size_bytes=size * 4 if status is BackupStatus.COMPLETED else None,
            )
        )


def test_metrics_report_backups_jobs_schedules_checks_and_storage(ctx: ServiceContext) -> None:
    _backup(ctx, BackupType.FULL, BackupStatus.COMPLETED, T0, 30, 1000)
    _backup(ctx, BackupType.FULL, BackupStatus.COMPLETED, T0 + timedelta(days=1), 42.5, 2000)
    _backup(ctx, BackupType.FULL, BackupStatus.FAILED, T0 + timedelta(days=2), 5, 0)
    _backup(ctx, BackupType.DATABASE, BackupStatus.COMPLETED, T0, 10, 500)
    ScheduleService(ctx, clock=lambda: T0).create(
        ScheduleSpec('night "full"', "full", "0 2 * * *"), Actor.system()
    )
    with ctx.catalog.session() as session:
        session.add(Job(kind="backup.create", status=JobStatus.RUNNING, created_by="t"))
        session.add(Job(kind="backup.create", status=JobStatus.PENDING, created_by="t"))
        session.add(
            Job(
                kind=DRILL_KIND,
                status=JobStatus.FAILED,
                created_by="t",
                finished_at=T0,
                result={"ok": False},
            )
        )

    metrics = _parse(render_metrics(ctx))

    last = T0 + timedelta(days=1, seconds=42.5)
    assert (
        metrics['clinvault_backup_last_success_timestamp_seconds{type="full"}'] == last.timestamp()
    )
    assert metrics['clinvault_backup_last_duration_seconds{type="full"}'] == 42.5
    assert metrics['clinvault_backup_last_size_bytes{type="full"}'] == 2000
    assert metrics['clinvault_backup_last_duration_seconds{type="database"}'] == 10
    assert 'clinvault_backup_last_success_timestamp_seconds{type="files"}' not in metrics
    assert metrics['clinvault_backup_failures_total{type="full"}'] == 1
    assert metrics['clinvault_backup_failures_total{type="files"}'] == 0
    assert metrics['clinvault_backups{status="completed",type="full"}'] == 2
    assert metrics['clinvault_jobs_running{kind="backup.create"}'] == 1
    assert metrics['clinvault_jobs_pending{kind="backup.create"}'] == 1
    assert metrics['clinvault_schedule_active{schedule="night \\"full\\""}'] == 1
    assert (
        metrics['clinvault_schedule_next_run_timestamp_seconds{schedule="night \\"full\\""}']
        == (T0 + timedelta(days=1)).timestamp()
    )
    assert metrics["clinvault_drill_last_run_ok"] == 0
    assert metrics["clinvault_drill_last_run_timestamp_seconds"] == T0.timestamp()
    assert metrics["clinvault_storage_backups_bytes"] == 3500
    assert 0 <= metrics["clinvault_storage_used_ratio"] <= 1
    assert metrics["clinvault_storage_alert_ratio"] == 0.85
    assert metrics["clinvault_up"] == 1
