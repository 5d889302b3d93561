"""Two service instances sharing a PostgreSQL catalog never fire one due schedule twice."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from clinvault.catalog.models import Backup, BackupStatus, BackupType, Job
from clinvault.engine.pgconn import ConnInfo
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.cron import zone
from clinvault.services.drills import VERIFY_KIND, claim_due_check
from clinvault.services.scheduler import Scheduler
from clinvault.services.schedules import ScheduleService, ScheduleSpec
from tests.schedule.conftest import FakeLauncher, audit_events, settings_for

pytestmark = pytest.mark.pg

START = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
SCHEDULES = 6
THREADS_PER_INSTANCE = 4


def _instances(database: ConnInfo, tmp_path: Path) -> list[ServiceContext]:
    """Two contexts (as two processes would have) on one PostgreSQL catalog."""
    return [
        ServiceContext(settings_for(tmp_path / f"instance{n}", catalog_url=database.url()))
        for n in (1, 2)
    ]


def _all_at_once(calls: list[Callable[[], object]]) -> list[BaseException]:
    barrier = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def run(call: Callable[[], object]) -> None:
        barrier.wait(timeout=30)
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    return errors


def test_each_due_schedule_fires_exactly_once(database: ConnInfo, tmp_path: Path) -> None:
    contexts = _instances(database, tmp_path)
    try:
        service = ScheduleService(contexts[0], clock=lambda: START)
        for n in range(SCHEDULES):
            service.create(ScheduleSpec(f"every-5-min-{n}", "full", "*/5 * * * *"), Actor.system())
        launcher = FakeLauncher(pause=0.02)  # widens the window between claim and launch
        schedulers = [Scheduler(ctx, launcher=launcher) for ctx in contexts]

        for fire_at in (START + timedelta(minutes=5), START + timedelta(minutes=10)):
            calls: list[Callable[[], object]] = [
                partial(s.tick, fire_at) for s in schedulers for _ in range(THREADS_PER_INSTANCE)
            ]
            assert _all_at_once(calls) == []

        for n in range(SCHEDULES):
            assert launcher.times(f"every-5-min-{n}") == [
                START + timedelta(minutes=5),
                START + timedelta(minutes=10),
            ]
        assert len(audit_events(contexts[0], "schedule.fire")) == 2 * SCHEDULES
        assert contexts[0].audit.verify().ok
    finally:
        for ctx in contexts:
            ctx.catalog.dispose()


def test_a_due_periodic_check_is_claimed_once(database: ConnInfo, tmp_path: Path) -> None:
    contexts = _instances(database, tmp_path)
    try:
        with contexts[0].catalog.session() as session:
            session.add(
                Backup(
                    name="first",
                    type=BackupType.FULL,
                    status=BackupStatus.COMPLETED,
                    compression="zstd",
                    compression_level=3,
                    created_by="test",
                    created_at=START - timedelta(days=1),
                    completed_at=START - timedelta(days=1),
                )
            )
        claims: list[Job | None] = []
        lock = threading.Lock()

        def claim(ctx: ServiceContext) -> None:
            job = claim_due_check(ctx, VERIFY_KIND, "0 3 * * *", zone("UTC"), START)
            with lock:
                claims.append(job)

        calls: list[Callable[[], object]] = [
            partial(claim, c) for c in contexts for _ in range(THREADS_PER_INSTANCE)
        ]
        assert _all_at_once(calls) == []

        assert len([c for c in claims if c is not None]) == 1
        assert claim_due_check(contexts[1], VERIFY_KIND, "0 3 * * *", zone("UTC"), START) is None
    finally:
        for ctx in contexts:
            ctx.catalog.dispose()
