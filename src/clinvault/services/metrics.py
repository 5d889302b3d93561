"""Prometheus metrics, in the text exposition format (version 0.0.4), read from the catalog.

Everything is derived from the catalog at scrape time, so every instance sharing a catalog
reports the same values and a restart loses nothing. Names follow Prometheus conventions
(``_seconds``, ``_bytes``, ``_total``, Unix timestamps for "last" times).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import sqlalchemy as sa

from clinvault import __version__
from clinvault.catalog.models import (
    Backup,
    BackupSchedule,
    BackupStatus,
    BackupType,
    Job,
    JobStatus,
)
from clinvault.services.capacity import storage_usage, stored_bytes
from clinvault.services.context import ServiceContext
from clinvault.services.drills import DRILL_KIND, VERIFY_KIND

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

Labels = Mapping[str, str]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class Exposition:
    """Metric families in the order added, each with HELP, TYPE and samples."""

    lines: list[str] = field(default_factory=list)

    def family(
        self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            self.lines.append(
                f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}"
            )

    def render(self) -> str:
        return "\n".join(self.lines) + "\n"


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def render_metrics(ctx: ServiceContext) -> str:
    """The whole exposition for one scrape."""
    out = Exposition()
    out.family(
        "clinvault_up", "gauge", "1 when ClinVault answers and its catalog is readable.", [({}, 1)]
    )
    out.family("clinvault_info", "gauge", "The ClinVault version.", [({"version": __version__}, 1)])
    _backup_metrics(ctx, out)
    _job_metrics(ctx, out)
    _schedule_metrics(ctx, out)
    _check_metrics(ctx, out)
    _storage_metrics(ctx, out)
    return out.render()


def _backup_metrics(ctx: ServiceContext, out: Exposition) -> None:
    with ctx.catalog.session() as session:
        rows = session.execute(
            sa.select(
                Backup.type,
                Backup.status,
                Backup.started_at,
                Backup.completed_at,
                Backup.file_size_compressed,
                Backup.file_size_bytes,
                Backup.deleted_at,
                Backup.verify_status,
            )
        ).all()
    types = [t.value for t in BackupType]
    last: dict[str, tuple[datetime, float, int, int]] = {}
    failures = dict.fromkeys(types, 0)
    counts: dict[tuple[str, str], int] = {}
    verify_failed = dict.fromkeys(types, 0)
    for kind, status, started, completed, compressed, raw, deleted, verified in rows:
        if status is BackupStatus.FAILED:
            failures[kind.value] += 1
        if deleted is None:
            counts[(kind.value, status.value)] = counts.get((kind.value, status.value), 0) + 1
            if verified == "failed":
                verify_failed[kind.value] += 1
        if status is BackupStatus.COMPLETED and completed is not None:
            seen = last.get(kind.value)
            if seen is None or completed > seen[0]:
                duration = (completed - started).total_seconds() if started else 0.0
                last[kind.value] = (completed, duration, compressed or 0, raw or 0)
    out.family(
        "clinvault_backup_last_success_timestamp_seconds",
        "gauge",
        "When the last backup of each type completed (Unix time).",
        [({"type": k}, v[0].timestamp()) for k, v in sorted(last.items())],
    )
    out.family(
        "clinvault_backup_last_duration_seconds",
        "gauge",
        "How long the last completed backup of each type took.",
        [({"type": k}, v[1]) for k, v in sorted(last.items())],
    )
    out.family(
        "clinvault_backup_last_size_bytes",
        "gauge",
        "Stored (compressed) size of the last completed backup of each type.",
        [({"type": k}, v[2]) for k, v in sorted(last.items())],
    )
    out.family(
        "clinvault_backup_last_source_bytes",
        "gauge",
        "Uncompressed size of the last completed backup of each type.",
        [({"type": k}, v[3]) for k, v in sorted(last.items())],
    )
    out.family(
        "clinvault_backup_failures_total",
        "counter",
        "Backups that failed, by type.",
        [({"type": k}, v) for k, v in failures.items()],
    )
    out.family(
        "clinvault_backups",
        "gauge",
        "Backups kept in the catalog (not deleted), by type and status.",
        [({"type": t, "status": s}, n) for (t, s), n in sorted(counts.items())],
    )
    out.family(
        "clinvault_backups_verify_failed",
        "gauge",
        "Kept backups whose last integrity verification failed, by type.",
        [({"type": k}, v) for k, v in verify_failed.items()],
    )


def _job_metrics(ctx: ServiceContext, out: Exposition) -> None:
    with ctx.catalog.session() as session:
        rows = session.execute(
            sa.select(Job.kind, Job.status, sa.func.count())
            .where(Job.status.in_((JobStatus.PENDING, JobStatus.RUNNING)))
            .group_by(Job.kind, Job.status)
        ).all()
    running = {kind: n for kind, status, n in rows if status is JobStatus.RUNNING}
    pending = {kind: n for kind, status, n in rows if status is JobStatus.PENDING}
    out.family(
        "clinvault_jobs_running",
        "gauge",
        "Jobs running now, by kind.",
        [({"kind": k}, v) for k, v in sorted(running.items())] or [({}, 0)],
    )
    out.family(
        "clinvault_jobs_pending",
        "gauge",
        "Jobs waiting for a worker, by kind.",
        [({"kind": k}, v) for k, v in sorted(pending.items())] or [({}, 0)],
    )


def _schedule_metrics(ctx: ServiceContext, out: Exposition) -> None:
    with ctx.catalog.session() as session:
        schedules = session.scalars(sa.select(BackupSchedule).order_by(BackupSchedule.name)).all()
    out.family(
        "clinvault_schedule_active",
        "gauge",
        "1 for an active schedule, 0 for a paused one.",
        [({"schedule": s.name}, int(s.is_active)) for s in schedules],
    )
    nexts = [(s.name, _ts(s.next_run_at)) for s in schedules if s.is_active]
    out.family(
        "clinvault_schedule_next_run_timestamp_seconds",
        "gauge",
        "When each active schedule runs next (Unix time).",
        [({"schedule": name}, ts) for name, ts in nexts if ts is not None],
    )
    out.family(
        "clinvault_schedule_last_run_timestamp_seconds",
        "gauge",
        "When each schedule last started a run (Unix time).",
        [({"schedule": s.name}, s.last_run_at.timestamp()) for s in schedules if s.last_run_at],
    )
    out.family(
        "clinvault_schedule_last_run_ok",
        "gauge",
        "1 when a schedule's last run completed (or is running), 0 when it failed, was "
        "skipped or was missed.",
        [
            ({"schedule": s.name, "status": s.last_status or ""}, _ok(s.last_status))
            for s in schedules
            if s.last_status
        ],
    )


def _ok(status: str | None) -> int:
    return 1 if status in ("completed", "running") else 0


def _check_metrics(ctx: ServiceContext, out: Exposition) -> None:
    for kind, label in ((VERIFY_KIND, "verify"), (DRILL_KIND, "drill")):
        with ctx.catalog.session() as session:
            job = session.scalars(
                sa.select(Job)
                .where(Job.kind == kind, Job.status.in_((JobStatus.COMPLETED, JobStatus.FAILED)))
                .order_by(Job.finished_at.desc())
                .limit(1)
            ).first()
        passed: list[tuple[Labels, float]] = []
        when: list[tuple[Labels, float]] = []
        if job is not None:
            passed.append(({}, 1 if (job.result or {}).get("ok") else 0))
            if job.finished_at is not None:
                when.append(({}, job.finished_at.timestamp()))
        out.family(
            f"clinvault_{label}_last_run_timestamp_seconds",
            "gauge",
            f"When the last scheduled {label} check finished (Unix time).",
            when,
        )
        out.family(
            f"clinvault_{label}_last_run_ok",
            "gauge",
            f"1 when the last {label} check passed, 0 when it failed.",
            passed,
        )


def _storage_metrics(ctx: ServiceContext, out: Exposition) -> None:
    out.family(
        "clinvault_storage_backups_bytes",
        "gauge",
        "Bytes the kept backups take in storage, by the catalog.",
        [({}, stored_bytes(ctx))],
    )
    usage = storage_usage(ctx)
    if usage is None:
        return
    out.family(
        "clinvault_storage_total_bytes",
        "gauge",
        "Size of the backup filesystem.",
        [({}, usage.total)],
    )
    out.family(
        "clinvault_storage_free_bytes",
        "gauge",
        "Free bytes on the backup filesystem.",
        [({}, usage.free)],
    )
    out.family(
        "clinvault_storage_used_ratio",
        "gauge",
        "Used fraction (0 to 1) of the backup filesystem.",
        [({}, round(usage.used / usage.total, 6) if usage.total else 0.0)],
    )
    out.family(
        "clinvault_storage_alert_ratio",
        "gauge",
        "The storage_alert_percent setting as a fraction: alert above it.",
        [({}, ctx.settings.storage_alert_percent / 100.0)],
    )
