"""Jobs: live events, cancellation, recovery after a dead worker, one run per job."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clinvault.catalog.models import (
    Backup,
    BackupSchedule,
    BackupStatus,
    BackupType,
    Job,
    JobStatus,
)
from clinvault.config import Settings
from clinvault.engine import bundle
from clinvault.engine.pgconn import ConnInfo
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.job_handlers import JobKind, JobRun
from clinvault.services.jobs import MAX_LOG_LINES, JobRunner, JobService
from tests.api_ops.conftest import Ops, read_sse, running_ops
from tests.services.conftest import Platform

ACTOR = Actor("u-jobs", "Job Tester")


def _dead_worker() -> dict[str, Any]:
    """The identity of a process of this host that has exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return {"host": socket.gethostname(), "pid": proc.pid, "start": "1"}


@pytest.mark.pg
def test_event_stream_sends_progress_logs_and_done_and_resumes(ops: Ops) -> None:
    answer = ops.admin.post("/api/v1/backup/create", json={"type": "full", "level": 3})
    events_url = answer.json()["links"]["events"]
    with ops.admin.stream("GET", events_url) as stream:
        events = list(read_sse(stream))
    names = [name for name, _, _ in events]
    assert names[-1] == "done" and names.count("done") == 1
    assert "progress" in names and "log" in names
    progress = [data for name, _, data in events if name == "progress"]
    assert progress[-1]["status"] == "completed"
    assert progress[-1]["percent"] == 100.0
    assert any(p["bytes_total"] > 0 for p in progress)
    logs = [data for name, _, data in events if name == "log"]
    assert [line["seq"] for line in logs] == list(range(1, len(logs) + 1))
    assert any("stage" in line["message"] for line in logs)

    halfway = logs[len(logs) // 2]["seq"]
    with ops.admin.stream("GET", events_url, headers={"Last-Event-ID": str(halfway)}) as again:
        resumed = list(read_sse(again))
    resumed_logs = [data["seq"] for name, _, data in resumed if name == "log"]
    assert resumed_logs == [line["seq"] for line in logs if line["seq"] > halfway]
    assert resumed[-1][0] == "done"
    assert resumed[-1][1] == str(logs[-1]["seq"])
    missing = ops.admin.get(f"/api/v1/jobs/{uuid.uuid4()}/events")
    assert missing.status_code == 404


@pytest.mark.pg
@pytest.mark.slow
def test_cancelling_a_running_backup_leaves_no_objects(platform: Platform) -> None:
    big = platform.files_root / "studies" / "zz-large.bin"
    with big.open("wb") as out:
        for _ in range(24):
            out.write(os.urandom(4 << 20))
    with running_ops(platform) as ops:
        answer = ops.admin.post("/api/v1/backup/create", json={"type": "full", "level": 19})
        job_id = answer.json()["job_id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = ops.admin.get(f"/api/v1/jobs/{job_id}").json()
            if job["status"] == "running" and job["bytes_done"] > 0:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the backup never got going")
        cancel = ops.admin.post(f"/api/v1/jobs/{job_id}/cancel")
        assert cancel.status_code == 202
        assert cancel.json()["cancel_requested"] is True
        job = ops.wait_job(job_id, timeout=60)
        assert job["status"] == "cancelled"
        assert job["finished_at"] is not None
        assert not list(ops.ctx.storage.list(bundle.BACKUPS_PREFIX))
        with ops.ctx.catalog.session() as session:
            rows = session.query(Backup).all()
        assert [r.status for r in rows] == [BackupStatus.FAILED]
        assert ops.admin.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 409
        assert [e.target_id for e in ops.events("job.cancel")] == [job_id]


@pytest.mark.pg
def test_a_job_left_running_by_a_dead_worker_is_failed_at_start_up(platform: Platform) -> None:
    ctx = platform.context()
    worker = _dead_worker()
    backup_id = uuid.uuid4()
    now = datetime.now(UTC)
    with ctx.catalog.session() as session:
        session.add(
            Backup(
                id=backup_id,
                name="half-written",
                type=BackupType.FULL,
                status=BackupStatus.IN_PROGRESS,
                compression="zstd",
                compression_level=3,
                created_by=ACTOR.name,
                created_at=now,
                started_at=now,
                metadata_={"worker": worker},
            )
        )
        session.add(
            Job(
                id=uuid.uuid4(),
                kind="backup.create",
                status=JobStatus.RUNNING,
                params={"type": "full", "name": "half-written"},
                created_by=ACTOR.name,
                created_at=now,
                started_at=now,
                worker=worker,
                log=[],
            )
        )
    ctx.storage.write_bytes(bundle.object_key(str(backup_id), "database.dump.zst"), b"partial")
    ctx.catalog.dispose()

    with running_ops(platform) as ops:
        jobs = ops.admin.get("/api/v1/jobs").json()["items"]
        assert [j["status"] for j in jobs] == ["failed"]
        assert "interrupted" in jobs[0]["error"]
        details = ops.admin.get(f"/api/v1/backup/{backup_id}").json()
        assert details["status"] == "failed"
        assert not list(ops.ctx.storage.list(bundle.BACKUPS_PREFIX))
        assert len(ops.events("job.recover")) == 1
        assert len(ops.events("backup.recover")) == 1


# --- the runner on its own ---------------------------------------------------------------------


def _counting_kinds(
    seen: list[tuple[uuid.UUID, int]], delay: float = 0.02
) -> Mapping[str, JobKind]:
    lock = threading.Lock()

    def run(job: JobRun) -> dict[str, Any]:
        with lock:
            seen.append((job.job_id, id(job.ctx)))
        time.sleep(delay)
        return {"n": job.params["n"]}

    return {"test.count": JobKind(lambda _ctx, params: dict(params), run)}


def _settings(home: Path, catalog_url: str) -> Settings:
    return Settings(
        data_dir=home,
        catalog_url=catalog_url,  # type: ignore[arg-type]
        storage_url="memory://",
        database_url="postgresql://nobody@127.0.0.1:1/none",  # type: ignore[arg-type]
    )


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.pg), "sqlite"])
def two_contexts(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[ServiceContext, ServiceContext]]:
    """Two service contexts (two engines, as two processes would have) on one catalog."""
    if request.param == "postgresql":
        database: ConnInfo = request.getfixturevalue("database")
        url = database.url()
    else:
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
    first = ServiceContext(_settings(tmp_path / "a", url))
    second = ServiceContext(_settings(tmp_path / "b", url))
    first.catalog.upgrade()
    yield first, second
    first.catalog.dispose()
    second.catalog.dispose()


