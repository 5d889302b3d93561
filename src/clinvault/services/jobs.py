"""Long work as jobs: submitted by the API, claimed and run by worker threads, followed live.

A job is a ``jobs`` row: ``pending → running → completed | failed | cancelled``, with its
stage, percent, bytes done and total, ETA and the last :data:`MAX_LOG_LINES` log lines.
:class:`JobService` submits, lists and cancels jobs; :class:`JobRunner` runs them.

Claiming is one transaction that picks the oldest pending job and marks it ``running`` with
the worker's identity (host, pid, process start). On PostgreSQL the pick is ``SELECT … FOR
UPDATE SKIP LOCKED``, so any number of runners in any number of processes sharing the catalog
each get a different job; on SQLite the transaction holds the writer lock from its start
(``BEGIN IMMEDIATE``), which serializes claims. A job is never run twice.

Cancelling a pending job cancels it at once. For a running job it sets ``cancel_requested``;
the runner's monitor sees it within a second and sets the ``threading.Event`` the work checks,
and the work cleans up after itself (a cancelled backup leaves no objects). On start-up, jobs
left ``running`` by a process that no longer exists are failed, and the backups they left
half-written are removed and the restores they left are rolled back
(:func:`clinvault.services.job_handlers.recover_interrupted_work`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from clinvault.catalog.models import AuditOutcome, Job, JobStatus
from clinvault.engine.progress import ProgressReport
from clinvault.errors import (
    CancelledError,
    ClinVaultError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.job_handlers import (
    JOB_KINDS,
    JobKind,
    JobRun,
    recover_interrupted_work,
)
from clinvault.services.processes import current_worker, worker_is_dead
from clinvault.services.queries import parse_id
from clinvault.services.stats import printable

log = logging.getLogger(__name__)

MAX_LOG_LINES: Final = 500
MAX_PAGE_SIZE: Final = 200
FINISHED: Final = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
_MAX_MESSAGE: Final = 2000


def _now() -> datetime:
    return datetime.now(UTC)


def log_entry(seq: int, message: str, level: str = "info") -> dict[str, Any]:
    at = _now().isoformat().replace("+00:00", "Z")
    return {"seq": seq, "at": at, "level": level, "message": message[:_MAX_MESSAGE]}


def _append_log(job: Job, entries: Sequence[dict[str, Any]]) -> None:
    if entries:
        job.log = [*(job.log or []), *entries][-MAX_LOG_LINES:]


def last_log_seq(job: Job) -> int:
    return int(job.log[-1]["seq"]) if job.log else 0


def error_text(exc: BaseException) -> str:
    """What a job records about a failure: the operator message of our own errors, and only
    the type of anything else (its text could hold anything, secrets included)."""
    if isinstance(exc, ClinVaultError):
        return exc.message[:4000]
    return f"internal error ({type(exc).__name__}); see the service log"


def job_to_json(job: Job, *, with_log: bool = True) -> dict[str, Any]:
    """The job as JSON; file names that are not UTF-8 (in results, log lines) made printable."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    data: dict[str, Any] = {
        "id": str(job.id),
        "kind": job.kind,
        "status": job.status.value,
        "params": job.params or {},
        "result": job.result,
        "error": job.error,
        "stage": job.stage,
        "percent": job.percent,
        "bytes_done": job.bytes_done,
        "bytes_total": job.bytes_total,
        "eta_seconds": job.eta_seconds,
        "target_type": job.target_type,
        "target_id": job.target_id,
        "created_by": job.created_by,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "heartbeat_at": iso(job.heartbeat_at),
        "cancel_requested": job.cancel_requested,
    }
    if with_log:
        data["log"] = list(job.log or [])
    return printable(data)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class JobEvents:
    """What changed on a job since log line ``after``: the job now and its newer log lines."""

    job: Job
    lines: list[dict[str, Any]]

    @property
    def finished(self) -> bool:
        return self.job.status in FINISHED


