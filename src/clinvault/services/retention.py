"""Retention: which backups a schedule's rules keep, and deleting the others.

:func:`plan_retention` is pure: backups, rules and the time in, one :class:`Decision` per
backup out, each with every reason it is kept or deleted. A backup is kept when *any* rule
keeps it (restic's ``forget`` semantics):

* ``keep_last`` N: the N newest backups;
* ``keep_daily`` / ``keep_weekly`` / ``keep_monthly`` / ``keep_yearly`` N: for the last N
  days (ISO weeks, months, years) that have backups, the newest backup of each, with periods
  read in the schedule's time zone;
* ``retention_days`` D: every backup made in the last D days.

With no rule at all, everything is kept. Whatever the rules say, these are never deleted:
a backup on legal hold; the newest backup of each type whose verification passed (or, while
no backup of that type has been verified, the newest completed one not known to be bad);
and anything not ``completed`` (running and failed backups are records, not bundles).

:func:`cleanup_old_backups` applies each schedule's rules to the backups it made, and
``safety_backup_retention_days`` to the safety backups taken before restores; backups made
by hand are left to people. A real run deletes through
:class:`~clinvault.services.deletion.BackupDeletion` with ``purge``: the row is marked deleted
(and kept, as restore records and the audit trail refer to it), then the bundle is removed;
each deletion is audited under the system actor (the rules were set, and audited, by a
person), with the reasons as the audit reason.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final

import sqlalchemy as sa

from clinvault.catalog.models import AuditOutcome, Backup, BackupSchedule, BackupStatus
from clinvault.errors import ClinVaultError, InvalidInputError
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.cron import zone
from clinvault.services.deletion import BackupDeletion, DeleteRequest

log = logging.getLogger(__name__)

KEEP_RULES: Final = ("last", "daily", "weekly", "monthly", "yearly")
MAX_KEEP: Final = 100_000
MAX_RETENTION_DAYS: Final = 36_600
GROUP_SAFETY: Final = "safety"
GROUP_MANUAL: Final = "manual"


@dataclass(frozen=True, slots=True)
class RetentionRules:
    """One group's rules; zero (or None for days) means the rule is not used."""

    retention_days: int | None = None
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    @classmethod
    def parse(
        cls, retention_days: int | None, keep_rules: Mapping[str, Any] | None
    ) -> RetentionRules:
        """Rules from a schedule's columns, checked; InvalidInputError names the bad one."""
        if retention_days is not None and (
            isinstance(retention_days, bool)
            or not isinstance(retention_days, int)
            or not 1 <= retention_days <= MAX_RETENTION_DAYS
        ):
            raise InvalidInputError(
                f"retention_days must be a whole number from 1 to {MAX_RETENTION_DAYS}"
            )
        counts: dict[str, int] = {}
        for key, value in (keep_rules or {}).items():
            if key not in KEEP_RULES:
                raise InvalidInputError(f"unknown keep rule {key!r}: use {', '.join(KEEP_RULES)}")
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_KEEP:
                raise InvalidInputError(
                    f"keep rule {key} must be a whole number from 0 to {MAX_KEEP}"
                )
            counts[key] = value
        return cls(retention_days, *(counts.get(key, 0) for key in KEEP_RULES))

    @property
    def empty(self) -> bool:
        return self.retention_days is None and not any(self.keep_counts().values())

    def keep_counts(self) -> dict[str, int]:
        return {
            "last": self.keep_last,
            "daily": self.keep_daily,
            "weekly": self.keep_weekly,
            "monthly": self.keep_monthly,
            "yearly": self.keep_yearly,
        }

    def keep_json(self) -> dict[str, int]:
        """The keep rules as stored in ``backup_schedules.keep_rules`` (unused ones left out)."""
        return {key: value for key, value in self.keep_counts().items() if value}

    def describe(self) -> str:
        parts = [f"{key} {value}" for key, value in self.keep_counts().items() if value]
        if self.retention_days is not None:
            parts.append(f"{self.retention_days} days")
        return ", ".join(parts) or "none"


