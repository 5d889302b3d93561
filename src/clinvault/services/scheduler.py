"""The scheduler: fires due schedules, follows their runs, and keeps watch.

:meth:`Scheduler.tick` does one pass at a given time (tests drive it with a controlled
clock; ``clinvault serve`` calls it from a background thread every
``scheduler_interval_seconds``). A pass:

1. **fires due schedules**. Each due schedule is *claimed* in one transaction that locks
   its row (PostgreSQL ``SELECT … FOR UPDATE SKIP LOCKED``; on SQLite the writer lock,
   ``BEGIN IMMEDIATE``), re-checks that it is still due and moves ``next_run_at`` on, so
   any number of schedulers sharing a catalog fire it once. Then the backup is submitted
   as a ``backup.create`` job (with the schedule's id), outside the transaction.
   *No overlap*: while the schedule's previous run is still queued or running, the due run
   is skipped, and the skip recorded (audit ``schedule.skipped``).
   *Missed runs*: a run found due more than a grace period late (the service was down at
   its time) is run once now, however many fire times passed, and the miss is recorded
   (audit ``schedule.missed``) and notified;
2. **follows runs**: when a run's job ends, the schedule's ``last_status`` says how; after a
   success, the schedule's retention rules are applied; a failure is notified;
3. notifies failed backups nobody was told about yet (each once, across instances; only
   when a notification channel is configured);
4. starts the **periodic checks** (integrity verification and restore drills) when their
   cron time has come (:mod:`clinvault.services.drills`), in a thread of their own;
5. watches **storage usage** against ``storage_alert_percent`` (logged, and audited and
   notified when a channel is configured, at most daily per instance).

Changes to schedules need no restart: every pass reads the catalog afresh.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa

from clinvault.catalog.models import (
    AuditOutcome,
    Backup,
    BackupSchedule,
    BackupStatus,
    Job,
    JobStatus,
)
from clinvault.errors import ClinVaultError, ConfigError
from clinvault.services.actor import Actor
from clinvault.services.capacity import human, storage_usage
from clinvault.services.context import ServiceContext
from clinvault.services.cron import check_expression, fires_between, next_fire, zone
from clinvault.services.drills import DRILL_KIND, VERIFY_KIND, DrillService, claim_due_check
from clinvault.services.jobs import JobService
from clinvault.services.notify import (
    BACKUP_FAILED,
    SCHEDULE_MISSED,
    STORAGE_THRESHOLD,
    Notifier,
)
from clinvault.services.processes import worker_is_dead
from clinvault.services.retention import cleanup_old_backups

log = logging.getLogger(__name__)

BACKUP_CREATE: Final = "backup.create"
RUNNING: Final = "running"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
SKIPPED: Final = "skipped"
MIN_GRACE: Final = timedelta(seconds=60)
# A run claimed but never queued (the process stopped in between) is failed after this.
LOST_RUN: Final = timedelta(minutes=10)
STORAGE_REALERT: Final = timedelta(hours=24)
FAILURE_WINDOW: Final = timedelta(days=1)
_NOTIFIED: Final = "failure_notified"

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Launch:
    """What starting a run gave: ``running`` (a job was queued), or already an outcome."""

    status: str
    job_id: str | None = None
    error: str | None = None
    backup_id: str | None = None


Launcher = Callable[[ServiceContext, BackupSchedule, datetime], Launch]


def submit_backup_job(ctx: ServiceContext, schedule: BackupSchedule, fire_at: datetime) -> Launch:
    """Queue the schedule's backup as a job, under the system actor."""
    stamp = fire_at.strftime("%Y%m%d-%H%M%S")
    params: dict[str, Any] = {
        "type": schedule.backup_type.value,
        "scope": schedule.scope.value,
        "scope_ids": list(schedule.scope_ids or []),
        "compression": schedule.compression,
        "level": schedule.compression_level,
        "name": f"{schedule.name[:230]}-{stamp}",
        "description": f"scheduled by {schedule.name} ({schedule.cron_expression}, "
        f"{schedule.timezone})",
        "schedule_id": str(schedule.id),
        "fire_at": fire_at.isoformat(),
    }
    job = JobService(ctx).submit(
        BACKUP_CREATE, params, Actor.system(), target_type="schedule", target_id=str(schedule.id)
    )
    return Launch(RUNNING, job_id=str(job.id))