def _wait(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_two_runners_sharing_a_catalog_never_run_a_job_twice(
    two_contexts: tuple[ServiceContext, ServiceContext],
) -> None:
    first, second = two_contexts
    seen: list[tuple[uuid.UUID, int]] = []
    kinds = _counting_kinds(seen)
    service = JobService(first, kinds)
    submitted = [service.submit("test.count", {"n": n}, ACTOR).id for n in range(60)]
    runners = [
        JobRunner(ctx, workers=3, kinds=kinds, poll_interval=0.01) for ctx in (first, second)
    ]
    for runner in runners:
        runner.start()
    try:
        _wait(lambda: service.list(status=JobStatus.COMPLETED, limit=200)[1] == len(submitted))
    finally:
        for runner in runners:
            runner.stop()
    ran = [job_id for job_id, _ in seen]
    assert sorted(ran) == sorted(submitted)  # every job once, none twice
    assert {ctx for _, ctx in seen} == {id(first), id(second)}  # both took their share
    results = {job.result["n"] for job in service.list(limit=200)[0] if job.result}
    assert results == set(range(60))


def test_pending_job_is_cancelled_at_once_and_never_runs(tmp_path: Path) -> None:
    ctx = ServiceContext(_settings(tmp_path, f"sqlite:///{tmp_path / 'catalog.db'}"))
    seen: list[tuple[uuid.UUID, int]] = []
    kinds = _counting_kinds(seen)
    service = JobService(ctx, kinds)
    job = service.submit("test.count", {"n": 1}, ACTOR)
    cancelled = service.cancel(job.id, ACTOR)
    assert cancelled.status is JobStatus.CANCELLED
    runner = JobRunner(ctx, workers=1, kinds=kinds, poll_interval=0.01)
    runner.start()
    time.sleep(0.3)
    runner.stop()
    assert seen == []
    assert service.get(job.id).status is JobStatus.CANCELLED


def test_job_log_keeps_the_last_lines_and_failures_keep_no_secret(tmp_path: Path) -> None:
    ctx = ServiceContext(_settings(tmp_path, f"sqlite:///{tmp_path / 'catalog.db'}"))

    def chatty(job: JobRun) -> dict[str, Any]:
        for n in range(MAX_LOG_LINES + 200):
            job.log(f"line {n}")
        raise RuntimeError("postgresql://user:hunter2@db/x refused")

    kinds = {"test.chatty": JobKind(lambda _ctx, params: dict(params), chatty)}
    service = JobService(ctx, kinds)
    job = service.submit("test.chatty", {}, ACTOR)
    runner = JobRunner(ctx, workers=1, kinds=kinds, poll_interval=0.01)
    runner.start()
    try:
        _wait(lambda: service.get(job.id).status is JobStatus.FAILED)
    finally:
        runner.stop()
    done = service.get(job.id)
    assert len(done.log) == MAX_LOG_LINES
    assert done.log[-1]["seq"] > MAX_LOG_LINES + 200
    assert "hunter2" not in (done.error or "") and "hunter2" not in str(done.log)
    assert done.error is not None and "RuntimeError" in done.error
    assert service.events(job.id, after=done.log[-2]["seq"]).lines == [done.log[-1]]


@pytest.mark.pg
def test_a_scheduled_backup_job_links_the_backup_to_its_schedule(ops: Ops) -> None:
    schedule = BackupSchedule(
        id=uuid.uuid4(),
        name="nightly",
        backup_type=BackupType.DATABASE,
        cron_expression="0 3 * * *",
        created_by=ACTOR.name,
    )
    with ops.ctx.catalog.session() as session:
        session.add(schedule)
    params = {"type": "database", "level": 1, "schedule_id": str(schedule.id)}
    job = JobService(ops.ctx).submit("backup.create", params, Actor.system())
    done = ops.wait_job(str(job.id))
    assert done["status"] == "completed", done
    with ops.ctx.catalog.session() as session:
        backup = session.get_one(Backup, uuid.UUID(done["result"]["backup_id"]))
    assert backup.schedule_id == schedule.id