@dataclass(frozen=True, slots=True)
class BackupFacts:
    """What retention needs to know about one backup."""

    id: str
    name: str
    type: str
    created_at: datetime
    status: str = BackupStatus.COMPLETED.value
    legal_hold: bool = False
    is_safety_backup: bool = False
    verify_status: str | None = None
    schedule_id: str | None = None

    @classmethod
    def of(cls, row: Backup) -> BackupFacts:
        return cls(
            id=str(row.id),
            name=row.name,
            type=row.type.value,
            created_at=row.created_at,
            status=row.status.value,
            legal_hold=row.legal_hold,
            is_safety_backup=row.is_safety_backup,
            verify_status=row.verify_status,
            schedule_id=str(row.schedule_id) if row.schedule_id else None,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    backup_id: str
    name: str
    type: str
    created_at: datetime
    keep: bool
    reasons: tuple[str, ...]
    group: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "name": self.name,
            "type": self.type,
            "created_at": self.created_at.isoformat(),
            "group": self.group,
            "action": "keep" if self.keep else "delete",
            "reasons": list(self.reasons),
        }


def newest_good(backups: Iterable[BackupFacts]) -> dict[str, str]:
    """Backup id → why it is protected: the newest verified-good backup of each type.

    A type with no passed verification yet protects its newest completed backup whose
    verification did not fail, so an unverified history is never emptied by age rules.
    """
    completed = sorted(
        (b for b in backups if b.status == BackupStatus.COMPLETED.value),
        key=lambda b: (b.created_at, b.id),
        reverse=True,
    )
    protected: dict[str, str] = {}
    for backup_type in sorted({b.type for b in completed}):
        of_type = [b for b in completed if b.type == backup_type]
        verified = next((b for b in of_type if b.verify_status == "passed"), None)
        if verified is not None:
            protected[verified.id] = f"newest verified-good {backup_type} backup"
            continue
        usable = next((b for b in of_type if b.verify_status != "failed"), None)
        if usable is not None:
            protected[usable.id] = f"newest completed {backup_type} backup (none verified yet)"
    return protected


def _periods(tz: tzinfo) -> dict[str, Callable[[datetime], Hashable]]:
    def local(when: datetime) -> datetime:
        return when.astimezone(tz)

    return {
        "daily": lambda w: local(w).date(),
        "weekly": lambda w: local(w).isocalendar()[:2],
        "monthly": lambda w: (local(w).year, local(w).month),
        "yearly": lambda w: local(w).year,
    }


def _label(rule: str, key: Hashable) -> str:
    if rule == "weekly" and isinstance(key, tuple):
        return f"week {key[0]}-W{key[1]:02d}"
    if rule == "monthly" and isinstance(key, tuple):
        return f"month {key[0]}-{key[1]:02d}"
    if rule == "yearly":
        return f"year {key}"
    return f"day {key}"


def plan_retention(
    backups: Sequence[BackupFacts],
    rules: RetentionRules,
    now: datetime,
    *,
    tz: tzinfo = UTC,
    protected: Mapping[str, str] | None = None,
    group: str = "",
) -> list[Decision]:
    """Decide, for each of ``backups``, whether ``rules`` keep it, and say why.

    ``protected`` maps backup ids that must stay to the reason (default: the newest good
    backup of each type among ``backups``). Decisions come newest first.
    """
    guard = newest_good(backups) if protected is None else protected
    ordered = sorted(backups, key=lambda b: (b.created_at, b.id), reverse=True)
    candidates = [b for b in ordered if b.status == BackupStatus.COMPLETED.value]
    reasons: dict[str, list[str]] = {b.id: [] for b in ordered}
    for b in ordered:
        if b.status != BackupStatus.COMPLETED.value:
            reasons[b.id].append(f"{b.status}: only completed backups are subject to retention")
    if rules.empty:
        for b in candidates:
            reasons[b.id].append("no retention rule applies")
    for b in candidates[: rules.keep_last]:
        reasons[b.id].append(f"one of the last {rules.keep_last}")
    for rule, bucket in _periods(tz).items():
        wanted = rules.keep_counts()[rule]
        seen: set[Hashable] = set()
        for b in candidates:
            if len(seen) >= wanted:
                break
            key = bucket(b.created_at)
            if key not in seen:
                seen.add(key)
                reasons[b.id].append(f"newest of {_label(rule, key)} ({rule} {wanted})")
    if rules.retention_days is not None:
        cutoff = now - timedelta(days=rules.retention_days)
        for b in candidates:
            if b.created_at >= cutoff:
                reasons[b.id].append(f"made within the last {rules.retention_days} days")
    for b in ordered:
        if b.legal_hold:
            reasons[b.id].append("on legal hold")
        if b.id in guard:
            reasons[b.id].append(guard[b.id])
    decisions = []
    for b in ordered:
        kept = bool(reasons[b.id])
        why = reasons[b.id] or [f"outside every retention rule ({rules.describe()})"]
        decisions.append(Decision(b.id, b.name, b.type, b.created_at, kept, tuple(why), group))
    return decisions


