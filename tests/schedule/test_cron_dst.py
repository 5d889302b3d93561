"""Schedules fire at the right instants in their time zone, across daylight-saving changes,
and a run missed while the service was down is caught up once, recorded and notified."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from clinvault.catalog.models import AuditOutcome
from clinvault.errors import InvalidInputError
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.cron import check_expression, next_fires
from clinvault.services.scheduler import Scheduler
from clinvault.services.schedules import ScheduleService, ScheduleSpec
from tests.schedule.conftest import (
    FakeLauncher,
    SmtpSink,
    WebhookSink,
    audit_events,
    notify_settings,
    schedule_row,
)

ADMIN = Actor("u-1", "Ada Admin")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# Europe/Berlin: clocks go 02:00 CET -> 03:00 CEST on 2025-03-30 and 03:00 CEST -> 02:00 CET
# on 2025-10-26. Before: 02:00 local is 01:00 UTC (winter) or 00:00 UTC (summer).
SPRING = {
    "0 2 * * *": [
        utc(2025, 3, 29, 1),
        utc(2025, 3, 30, 1),
        utc(2025, 3, 31, 0),
        utc(2025, 4, 1, 0),
    ],
    # 02:30 does not exist on the 30th: it fires once, shifted past the gap (03:30 CEST).
    "30 2 * * *": [
        utc(2025, 3, 29, 1, 30),
        utc(2025, 3, 30, 1, 30),
        utc(2025, 3, 31, 0, 30),
        utc(2025, 4, 1, 0, 30),
    ],
}
AUTUMN = {
    "0 2 * * *": [
        utc(2025, 10, 25, 0),
        utc(2025, 10, 26, 0),
        utc(2025, 10, 27, 1),
        utc(2025, 10, 28, 1),
    ],
    # 02:30 happens twice on the 26th: it fires once, at the first (summer-time) one.
    "30 2 * * *": [
        utc(2025, 10, 25, 0, 30),
        utc(2025, 10, 26, 0, 30),
        utc(2025, 10, 27, 1, 30),
        utc(2025, 10, 28, 1, 30),
    ],
}


@pytest.mark.parametrize(
    ("start", "expected"),
    [(utc(2025, 3, 28, 12), SPRING), (utc(2025, 10, 24, 12), AUTUMN)],
    ids=["spring-forward", "fall-back"],
)
def test_next_fire_times_across_dst(start: datetime, expected: dict[str, list[datetime]]) -> None:
    for expression, runs in expected.items():
        assert next_fires(expression, "Europe/Berlin", start, 4) == runs


def test_a_skipped_wall_time_is_found_when_planning_from_inside_the_gap_day() -> None:
    # At 01:10 UTC on the 30th (03:10 CEST) the day's 02:30 run (shifted to 03:30) is ahead.
    assert next_fires("30 2 * * *", "Europe/Berlin", utc(2025, 3, 30, 1, 10), 1) == [
        utc(2025, 3, 30, 1, 30)
    ]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 2 * *", "5 fields"),
        ("0 2 * * * 5", "5 fields"),
        ("61 2 * * *", "invalid cron"),
        ("0 2 30 2 *", "never fires"),
        ("@fortnightly", "unknown cron macro"),
    ],
)
def test_bad_expressions_are_refused(expression: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        check_expression(expression)


def _drive(scheduler: Scheduler, start: datetime, end: datetime, step: timedelta) -> None:
    now = start
    while now <= end:
        report = scheduler.tick(now)
        assert report.errors == []
        assert report.missed == []
        now += step


@pytest.mark.parametrize(
    ("start", "expected"),
    [(utc(2025, 3, 28, 12), SPRING), (utc(2025, 10, 24, 12), AUTUMN)],
    ids=["spring-forward", "fall-back"],
)
def test_schedules_fire_once_a_day_at_the_right_instants(
    ctx: ServiceContext, start: datetime, expected: dict[str, list[datetime]]
) -> None:
    clock = [start]
    service = ScheduleService(ctx, clock=lambda: clock[0])
    for expression in expected:
        spec = ScheduleSpec(f"berlin {expression}", "full", expression, timezone="Europe/Berlin")
        row = service.create(spec, ADMIN)
        assert row.next_run_at == expected[expression][0]
    launcher = FakeLauncher()
    scheduler = Scheduler(ctx, launcher=launcher, clock=lambda: clock[0])

    _drive(scheduler, start, start + timedelta(days=4), timedelta(minutes=15))

    for expression, runs in expected.items():
        assert launcher.times(f"berlin {expression}") == runs
        row = schedule_row(ctx, f"berlin {expression}")
        assert row.last_status == "completed" and row.last_run_at == runs[-1]
    assert len(audit_events(ctx, "schedule.fire")) == 8


def test_a_missed_run_is_caught_up_once_recorded_and_notified(
    make_ctx: Callable[..., ServiceContext], smtp_sink: SmtpSink, webhook_sink: WebhookSink
) -> None:
    ctx = make_ctx(**notify_settings(smtp_sink, webhook_sink))
    created = utc(2025, 3, 1, 12)
    service = ScheduleService(ctx, clock=lambda: created)
    service.create(ScheduleSpec("nightly", "full", "0 2 * * *", timezone="Europe/Berlin"), ADMIN)
    launcher = FakeLauncher()
    scheduler = Scheduler(ctx, launcher=launcher)

    # Down from before the run of the 2nd until 10:00 UTC on the 4th: three runs missed.
    back = utc(2025, 3, 4, 10)
    first = scheduler.tick(back)
    assert first.missed == ["nightly"] and first.fired == ["nightly"]
    for minutes in range(15, 24 * 60, 15):
        report = scheduler.tick(back + timedelta(minutes=minutes))
        assert report.missed == []

    assert launcher.times("nightly") == [back, utc(2025, 3, 5, 1)]
    misses = audit_events(ctx, "schedule.missed")
    assert len(misses) == 1
    assert misses[0].outcome is AuditOutcome.FAILURE
    assert misses[0].details["missed_runs"] == 3
    assert misses[0].details["due_at"] == "2025-03-02T01:00:00.000000Z"
    assert misses[0].details["caught_up"] is True
    fires = audit_events(ctx, "schedule.fire")
    assert [f.details["catch_up"] for f in fires] == [True, False]
    assert schedule_row(ctx, "nightly").next_run_at == utc(2025, 3, 6, 1)

    hooks = [json.loads(h.body) for h in webhook_sink.hooks]
    assert [h["event"] for h in hooks] == ["schedule.missed"]
    assert hooks[0]["details"]["missed_runs"] == 3
    assert hooks[0]["details"]["due_at"] == "2025-03-02T01:00:00+00:00"
    mails = smtp_sink.mails
    assert len(mails) == 1 and "Missed scheduled backup: nightly" in mails[0].message["Subject"]


def test_a_run_found_due_within_the_grace_period_is_not_a_miss(ctx: ServiceContext) -> None:
    created = utc(2025, 5, 1, 12)
    ScheduleService(ctx, clock=lambda: created).create(
        ScheduleSpec("hourly", "database", "0 * * * *"), ADMIN
    )
    launcher = FakeLauncher()
    scheduler = Scheduler(ctx, launcher=launcher)

    report = scheduler.tick(utc(2025, 5, 1, 13, 0, 40))

    assert report.fired == ["hourly"] and report.missed == []
    assert audit_events(ctx, "schedule.missed") == []


def test_schedule_changes_apply_at_the_next_tick_without_restart(ctx: ServiceContext) -> None:
    now = [utc(2025, 5, 1, 12)]
    service = ScheduleService(ctx, clock=lambda: now[0])
    row = service.create(ScheduleSpec("s", "files", "0 3 * * *"), ADMIN)
    launcher = FakeLauncher()
    scheduler = Scheduler(ctx, launcher=launcher)
    assert scheduler.tick(utc(2025, 5, 1, 12, 30)).fired == []

    service.update(row.id, {"cron_expression": "45 12 * * *"}, ADMIN)
    assert scheduler.tick(utc(2025, 5, 1, 12, 45)).fired == ["s"]

    service.toggle(row.id, ADMIN)  # paused
    assert schedule_row(ctx, "s").next_run_at is None
    assert scheduler.tick(utc(2025, 5, 3, 12, 45)).fired == []
    now[0] = utc(2025, 5, 3, 13)
    service.toggle(row.id, ADMIN)  # resumed: planned from now, the pause is not caught up
    assert schedule_row(ctx, "s").next_run_at == utc(2025, 5, 4, 12, 45)
    assert scheduler.tick(utc(2025, 5, 3, 13, 1)).fired == []
    assert launcher.times("s") == [utc(2025, 5, 1, 12, 45)]