@dataclass
class TickReport:
    """What one pass did (schedule names), for logs and tests."""

    now: datetime
    fired: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Claim:
    schedule: BackupSchedule
    due_at: datetime
    missed_runs: int
    busy: str | None


class Scheduler:
    """Fires schedules from the catalog; one per process, any number per catalog."""

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        clock: Clock | None = None,
        launcher: Launcher | None = None,
        notifier: Notifier | None = None,
        interval: float | None = None,
        run_checks: bool = True,
        background_checks: bool = True,
    ) -> None:
        settings = ctx.settings
        self.ctx = ctx
        self.clock = clock or (lambda: datetime.now(UTC))
        self.launcher = launcher or submit_backup_job
        self.notifier = notifier or Notifier(settings, audit=ctx.audit)
        self.interval = interval if interval is not None else settings.scheduler_interval_seconds
        self.grace = max(MIN_GRACE, timedelta(seconds=4 * self.interval))
        self.background_checks = background_checks
        self.checks = self._periodic_checks() if run_checks else []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._storage_alerted: datetime | None = None

    def _periodic_checks(self) -> list[tuple[str, str]]:
        settings = self.ctx.settings
        wanted = [(VERIFY_KIND, settings.verify_cron)]
        if settings.drill_enabled:
            wanted.append((DRILL_KIND, settings.drill_cron))
        try:
            zone(settings.drill_timezone)
            return [(kind, check_expression(expr)) for kind, expr in wanted if expr]
        except ClinVaultError as exc:
            raise ConfigError(f"verify_cron, drill_cron or drill_timezone: {exc.message}") from exc

    # --- the background thread ---------------------------------------------------------------

    def start(self) -> None:
        """Tick every ``interval`` seconds in a daemon thread, until stopped."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="clinvault-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for worker in self._workers:
            worker.join(timeout)
        self._workers.clear()

    def _loop(self) -> None:
        # The first pass comes one interval after start, when the service is fully up.
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                log.exception("scheduler pass failed")

    # --- one pass ----------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> TickReport:
        """One pass at ``now`` (default: the clock). Never raises for one bad schedule."""
        report = TickReport((now or self.clock()).astimezone(UTC))
        steps = (
            self._fire_due,
            self._follow_runs,
            self._notify_failed_backups,
            self._start_checks,
            self._watch_storage,
        )
        for step in steps:
            try:
                step(report)
            except Exception as exc:
                log.exception("scheduler step %s failed", step.__name__)
                report.errors.append(f"{step.__name__}: {_message(exc)}")
        self._workers = [w for w in self._workers if w.is_alive()]
        return report

    # --- 1. firing ---------------------------------------------------------------------------

    def _fire_due(self, report: TickReport) -> None:
        now = report.now
        with self.ctx.catalog.session() as session:
            due = session.scalars(
                sa.select(BackupSchedule.id)
                .where(
                    BackupSchedule.is_active.is_(True),
                    BackupSchedule.next_run_at.is_not(None),
                    BackupSchedule.next_run_at <= now,
                )
                .order_by(BackupSchedule.next_run_at)
            ).all()
        for schedule_id in due:
            try:
                claim = self._claim(schedule_id, now)
                if claim is not None:
                    self._act(claim, report)
            except Exception as exc:
                log.exception("firing schedule %s failed", schedule_id)
                report.errors.append(f"schedule {schedule_id}: {_message(exc)}")

    def _claim(self, schedule_id: uuid.UUID, now: datetime) -> _Claim | None:
        """Take the due run of one schedule, atomically; None if another scheduler has it."""
        with self.ctx.catalog.session(write_lock=True) as session:
            row = session.scalars(
                sa.select(BackupSchedule)
                .where(
                    BackupSchedule.id == schedule_id,
                    BackupSchedule.is_active.is_(True),
                    BackupSchedule.next_run_at <= now,
                )
                .with_for_update(skip_locked=True)
            ).first()
            if row is None or row.next_run_at is None:
                return None
            due_at = row.next_run_at
            tz = zone(row.timezone)
            late = now - due_at > self.grace
            missed = 1 + fires_between(row.cron_expression, tz, due_at, now) if late else 0
            busy = _previous_run(session, row)
            row.next_run_at = next_fire(row.cron_expression, tz, now)
            if busy is None:
                row.last_run_at = now
                row.last_status = RUNNING
            else:
                row.last_status = SKIPPED
        return _Claim(row, due_at, missed, busy)

    def _act(self, claim: _Claim, report: TickReport) -> None:
        row, now = claim.schedule, report.now
        if claim.missed_runs:
            report.missed.append(row.name)
            self._record_miss(claim, now)
        if claim.busy is not None:
            report.skipped.append(row.name)
            self._audit(
                "schedule.skipped",
                row,
                {"due_at": claim.due_at, "reason": claim.busy},
                AuditOutcome.FAILURE,
            )
            return
        try:
            launch = self.launcher(self.ctx, row, now)
        except Exception as exc:
            launch = Launch(FAILED, error=_message(exc))
        details = {
            "due_at": claim.due_at,
            "fired_at": now,
            "catch_up": bool(claim.missed_runs),
            "job_id": launch.job_id,
            "error": launch.error,
        }
        outcome = AuditOutcome.FAILURE if launch.status == FAILED else AuditOutcome.SUCCESS
        self._audit("schedule.fire", row, details, outcome)
        report.fired.append(row.name)
        if launch.status != RUNNING:
            self._settle(row.id, launch.status, launch.error, launch.backup_id, None, report)

    def _record_miss(self, claim: _Claim, now: datetime) -> None:
        row = claim.schedule
        details = {
            "due_at": claim.due_at,
            "detected_at": now,
            "missed_runs": claim.missed_runs,
            "caught_up": claim.busy is None,
        }
        self._audit("schedule.missed", row, details, AuditOutcome.FAILURE)
        action = "one catch-up run was started" if claim.busy is None else "the previous run "
        if claim.busy is not None:
            action += "is still going, so none was started"
        self.notifier.notify(
            SCHEDULE_MISSED,
            f"Missed scheduled backup: {row.name}",
            f"Schedule {row.name} was due at {claim.due_at.isoformat()} but ClinVault was not "
            f"running; {claim.missed_runs} run(s) were missed and {action}.",
            {"schedule_id": str(row.id), "schedule": row.name, **details},
        )

    # --- 2. following runs -------------------------------------------------------------------

    def _follow_runs(self, report: TickReport) -> None:
        with self.ctx.catalog.session() as session:
            running = session.scalars(
                sa.select(BackupSchedule).where(BackupSchedule.last_status == RUNNING)
            ).all()
            if not running:
                return
            jobs = session.scalars(
                sa.select(Job)
                .where(Job.kind == BACKUP_CREATE)
                .order_by(Job.created_at.desc())
                .limit(1000)
            ).all()
        for row in running:
            fired = row.last_run_at.isoformat() if row.last_run_at else None
            job = next(
                (
                    j
                    for j in jobs
                    if (j.params or {}).get("schedule_id") == str(row.id)
                    and (j.params or {}).get("fire_at") == fired
                ),
                None,
            )
            if job is None:
                if row.last_run_at is not None and report.now - row.last_run_at > LOST_RUN:
                    error = "the run was never queued (the service stopped while starting it)"
                    self._settle(row.id, FAILED, error, None, None, report)
                continue
            if job.status in (JobStatus.PENDING, JobStatus.RUNNING):
                continue
            backup_id = (job.result or {}).get("backup_id")
            name = (job.params or {}).get("name")
            self._settle(row.id, job.status.value, job.error, backup_id, name, report)

    def _settle(
        self,
        schedule_id: uuid.UUID,
        status: str,
        error: str | None,
        backup_id: str | None,
        backup_name: str | None,
        report: TickReport,
    ) -> None:
        """Record how a run ended (once, whoever sees it first), then act on it."""
        with self.ctx.catalog.session(write_lock=True) as session:
            row = session.scalars(
                sa.select(BackupSchedule)
                .where(BackupSchedule.id == schedule_id, BackupSchedule.last_status == RUNNING)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return
            row.last_status = status[:32]
        report.settled.append(row.name)
        details = {"status": status, "backup_id": backup_id, "error": error}
        if status == COMPLETED:
            self._audit("schedule.run", row, details)
            if backup_id:
                _link_backup(self.ctx, uuid.UUID(backup_id), row.id)
            cleanup_old_backups(self.ctx, dry_run=False, schedule_id=row.id)
            return
        self._audit("schedule.run", row, details, AuditOutcome.FAILURE)
        if status == FAILED and _claim_failure_notice(self.ctx, backup_name):
            self.notifier.notify(
                BACKUP_FAILED,
                f"Scheduled backup failed: {row.name}",
                f"The scheduled {row.backup_type.value} backup of {row.name} failed: "
                f"{error or 'no detail'}",
                {
                    "schedule_id": str(row.id),
                    "schedule": row.name,
                    "backup": backup_name,
                    **details,
                },
            )

    # --- 3. failed backups nobody was told about ---------------------------------------------

    def _notify_failed_backups(self, report: TickReport) -> None:
        if not self.notifier.channels:
            return  # nobody to tell; the failure is in the catalog, the audit trail, metrics
        since = datetime.now(UTC) - FAILURE_WINDOW
        with self.ctx.catalog.session() as session:
            rows = session.scalars(
                sa.select(Backup).where(
                    Backup.status == BackupStatus.FAILED, Backup.completed_at >= since
                )
            ).all()
        for row in rows:
            meta = row.metadata_ or {}
            if meta.get(_NOTIFIED) or _scheduled_run_pending(self.ctx, row):
                continue
            if not _claim_failure_notice(self.ctx, row.name):
                continue
            self.notifier.notify(
                BACKUP_FAILED,
                f"Backup failed: {row.name}",
                f"The {row.type.value} backup {row.name} failed: {row.error or 'no detail'}",
                {"backup_id": str(row.id), "backup": row.name, "error": row.error},
            )

    # --- 4. periodic checks ------------------------------------------------------------------

    def _start_checks(self, report: TickReport) -> None:
        tz = zone(self.ctx.settings.drill_timezone)
        for kind, expression in self.checks:
            job = claim_due_check(self.ctx, kind, expression, tz, report.now)
            if job is None:
                continue
            report.checks.append(kind)
            if not self.background_checks:
                self._run_check(kind, job)
                continue
            worker = threading.Thread(
                target=self._run_check, args=(kind, job), name=f"clinvault-{kind}", daemon=True
            )
            worker.start()
            self._workers.append(worker)

    def _run_check(self, kind: str, job: Job) -> None:
        try:
            DrillService(self.ctx, self.notifier).run(kind, Actor.system(), job=job)
        except Exception:
            log.exception("the scheduled %s failed to run", kind)

    # --- 5. storage --------------------------------------------------------------------------

    def _watch_storage(self, report: TickReport) -> None:
        usage = storage_usage(self.ctx)
        limit = self.ctx.settings.storage_alert_percent
        if usage is None or usage.percent_used < limit:
            self._storage_alerted = None
            return
        last = self._storage_alerted
        if last is not None and report.now - last < STORAGE_REALERT:
            return
        self._storage_alerted = report.now
        details = {**usage.to_json(), "threshold_percent": limit}
        log.warning("backup storage is %.1f%% full (alert at %g%%)", usage.percent_used, limit)
        if not self.notifier.channels:
            return  # the metrics show it (clinvault_storage_used_ratio)
        system = Actor.system()
        self.ctx.audit.record(
            "storage.threshold",
            actor_id=system.id,
            actor_name=system.name,
            outcome=AuditOutcome.FAILURE,
            target_type="storage",
            details=details,
        )
        self.notifier.notify(
            STORAGE_THRESHOLD,
            f"Backup storage {usage.percent_used:.1f}% full",
            f"The backup storage is {usage.percent_used:.1f}% full (alert at {limit:g}%): "
            f"{human(usage.free)} free of {human(usage.total)}. Free space or review retention.",
            details,
        )

    # --- audit -------------------------------------------------------------------------------

    def _audit(
        self,
        action: str,
        row: BackupSchedule,
        details: dict[str, Any],
        outcome: AuditOutcome = AuditOutcome.SUCCESS,
    ) -> None:
        system = Actor.system()
        self.ctx.audit.record(
            action,
            actor_id=system.id,
            actor_name=system.name,
            outcome=outcome,
            target_type="schedule",
            target_id=str(row.id),
            details={"name": row.name, **details},
        )


def _previous_run(session: sa.orm.Session, row: BackupSchedule) -> str | None:
    """Why the schedule's previous run still counts as going, or None."""
    jobs = session.scalars(
        sa.select(Job).where(
            Job.kind == BACKUP_CREATE, Job.status.in_((JobStatus.PENDING, JobStatus.RUNNING))
        )
    ).all()
    for job in jobs:
        if (job.params or {}).get("schedule_id") != str(row.id):
            continue
        if job.status is JobStatus.PENDING or not worker_is_dead(job.worker):
            return f"the previous run (job {job.id}) is still {job.status.value}"
    backups = session.scalars(
        sa.select(Backup).where(
            Backup.schedule_id == row.id,
            Backup.status.in_((BackupStatus.PENDING, BackupStatus.IN_PROGRESS)),
        )
    ).all()
    for backup in backups:
        if not worker_is_dead((backup.metadata_ or {}).get("worker")):
            return f"the previous backup {backup.name} is still {backup.status.value}"
    return None