# --- applying the rules ----------------------------------------------------------------------


@dataclass
class RetentionReport:
    dry_run: bool
    ran_at: datetime
    schedule_id: str | None
    decisions: list[Decision] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def to_delete(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "ran_at": self.ran_at.isoformat(),
            "schedule_id": self.schedule_id,
            "would_delete" if self.dry_run else "deleted": (
                [d.backup_id for d in self.to_delete] if self.dry_run else list(self.deleted)
            ),
            "kept": sum(1 for d in self.decisions if d.keep),
            "decisions": [d.to_json() for d in self.decisions],
            "errors": list(self.errors),
        }


def _schedule_rules(schedule: BackupSchedule) -> tuple[RetentionRules, tzinfo]:
    rules = RetentionRules.parse(schedule.retention_days, schedule.keep_rules)
    return rules, zone(schedule.timezone)


def plan_cleanup(
    ctx: ServiceContext, *, schedule_id: uuid.UUID | None = None, now: datetime | None = None
) -> RetentionReport:
    """The decisions of a retention run, grouped per schedule; changes nothing."""
    moment = now or datetime.now(UTC)
    with ctx.catalog.session() as session:
        rows = session.scalars(sa.select(Backup).where(Backup.deleted_at.is_(None))).all()
        query = sa.select(BackupSchedule).order_by(BackupSchedule.name)
        if schedule_id is not None:
            query = query.where(BackupSchedule.id == schedule_id)
        schedules = session.scalars(query).all()
    facts = [BackupFacts.of(r) for r in rows]
    guard = newest_good(facts)
    report = RetentionReport(True, moment, str(schedule_id) if schedule_id else None)
    for schedule in schedules:
        rules, tz = _schedule_rules(schedule)
        mine = [f for f in facts if f.schedule_id == str(schedule.id) and not f.is_safety_backup]
        report.decisions += plan_retention(
            mine, rules, moment, tz=tz, protected=guard, group=f"schedule:{schedule.name}"
        )
    if schedule_id is None:
        safety_rules = RetentionRules(retention_days=ctx.settings.safety_backup_retention_days)
        safety = [f for f in facts if f.is_safety_backup]
        report.decisions += plan_retention(
            safety, safety_rules, moment, protected=guard, group=GROUP_SAFETY
        )
        scheduled = {str(s.id) for s in schedules}
        manual = [
            f
            for f in facts
            if not f.is_safety_backup and (f.schedule_id is None or f.schedule_id not in scheduled)
        ]
        report.decisions += plan_retention(
            manual, RetentionRules(), moment, protected=guard, group=GROUP_MANUAL
        )
    return report


def cleanup_old_backups(
    ctx: ServiceContext,
    *,
    dry_run: bool,
    schedule_id: uuid.UUID | None = None,
    actor: Actor | None = None,
    now: datetime | None = None,
) -> RetentionReport:
    """Apply retention (one schedule's, or every group's); a dry run only reports."""
    report = plan_cleanup(ctx, schedule_id=schedule_id, now=now)
    report.dry_run = dry_run
    if dry_run:
        return report
    system = Actor.system()
    for decision in report.to_delete:
        error = _delete_backup(ctx, decision, system)
        if error is None:
            report.deleted.append(decision.backup_id)
        else:
            report.errors.append(f"{decision.name}: {error}")
    who = actor or system
    ctx.audit.record(
        "retention.run",
        actor_id=who.id,
        actor_name=who.name,
        outcome=AuditOutcome.FAILURE if report.errors else AuditOutcome.SUCCESS,
        target_type="schedule" if schedule_id else None,
        target_id=str(schedule_id) if schedule_id else None,
        details={
            "deleted": report.deleted[:200],
            "kept": sum(1 for d in report.decisions if d.keep),
            "errors": report.errors[:20],
        },
    )
    return report


def _delete_backup(ctx: ServiceContext, decision: Decision, actor: Actor) -> str | None:
    """Delete and purge one backup through the deletion service, which re-checks the legal
    hold (and that no restore reads it) under lock, and audits it; the problem, or None."""
    request = DeleteRequest(
        decision.backup_id,
        actor,
        purge=True,
        reason="retention: " + "; ".join(decision.reasons),
    )
    try:
        BackupDeletion(ctx).delete(request)
    except ClinVaultError as exc:
        log.warning("retention could not delete backup %s: %s", decision.name, exc.message)
        return exc.message
    return None
