"""Periodic proof that backups are good (EU GMP Annex 11 §7.2: "checked ... and monitored").

Two checks, each run on its own cron (``verify_cron``, ``drill_cron``) by the scheduler, or
by hand (``clinvault drill run``):

* **verification** (``verify.run``): the newest backup of each type, and the one verified
  longest ago, are re-read in full: every part and every file against its SHA-256
  (:class:`~clinvault.services.verify.VerifyService`, which records the outcome on the backup).
* **restore drill** (``drill.run``): the newest backup, and a randomly chosen older one, are
  restored into a sandbox (database ``<db>__drill_<id>`` and a directory under
  ``<data_dir>/drills``) through :class:`~clinvault.services.restore.RestoreService`'s
  alternate target, which validates what it restored against the manifest (row counts per
  table, every file's hash); then the sandbox is dropped, pass or fail.

Each run is recorded as a job row of its kind, with the per-backup results as the job's
result, so the history is listed by ``GET /api/v1/drills`` and by the jobs API; the newest
result is also put on each backup's metadata (``drill``). A failure is notified.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from clinvault.catalog.models import AuditOutcome, Backup, BackupStatus, Job, JobStatus
from clinvault.engine.dbrestore import derived_name, drop_database
from clinvault.engine.filerestore import remove_tree
from clinvault.errors import ClinVaultError, ConflictError, InvalidInputError
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.cron import next_fire
from clinvault.services.notify import DRILL_FAILED, VERIFY_FAILED, Notifier
from clinvault.services.processes import current_worker, worker_is_dead
from clinvault.services.restore import RestoreService
from clinvault.services.restore_ops import RestoreTarget
from clinvault.services.verify import VerifyService

log = logging.getLogger(__name__)

VERIFY_KIND: Final = "verify.run"
DRILL_KIND: Final = "drill.run"
CHECK_KINDS: Final = (VERIFY_KIND, DRILL_KIND)
_LOCK_KEYS: Final = {VERIFY_KIND: 0x436C_5656, DRILL_KIND: 0x436C_5644}  # "ClVV", "ClVD"


@dataclass
class CheckItem:
    """One backup checked: ``status`` is passed, failed or skipped."""

    backup_id: str
    name: str
    type: str
    status: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "name": self.name,
            "type": self.type,
            "status": self.status,
            "problems": self.problems[:50],
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
        }


@dataclass
class CheckReport:
    kind: str
    started_at: datetime
    items: list[CheckItem] = field(default_factory=list)
    finished_at: datetime | None = None
    job_id: str | None = None
    note: str | None = None

    @property
    def failed(self) -> list[CheckItem]:
        return [i for i in self.items if i.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def status(self) -> str:
        if self.failed:
            return "failed"
        return "passed" if any(i.status == "passed" for i in self.items) else "skipped"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "job_id": self.job_id,
            "ok": self.ok,
            "status": self.status,
            "note": self.note,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "items": [i.to_json() for i in self.items],
        }


# --- the record of a check (a job row) -------------------------------------------------------


def _new_job(kind: str, actor: Actor, now: datetime, params: dict[str, Any]) -> Job:
    return Job(
        id=uuid.uuid4(),
        kind=kind,
        status=JobStatus.RUNNING,
        params=params,
        created_by=actor.name,
        created_by_id=actor.id,
        created_at=now,
        started_at=now,
        heartbeat_at=now,
        stage="running",
        worker=current_worker(),
        log=[{"seq": 1, "at": now.isoformat(), "level": "info", "message": "started"}],
    )


def _lock(session: sa.orm.Session, kind: str) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEYS[kind])))


def _running(session: sa.orm.Session, kind: str) -> Job | None:
    last = session.scalars(
        sa.select(Job).where(Job.kind == kind).order_by(Job.created_at.desc()).limit(1)
    ).first()
    if last is not None and last.status is JobStatus.RUNNING and not worker_is_dead(last.worker):
        return last
    return None


def open_check(ctx: ServiceContext, kind: str, actor: Actor, params: dict[str, Any]) -> Job:
    """Record the start of a check run now (a manual run); one of each kind at a time."""
    if kind not in CHECK_KINDS:
        raise InvalidInputError(f"unknown check {kind!r}: use {' or '.join(CHECK_KINDS)}")
    job = _new_job(kind, actor, datetime.now(UTC), params)
    with ctx.catalog.session(write_lock=True) as session:
        _lock(session, kind)
        running = _running(session, kind)
        if running is not None:
            raise ConflictError(f"a {kind} is already running (job {running.id})")
        session.add(job)
    return job


def start_check(
    ctx: ServiceContext, kind: str, actor: Actor, notifier: Notifier | None = None
) -> Job:
    """Start a check now in a thread of its own; the returned job row follows it."""
    job = open_check(ctx, kind, actor, {"scheduled": False})

    def work() -> None:
        try:
            DrillService(ctx, notifier).run(kind, actor, job=job)
        except Exception:
            log.exception("the %s started by %s failed to run", kind, actor.name)

    threading.Thread(target=work, name=f"clinvault-{kind}", daemon=True).start()
    return job


def claim_due_check(
    ctx: ServiceContext, kind: str, expression: str, tz: ZoneInfo, now: datetime
) -> Job | None:
    """Start a scheduled check if its cron time has come since the last run, atomically.

    The last run of ``kind`` (or, before the first one, the first completed backup: there
    is nothing to check before it) is the anchor; the check is due when the cron's next time
    after the anchor has passed. Two schedulers sharing a catalog serialize here (SQLite
    writer lock; PostgreSQL advisory lock), and the winner's new row moves the anchor, so
    one run starts. A run still going blocks the next.
    """
    with ctx.catalog.session(write_lock=True) as session:
        _lock(session, kind)
        if _running(session, kind) is not None:
            return None
        last = session.scalars(
            sa.select(Job).where(Job.kind == kind).order_by(Job.created_at.desc()).limit(1)
        ).first()
        anchor = last.created_at if last is not None else None
        if anchor is None:
            anchor = session.scalar(
                sa.select(sa.func.min(Backup.completed_at)).where(
                    Backup.status == BackupStatus.COMPLETED, Backup.deleted_at.is_(None)
                )
            )
        if anchor is None or next_fire(expression, tz, anchor) > now:
            return None
        job = _new_job(kind, Actor.system(), now, {"scheduled": True, "cron": expression})
        session.add(job)
    return job


def finish_check(ctx: ServiceContext, job_id: uuid.UUID, report: CheckReport) -> None:
    now = datetime.now(UTC)
    report.finished_at = now
    with ctx.catalog.session(write_lock=True) as session:
        job = session.get_one(Job, job_id)
        job.status = JobStatus.FAILED if report.failed else JobStatus.COMPLETED
        job.finished_at = now
        job.percent = 100.0
        job.stage = report.status
        job.result = report.to_json()
        job.error = (
            "; ".join(f"{i.name}: {p}" for i in report.failed for p in i.problems[:1])[:4000]
            or None
        )
        message = f"{report.kind} {report.status}: {len(report.items)} backup(s)"
        entry = {"seq": 2, "at": now.isoformat(), "level": "info", "message": message}
        job.log = [*(job.log or []), entry]


def check_history(ctx: ServiceContext, *, kind: str | None = None, limit: int = 50) -> list[Job]:
    """The newest check runs (drills and verifications), newest first."""
    kinds = [kind] if kind else list(CHECK_KINDS)
    with ctx.catalog.session() as session:
        return list(
            session.scalars(
                sa.select(Job)
                .where(Job.kind.in_(kinds))
                .order_by(Job.created_at.desc())
                .limit(max(1, min(limit, 500)))
            )
        )


# --- the checks ------------------------------------------------------------------------------


class DrillService:
    def __init__(self, ctx: ServiceContext, notifier: Notifier | None = None) -> None:
        self.ctx = ctx
        self.notifier = notifier or Notifier(ctx.settings, audit=ctx.audit)

    def run(self, kind: str, actor: Actor, *, job: Job | None = None) -> CheckReport:
        """Run the check ``kind`` (recorded in ``job``, or in a new one)."""
        record = job or open_check(self.ctx, kind, actor, {"scheduled": False})
        report = CheckReport(kind, datetime.now(UTC), job_id=str(record.id))
        try:
            if kind == VERIFY_KIND:
                self._verify(report, actor)
            else:
                self._drill(report, actor)
        finally:
            finish_check(self.ctx, record.id, report)
        self._audit(report, actor)
        if report.failed:
            self._notify(report)
        return report

    def verify_latest(self, actor: Actor, *, job: Job | None = None) -> CheckReport:
        return self.run(VERIFY_KIND, actor, job=job)

    def run_drill(self, actor: Actor, *, job: Job | None = None) -> CheckReport:
        return self.run(DRILL_KIND, actor, job=job)

    # --- verification ------------------------------------------------------------------------

    def _completed(self) -> list[Backup]:
        with self.ctx.catalog.session() as session:
            return list(
                session.scalars(
                    sa.select(Backup)
                    .where(Backup.status == BackupStatus.COMPLETED, Backup.deleted_at.is_(None))
                    .order_by(Backup.created_at.desc())
                )
            )

    def _verify(self, report: CheckReport, actor: Actor) -> None:
        rows = self._completed()
        chosen: dict[uuid.UUID, Backup] = {}
        for row in rows:
            if not any(c.type == row.type for c in chosen.values()):
                chosen[row.id] = row
        stalest = sorted(
            (r for r in rows if r.id not in chosen),
            key=lambda r: (r.verified_at is not None, r.verified_at or r.created_at),
        )
        if stalest:
            chosen[stalest[0].id] = stalest[0]
        if not chosen:
            report.note = "no completed backup to verify"
        for row in chosen.values():
            started = time.monotonic()
            item = CheckItem(str(row.id), row.name, row.type.value, "passed")
            try:
                result = VerifyService(self.ctx).verify(row.id, actor)
            except ClinVaultError as exc:
                item.status, item.problems = "failed", [exc.message]
            else:
                item.status = "passed" if result.ok else "failed"
                item.problems = list(result.problems)
            item.seconds = time.monotonic() - started
            report.items.append(item)

    # --- restore drills ----------------------------------------------------------------------

    def _drill(self, report: CheckReport, actor: Actor) -> None:
        rows = self._completed()
        if not rows:
            report.note = "no completed backup to drill"
            return
        chosen = [rows[0]]
        if len(rows) > 1:
            chosen.append(secrets.choice(rows[1:]))
        for row in chosen:
            item = self.drill_backup(row, actor)
            report.items.append(item)
            self._remember(row.id, item, report)

    def drill_backup(self, row: Backup, actor: Actor) -> CheckItem:
        """Restore ``row`` into a fresh sandbox, validate it, drop the sandbox."""
        started = time.monotonic()
        service = RestoreService(self.ctx)
        scope = service.scope_for(row, None)
        short = uuid.uuid4().hex[:8]
        database = (
            derived_name(self.ctx.platform.database, f"drill_{short}")
            if "database" in scope.parts
            else None
        )
        workdir = self.ctx.settings.data_dir / "drills" / short
        directory = workdir / "files" if "files" in scope.parts else None
        item = CheckItem(str(row.id), row.name, row.type.value, "passed")
        item.detail = {"sandbox_database": database, "sandbox_dir": str(directory or "") or None}
        try:
            target = RestoreTarget(database, str(directory) if directory else None)
            workdir.mkdir(parents=True, exist_ok=True)
            op = service.run(row.id, scope, actor, target=target, safety_backup=False)
            item.detail["restore_id"] = str(op.id)
            item.detail["validation"] = _summary(op.validation_results or {})
        except ConflictError as exc:
            item.status, item.problems = "skipped", [exc.message]
        except ClinVaultError as exc:
            item.status, item.problems = "failed", [exc.message]
        finally:
            item.detail["sandbox_dropped"] = self._drop_sandbox(database, workdir)
        item.seconds = time.monotonic() - started
        return item

    def _drop_sandbox(self, database: str | None, workdir: Path) -> bool:
        dropped = True
        if database is not None:
            try:
                drop_database(self.ctx.platform, database)
            except ClinVaultError as exc:
                log.warning("dropping the drill database %s failed: %s", database, exc.message)
                dropped = False
        try:
            remove_tree(workdir)
        except OSError as exc:
            log.warning("removing the drill directory %s failed: %s", workdir, exc)
            dropped = False
        with contextlib.suppress(OSError):
            workdir.parent.rmdir()
        return dropped

    def _remember(self, backup_id: uuid.UUID, item: CheckItem, report: CheckReport) -> None:
        """The newest drill result, on the backup itself (shown with the backup)."""
        with self.ctx.catalog.session() as session:
            row = session.get(Backup, backup_id)
            if row is not None:
                row.metadata_ = {
                    **(row.metadata_ or {}),
                    "drill": {
                        "status": item.status,
                        "at": datetime.now(UTC).isoformat(),
                        "job_id": report.job_id,
                        "problems": item.problems[:5],
                    },
                }

    # --- outcome -----------------------------------------------------------------------------

    def _audit(self, report: CheckReport, actor: Actor) -> None:
        self.ctx.audit.record(
            report.kind,
            actor_id=actor.id,
            actor_name=actor.name,
            outcome=AuditOutcome.FAILURE if report.failed else AuditOutcome.SUCCESS,
            target_type="job",
            target_id=report.job_id,
            details={
                "status": report.status,
                "backups": [
                    {"id": i.backup_id, "name": i.name, "status": i.status} for i in report.items
                ],
                "problems": [p for i in report.failed for p in i.problems[:3]][:20],
            },
        )

    def _notify(self, report: CheckReport) -> None:
        event = VERIFY_FAILED if report.kind == VERIFY_KIND else DRILL_FAILED
        what = "Integrity verification" if report.kind == VERIFY_KIND else "Restore drill"
        names = ", ".join(i.name for i in report.failed)
        self.notifier.notify(
            event,
            f"{what} failed: {names}",
            f"{what} found problems with {len(report.failed)} backup(s): {names}. "
            "These backups may not be restorable; investigate before relying on them.",
            {
                "job_id": report.job_id,
                "backups": [i.to_json() for i in report.failed],
            },
        )


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    """The restore's validation against the manifest, shortened for a drill report."""
    restored = results.get("restored")
    if not isinstance(restored, dict):
        return {"ok": None}
    database = restored.get("database") or {}
    files = restored.get("files") or {}
    return {
        "ok": restored.get("ok"),
        "tables": database.get("tables"),
        "rows": database.get("rows"),
        "database_problems": list(database.get("problems") or [])[:20],
        "files": files.get("expected_files"),
        "file_problems": list(files.get("problems") or [])[:20],
    }