def _link_backup(ctx: ServiceContext, backup_id: uuid.UUID, schedule_id: uuid.UUID) -> None:
    """Bind the run's backup to its schedule (retention finds it by that)."""
    with ctx.catalog.session() as session:
        backup = session.get(Backup, backup_id)
        if backup is not None and backup.schedule_id is None:
            backup.schedule_id = schedule_id


def _claim_failure_notice(ctx: ServiceContext, backup_name: str | None) -> bool:
    """Mark a failed backup as notified; False if someone already did (notify once)."""
    if not backup_name:
        return True
    with ctx.catalog.session(write_lock=True) as session:
        row = session.scalars(
            sa.select(Backup).where(Backup.name == backup_name).with_for_update()
        ).first()
        if row is None:
            return True
        if (row.metadata_ or {}).get(_NOTIFIED):
            return False
        row.metadata_ = {**(row.metadata_ or {}), _NOTIFIED: True}
    return True


def _scheduled_run_pending(ctx: ServiceContext, row: Backup) -> bool:
    """True while the backup's schedule has not settled its run: the schedule notifies it,
    with more context."""
    if row.schedule_id is None:
        return False
    with ctx.catalog.session() as session:
        status = session.scalar(
            sa.select(BackupSchedule.last_status).where(BackupSchedule.id == row.schedule_id)
        )
    return status == RUNNING


def _message(exc: BaseException) -> str:
    if isinstance(exc, ClinVaultError):
        return exc.message
    return f"internal error ({type(exc).__name__})"