class JobService:
    def __init__(self, ctx: ServiceContext, kinds: Mapping[str, JobKind] | None = None) -> None:
        self.ctx = ctx
        self.kinds = JOB_KINDS if kinds is None else kinds

    def submit(
        self,
        kind: str,
        params: Mapping[str, Any],
        actor: Actor,
        target_type: str | None = None,
        target_id: str | None = None,
        *,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> Job:
        """Check ``params`` and queue the job (``pending``); a worker picks it up."""
        checked = self.check(kind, params)
        job = Job(
            id=uuid.uuid4(),
            kind=kind,
            status=JobStatus.PENDING,
            params=checked,
            target_type=target_type,
            target_id=target_id,
            created_by=actor.name,
            created_by_id=actor.id,
            created_at=_now(),
            log=[log_entry(1, f"queued by {actor.name}")],
        )
        with self.ctx.catalog.session() as session:
            session.add(job)
        self.ctx.audit.record(
            "job.submit",
            actor_id=actor.id,
            actor_name=actor.name,
            target_type="job",
            target_id=str(job.id),
            details={"kind": kind, "params": checked, "target": [target_type, target_id]},
            request_id=request_id,
            client_address=client_address,
        )
        return job

    def check(self, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` checked and normalized for ``kind``; raises what submitting would."""
        job_kind = self.kinds.get(kind)
        if job_kind is None:
            raise InvalidInputError(f"unknown job kind {kind!r}")
        return job_kind.prepare(self.ctx, params)

    def get(self, job_id: uuid.UUID | str) -> Job:
        with self.ctx.catalog.session() as session:
            job = session.get(Job, parse_id(job_id, "job"))
        if job is None:
            raise NotFoundError(f"job {job_id} not found")
        return job

    def list(
        self,
        *,
        status: JobStatus | None = None,
        kind: str | None = None,
        target_id: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[Job], int]:
        """One page of jobs, newest first, and how many match in all."""
        if offset < 0 or not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInputError(f"offset must be >= 0 and limit between 1 and {MAX_PAGE_SIZE}")
        clauses = []
        if status is not None:
            clauses.append(Job.status == status)
        if kind is not None:
            clauses.append(Job.kind == kind)
        if target_id is not None:
            clauses.append(Job.target_id == target_id)
        with self.ctx.catalog.session() as session:
            total = session.scalar(sa.select(sa.func.count()).select_from(Job).where(*clauses))
            rows = session.scalars(
                sa.select(Job)
                .where(*clauses)
                .order_by(Job.created_at.desc(), Job.id)
                .offset(offset)
                .limit(limit)
            ).all()
        return list(rows), int(total or 0)

    def cancel(
        self,
        job_id: uuid.UUID | str,
        actor: Actor,
        *,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> Job:
        """Cancel a pending job now, or ask its worker to stop a running one."""
        ident = parse_id(job_id, "job")
        with self.ctx.catalog.session(write_lock=True) as session:
            job = session.scalars(sa.select(Job).where(Job.id == ident).with_for_update()).first()
            if job is None:
                raise NotFoundError(f"job {job_id} not found")
            if job.status in FINISHED:
                raise ConflictError(f"job {job.id} has already finished ({job.status.value})")
            message = f"cancel requested by {actor.name}"
            if job.status is JobStatus.PENDING:
                job.status = JobStatus.CANCELLED
                job.finished_at = _now()
                job.stage = "cancelled"
                message = f"cancelled by {actor.name} before it started"
            job.cancel_requested = True
            _append_log(job, [log_entry(last_log_seq(job) + 1, message)])
        self.ctx.audit.record(
            "job.cancel",
            actor_id=actor.id,
            actor_name=actor.name,
            target_type="job",
            target_id=str(job.id),
            details={"kind": job.kind, "status": job.status.value},
            request_id=request_id,
            client_address=client_address,
        )
        return job

    def events(self, job_id: uuid.UUID | str, after: int = 0) -> JobEvents:
        """The job now, and its log lines numbered above ``after`` (an SSE ``Last-Event-ID``)."""
        job = self.get(job_id)
        return JobEvents(job, [line for line in job.log or [] if int(line["seq"]) > after])


def recover_dead_jobs(ctx: ServiceContext) -> list[str]:
    """Fail the jobs left ``running`` by a process of this host that no longer exists."""
    with ctx.catalog.session() as session:
        running = session.scalars(sa.select(Job).where(Job.status == JobStatus.RUNNING)).all()
    dead = [job.id for job in running if worker_is_dead(job.worker)]
    failed: list[str] = []
    for job_id in dead:
        with ctx.catalog.session(write_lock=True) as session:
            job = session.get_one(Job, job_id)
            if job.status is not JobStatus.RUNNING or not worker_is_dead(job.worker):
                continue
            job.status = JobStatus.FAILED
            job.finished_at = _now()
            job.error = "interrupted: the process running this job stopped before it finished"
            _append_log(job, [log_entry(last_log_seq(job) + 1, job.error, "error")])
        system = Actor.system()
        ctx.audit.record(
            "job.recover",
            actor_id=system.id,
            actor_name=system.name,
            outcome=AuditOutcome.FAILURE,
            target_type="job",
            target_id=str(job_id),
            details={"kind": job.kind, "worker": job.worker},
        )
        failed.append(str(job_id))
    return failed


class _Reporter:
    """Turns a job's progress reports and log lines into catalog writes, at most one per
    ``interval`` seconds, except for stage changes, the end, and log lines."""

    def __init__(self, ctx: ServiceContext, job: Job, interval: float) -> None:
        self._ctx = ctx
        self._job_id = job.id
        self._interval = interval
        self._lock = threading.Lock()
        self._seq = last_log_seq(job)
        self._pending: list[dict[str, Any]] = []
        self._report: ProgressReport | None = None
        self._stage: str | None = None
        self._last_write = float("-inf")

    def progress(self, report: ProgressReport) -> None:
        with self._lock:
            self._report = report
            due = time.monotonic() - self._last_write >= self._interval
            if report.stage != self._stage:
                self._stage = report.stage
                text = f"stage {report.stage}" + (f": {report.message}" if report.message else "")
                self._add(text)
                due = True
            if due or report.percent >= 100:
                self._write()

    def log(self, message: str, level: str = "info") -> None:
        with self._lock:
            self._add(message, level)
            self._write()

    def _add(self, message: str, level: str = "info") -> None:
        self._seq += 1
        self._pending.append(log_entry(self._seq, message, level))

    def _write(self) -> None:
        """Persist the latest report and the pending lines. A failed write is logged and
        retried with the next one: progress is news, never a reason to fail the work."""
        report, lines = self._report, self._pending
        self._last_write = time.monotonic()
        try:
            with self._ctx.catalog.session(write_lock=True) as session:
                job = session.get_one(Job, self._job_id)
                if report is not None:
                    job.stage = report.stage[:64]
                    job.percent = report.percent
                    job.bytes_done = report.bytes_done
                    job.bytes_total = report.bytes_total
                    job.eta_seconds = report.eta_seconds
                _append_log(job, lines)
                job.heartbeat_at = _now()
        except SQLAlchemyError as exc:
            cause = (str(getattr(exc, "orig", None) or "").splitlines() or [type(exc).__name__])[0]
            log.warning("recording the progress of job %s failed: %s", self._job_id, cause)
            return
        self._pending = []

    def finish(self, status: JobStatus, changes: Mapping[str, Any], message: str) -> None:
        with self._lock:
            level = "info" if status is JobStatus.COMPLETED else "error"
            self._add(message, level)
            lines, self._pending = self._pending, []
            with self._ctx.catalog.session(write_lock=True) as session:
                job = session.get_one(Job, self._job_id)
                job.status = status
                job.finished_at = _now()
                for key, value in changes.items():
                    setattr(job, key, value)
                _append_log(job, lines)


@dataclass
class JobRunner:
    """Worker threads that claim pending jobs from the catalog and run them.

    Start with :meth:`start` (which first recovers what dead processes left behind) and stop
    with :meth:`stop`, which asks running jobs to stop and waits for them.
    """

    ctx: ServiceContext
    workers: int = 2
    kinds: Mapping[str, JobKind] = field(default_factory=lambda: JOB_KINDS)
    poll_interval: float = 0.25
    monitor_interval: float = 0.5
    progress_interval: float = 0.5
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False)
    _active: dict[uuid.UUID, threading.Event] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def start(self) -> None:
        failed = recover_dead_jobs(self.ctx)
        work = recover_interrupted_work(self.ctx)
        if failed or any(work.values()):
            log.warning(
                "recovered after dead processes: %d job(s), %d backup(s), %d restore(s)",
                len(failed),
                len(work["backups"]),
                len(work["restores"]),
            )
        self._stop.clear()
        for n in range(self.workers):
            self._spawn(self._work, f"clinvault-job-worker-{n}")
        self._spawn(self._monitor, "clinvault-job-monitor")

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        with self._lock:
            for cancel in self._active.values():
                cancel.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.claim()
            except Exception:
                log.exception("claiming a job failed")
                self._stop.wait(5 * self.poll_interval)
                continue
            if job is None:
                self._stop.wait(self.poll_interval)
            else:
                self.run(job)

    def claim(self) -> Job | None:
        """Take the oldest pending job, atomically; None when there is none."""
        runnable = (Job.status == JobStatus.PENDING, Job.kind.in_(list(self.kinds)))
        with self.ctx.catalog.session() as session:
            if session.scalar(sa.select(Job.id).where(*runnable).limit(1)) is None:
                return None  # a cheap look first, so an idle runner takes no write lock
        with self.ctx.catalog.session(write_lock=True) as session:
            job = session.scalars(
                sa.select(Job)
                .where(*runnable)
                .order_by(Job.created_at, Job.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if job is None:
                return None
            now = _now()
            job.status = JobStatus.RUNNING
            job.worker = current_worker()
            job.started_at = now
            job.heartbeat_at = now
            job.stage = "starting"
            _append_log(job, [log_entry(last_log_seq(job) + 1, "started")])
        return job

    def run(self, job: Job) -> None:
        """Run a claimed job to its end and record the outcome; never raises."""
        cancel = threading.Event()
        with self._lock:
            self._active[job.id] = cancel
        reporter = _Reporter(self.ctx, job, self.progress_interval)
        run = JobRun(
            ctx=self.ctx,
            job_id=job.id,
            params=dict(job.params or {}),
            actor=Actor(job.created_by_id, job.created_by),
            on_progress=reporter.progress,
            cancel=cancel,
            log=reporter.log,
        )
        try:
            self._execute(job, run, reporter)
        except Exception:
            log.exception("recording the end of job %s failed", job.id)
        finally:
            with self._lock:
                self._active.pop(job.id, None)

    def _execute(self, job: Job, run: JobRun, reporter: _Reporter) -> None:
        try:
            result = self.kinds[job.kind].run(run)
        except Exception as exc:
            status, message = self._failure(job, run, exc)
            if status is JobStatus.FAILED and not isinstance(exc, ClinVaultError):
                log.exception("job %s (%s) failed", job.id, job.kind)
            changes = {"error": message, "stage": status.value, **self._target(run)}
            reporter.finish(status, changes, message)
            return
        changes = {"result": result, "percent": 100.0, "stage": "done", "eta_seconds": None}
        reporter.finish(JobStatus.COMPLETED, {**changes, **self._target(run)}, "completed")

    def _failure(self, job: Job, run: JobRun, exc: Exception) -> tuple[JobStatus, str]:
        if isinstance(exc, CancelledError) or run.cancel.is_set():
            if self._stop.is_set() and not self._cancel_requested(job.id):
                return JobStatus.FAILED, "interrupted: the service stopped while the job ran"
            return JobStatus.CANCELLED, "cancelled"
        return JobStatus.FAILED, error_text(exc)

    @staticmethod
    def _target(run: JobRun) -> dict[str, Any]:
        if run.target is None:
            return {}
        return {"target_type": run.target[0], "target_id": run.target[1]}

    def _cancel_requested(self, job_id: uuid.UUID) -> bool:
        with self.ctx.catalog.session() as session:
            return bool(session.scalar(sa.select(Job.cancel_requested).where(Job.id == job_id)))

    def _monitor(self) -> None:
        """Heartbeat the running jobs and turn cancel requests into their events."""
        while not self._stop.wait(self.monitor_interval):
            with self._lock:
                active = dict(self._active)
            if not active:
                continue
            try:
                with self.ctx.catalog.session() as session:
                    session.execute(
                        sa.update(Job).where(Job.id.in_(list(active))).values(heartbeat_at=_now())
                    )
                    wanted = session.scalars(
                        sa.select(Job.id).where(Job.id.in_(list(active)), Job.cancel_requested)
                    ).all()
            except Exception:
                log.exception("job heartbeat failed")
                continue
            for job_id in wanted:
                active[job_id].set()
