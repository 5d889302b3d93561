"""Retention keeps exactly what the rules say, and never a held or the last good backup."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from clinvault.catalog.models import AuditOutcome, Backup, BackupStatus, BackupType
from clinvault.engine import bundle
from clinvault.errors import InvalidInputError
from clinvault.services import retention
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.retention import (
    BackupFacts,
    RetentionRules,
    cleanup_old_backups,
    plan_retention,
)
from clinvault.services.schedules import ScheduleService, ScheduleSpec
from tests.schedule.conftest import audit_events

NOW = datetime(2025, 6, 30, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


def at(days: float = 0, hours: float = 0) -> datetime:
    return NOW - timedelta(days=days, hours=hours)


def b(
    name: str,
    when: datetime,
    *,
    type_: str = "full",
    verified: str | None = None,
    hold: bool = False,
    status: str = "completed",
) -> BackupFacts:
    return BackupFacts(
        id=name,
        name=name,
        type=type_,
        created_at=when,
        status=status,
        legal_hold=hold,
        verify_status=verified,
    )


@dataclass(frozen=True)
class Case:
    rules: RetentionRules
    backups: Sequence[BackupFacts]
    deleted: set[str]
    tz: ZoneInfo | None = None


DAILY_SIX = [b(f"d{n}", at(days=6 - n)) for n in range(1, 7)]  # d6 newest

CASES = {
    "no rules keep everything": Case(RetentionRules(), DAILY_SIX, set()),
    "keep last 3": Case(RetentionRules(keep_last=3), DAILY_SIX, {"d1", "d2", "d3"}),
    "keep daily 2 with two a day": Case(
        RetentionRules(keep_daily=2),
        [
            b("mon-am", at(days=2, hours=6)),
            b("mon-pm", at(days=2)),
            b("tue-am", at(days=1, hours=6)),
            b("tue-pm", at(days=1)),
            b("wed-am", at(hours=6)),
            b("wed-pm", at()),
        ],
        {"mon-am", "mon-pm", "tue-am", "wed-am"},
    ),
    "keep weekly 2 over three ISO weeks": Case(
        RetentionRules(keep_weekly=2),
        [
            b("w25-mon", datetime(2025, 6, 16, 1, tzinfo=UTC)),
            b("w25-sun", datetime(2025, 6, 22, 1, tzinfo=UTC)),
            b("w26-tue", datetime(2025, 6, 24, 1, tzinfo=UTC)),
            b("w26-sat", datetime(2025, 6, 28, 1, tzinfo=UTC)),
            b("w27-mon", datetime(2025, 6, 30, 1, tzinfo=UTC)),
        ],
        {"w25-mon", "w25-sun", "w26-tue"},
    ),
    "keep monthly 2 and yearly 2": Case(
        RetentionRules(keep_monthly=2, keep_yearly=2),
        [
            b("2023-12", datetime(2023, 12, 31, tzinfo=UTC)),
            b("2024-11", datetime(2024, 11, 30, tzinfo=UTC)),
            b("2024-12a", datetime(2024, 12, 1, tzinfo=UTC)),
            b("2024-12b", datetime(2024, 12, 31, tzinfo=UTC)),
            b("2025-05", datetime(2025, 5, 31, tzinfo=UTC)),
            b("2025-06a", datetime(2025, 6, 1, tzinfo=UTC)),
            b("2025-06b", datetime(2025, 6, 29, tzinfo=UTC)),
        ],
        # months: 2025-06b, 2025-05; years: 2025-06b, 2024-12b.
        {"2023-12", "2024-11", "2024-12a", "2025-06a"},
    ),
    "retention days 7": Case(
        RetentionRules(retention_days=7),
        [b("1d", at(days=1)), b("3d", at(days=3)), b("8d", at(days=8)), b("10d", at(days=10))],
        {"8d", "10d"},
    ),
    "days or keep rules: a backup kept by either stays": Case(
        RetentionRules(retention_days=2, keep_last=3),
        [b(f"{n}d", at(days=n)) for n in (1, 3, 5, 7, 9)],
        {"7d", "9d"},
    ),
    "legal hold is never deleted": Case(
        RetentionRules(keep_last=1),
        [b("old-held", at(days=40), hold=True), b("old", at(days=30)), b("new", at(days=1))],
        {"old"},
    ),
    "the newest verified-good backup of a type stays": Case(
        RetentionRules(keep_last=1),
        [
            b("good-older", at(days=9), verified="passed"),
            b("good", at(days=8), verified="passed"),
            b("bad", at(days=2), verified="failed"),
            b("unverified", at(days=1)),
        ],
        {"good-older", "bad"},
    ),
    "each type keeps its own last good": Case(
        RetentionRules(retention_days=1),
        [
            b("full-old", at(days=10), verified="passed"),
            b("db-old", at(days=9), type_="database", verified="passed"),
            b("db-older", at(days=12), type_="database", verified="passed"),
            b("full-new", at(hours=1)),
        ],
        {"db-older"},
    ),
    "nothing verified yet: the newest completed stays": Case(
        RetentionRules(retention_days=1),
        [b("a", at(days=5)), b("b", at(days=4)), b("c", at(days=3), verified="failed")],
        {"a", "c"},
    ),
    "running and failed backups are not touched": Case(
        RetentionRules(keep_last=1),
        [
            b("failed", at(days=9), status="failed"),
            b("running", at(days=8), status="in_progress"),
            b("old", at(days=5)),
            b("new", at(days=1)),
        ],
        {"old"},
    ),
    "days are read in the schedule's time zone (UTC)": Case(
        RetentionRules(keep_daily=2),
        [
            b("28th-noon", datetime(2025, 6, 28, 12, tzinfo=UTC)),
            b("29th-2130z", datetime(2025, 6, 29, 21, 30, tzinfo=UTC)),
            b("29th-2230z", datetime(2025, 6, 29, 22, 30, tzinfo=UTC)),
        ],
        {"29th-2130z"},
    ),
    "days are read in the schedule's time zone (Berlin)": Case(
        RetentionRules(keep_daily=2),
        [
            b("28th-noon", datetime(2025, 6, 28, 12, tzinfo=UTC)),
            b("29th-2130z", datetime(2025, 6, 29, 21, 30, tzinfo=UTC)),  # 23:30 on the 29th
            b("29th-2230z", datetime(2025, 6, 29, 22, 30, tzinfo=UTC)),  # 00:30 on the 30th
        ],
        {"28th-noon"},
        tz=BERLIN,
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_plan_keeps_exactly_what_the_rules_say(case: Case) -> None:
    decisions = plan_retention(case.backups, case.rules, NOW, tz=case.tz or UTC)

    assert {d.name for d in decisions if not d.keep} == case.deleted
    assert {d.name for d in decisions} == {x.name for x in case.backups}
    assert all(d.reasons for d in decisions)
    for decision in decisions:
        facts = next(x for x in case.backups if x.name == decision.name)
        if facts.legal_hold:
            assert decision.keep and "on legal hold" in decision.reasons


def test_reasons_say_why_each_backup_stays_or_goes() -> None:
    backups = [
        b("held", at(days=90), hold=True),
        b("verified", at(days=60), verified="passed"),
        b("month", at(days=35)),
        b("old", at(days=34)),
        b("recent", at(days=2)),
        b("newest", at(days=1)),
    ]
    rules = RetentionRules(retention_days=3, keep_last=1, keep_monthly=2)
    why = {d.name: d.reasons for d in plan_retention(backups, rules, NOW)}

    assert why["newest"] == (
        "one of the last 1",
        "newest of month 2025-06 (monthly 2)",
        "made within the last 3 days",
    )
    assert why["recent"] == ("made within the last 3 days",)
    assert why["old"] == ("newest of month 2025-05 (monthly 2)",)
    assert why["month"] == ("outside every retention rule (last 1, monthly 2, 3 days)",)
    assert why["verified"] == ("newest verified-good full backup",)
    assert why["held"] == ("on legal hold",)


@pytest.mark.parametrize(
    ("days", "keep", "message"),
    [
        (0, None, "retention_days"),
        (None, {"hourly": 3}, "unknown keep rule"),
        (None, {"last": -1}, "keep rule last"),
        (None, {"daily": True}, "keep rule daily"),
    ],
)
def test_bad_rules_are_refused(
    days: int | None, keep: dict[str, object] | None, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        RetentionRules.parse(days, keep)


# --- real runs on a catalog and a storage ----------------------------------------------------


def _stored_backup(
    ctx: ServiceContext,
    name: str,
    created: datetime,
    *,
    schedule_id: uuid.UUID | None = None,
    hold: bool = False,
    safety: bool = False,
    verified: str | None = None,
) -> uuid.UUID:
    """A completed backup row with two objects in storage (no platform needed)."""
    backup_id = uuid.uuid4()
    for part in ("database.dump.zst", "manifest.json"):
        ctx.storage.write_bytes(bundle.object_key(str(backup_id), part), b"x" * 100)
    with ctx.catalog.session() as session:
        session.add(
            Backup(
                id=backup_id,
                name=name,
                type=BackupType.FULL,
                status=BackupStatus.COMPLETED,
                file_path=f"{ctx.storage.url}/{bundle.bundle_prefix(str(backup_id))}",
                compression="zstd",
                compression_level=3,
                created_by="test",
                created_at=created,
                completed_at=created,
                file_size_compressed=200,
                legal_hold=hold,
                is_safety_backup=safety,
                verify_status=verified,
                schedule_id=schedule_id,
            )
        )
    return backup_id


def _objects(ctx: ServiceContext, backup_id: uuid.UUID) -> list[str]:
    return [i.key for i in ctx.storage.list(bundle.bundle_prefix(str(backup_id)))]


def test_dry_run_changes_nothing_and_real_run_deletes_purges_and_audits(
    ctx: ServiceContext,
) -> None:
    now = datetime.now(UTC)
    schedule = ScheduleService(ctx).create(
        ScheduleSpec("nightly", "full", "0 2 * * *", retention_days=7), Actor("u1", "Admin")
    )
    ids = {
        "old": _stored_backup(ctx, "old", now - timedelta(days=20), schedule_id=schedule.id),
        "held": _stored_backup(
            ctx, "held", now - timedelta(days=30), schedule_id=schedule.id, hold=True
        ),
        "good": _stored_backup(
            ctx, "good", now - timedelta(days=15), schedule_id=schedule.id, verified="passed"
        ),
        "recent": _stored_backup(ctx, "recent", now - timedelta(days=1), schedule_id=schedule.id),
        "safety-old": _stored_backup(ctx, "safety-old", now - timedelta(days=40), safety=True),
        "safety-new": _stored_backup(ctx, "safety-new", now - timedelta(days=3), safety=True),
        "manual-old": _stored_backup(ctx, "manual-old", now - timedelta(days=400)),
    }
    events_before = len(audit_events(ctx))

    dry = cleanup_old_backups(ctx, dry_run=True)

    assert {d.name for d in dry.to_delete} == {"old", "safety-old"}
    groups = {d.name: d.group for d in dry.decisions}
    assert groups["old"] == "schedule:nightly"
    assert groups["safety-old"] == "safety" and groups["manual-old"] == "manual"
    manual = next(d for d in dry.decisions if d.name == "manual-old")
    assert manual.keep and manual.reasons == ("no retention rule applies",)
    assert len(audit_events(ctx)) == events_before
    with ctx.catalog.session() as session:
        assert (
            session.scalar(
                sa.select(sa.func.count()).select_from(Backup).where(Backup.deleted_at.is_not(None))
            )
            == 0
        )
    assert all(_objects(ctx, i) for i in ids.values())

    real = cleanup_old_backups(ctx, dry_run=False)

    assert sorted(real.deleted) == sorted(str(ids[n]) for n in ("old", "safety-old"))
    assert real.errors == []
    with ctx.catalog.session() as session:
        rows = {r.name: r for r in session.scalars(sa.select(Backup))}
    for name in ("old", "safety-old"):
        assert rows[name].deleted_at is not None and rows[name].file_path is None
        assert rows[name].deleted_by == Actor.system().name
        assert _objects(ctx, ids[name]) == []
    for name in ("held", "good", "recent", "safety-new", "manual-old"):
        assert rows[name].deleted_at is None and _objects(ctx, ids[name])
    deletions = audit_events(ctx, "backup.delete")
    assert {e.target_id for e in deletions} == {str(ids["old"]), str(ids["safety-old"])}
    assert all(e.actor_id == "system" and e.outcome is AuditOutcome.SUCCESS for e in deletions)
    assert all(e.reason and e.reason.startswith("retention: ") for e in deletions)
    run = audit_events(ctx, "retention.run")
    assert len(run) == 1 and run[0].details["deleted"] == real.deleted
    assert ctx.audit.verify().ok

    again = cleanup_old_backups(ctx, dry_run=False)
    assert again.deleted == [] and again.errors == []


def test_a_hold_placed_after_planning_still_wins(
    ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    schedule = ScheduleService(ctx).create(
        ScheduleSpec("hourly", "full", "@hourly", retention_days=1), Actor("u1", "Admin")
    )
    _stored_backup(ctx, "new", now, schedule_id=schedule.id)
    old = _stored_backup(ctx, "old", now - timedelta(days=3), schedule_id=schedule.id)
    plan = cleanup_old_backups(ctx, dry_run=True, schedule_id=schedule.id)
    assert [d.name for d in plan.to_delete] == ["old"]
    with ctx.catalog.session() as session:
        session.get_one(Backup, old).legal_hold = True
    monkeypatch.setattr(retention, "plan_cleanup", lambda *a, **k: plan)  # the stale plan

    report = cleanup_old_backups(ctx, dry_run=False, schedule_id=schedule.id)

    assert report.deleted == []
    assert report.errors and "legal hold" in report.errors[0]
    assert _objects(ctx, old)
