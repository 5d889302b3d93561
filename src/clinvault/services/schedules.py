"""Backup schedules: create, change, pause and remove them, each change audited.

A schedule says what to back up (type and scope), when (a cron expression read in an IANA
time zone, see :mod:`clinvault.services.cron`), and how long to keep what it made
(``retention_days`` and keep rules, see :mod:`clinvault.services.retention`). Its
``next_run_at`` is computed here whenever the timing changes, and stored in UTC; the
scheduler picks changes up at its next tick, so no restart is needed. Every change is in
the audit trail with the old and new values.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa

from clinvault.catalog.models import BackupSchedule, BackupType, Scope
from clinvault.engine.compression import resolve_level
from clinvault.errors import ConflictError, InvalidInputError, NotFoundError
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.cron import check_expression, next_fire, next_fires, zone
from clinvault.services.queries import parse_id
from clinvault.services.retention import RetentionRules

MAX_NAME: Final = 255
MAX_PREVIEW: Final = 50
EDITABLE: Final = (
    "name",
    "backup_type",
    "cron_expression",
    "timezone",
    "retention_days",
    "keep_rules",
    "scope",
    "scope_ids",
    "compression",
    "compression_level",
    "is_active",
)

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """Everything a schedule is made of, before checking."""

    name: str
    backup_type: BackupType | str
    cron_expression: str
    timezone: str = "UTC"
    retention_days: int | None = None
    keep_rules: Mapping[str, Any] | None = None
    scope: Scope | str = Scope.ALL
    scope_ids: Sequence[str] = field(default_factory=tuple)
    compression: str | None = None
    compression_level: int | None = None
    is_active: bool = True


@dataclass(frozen=True, slots=True)
class _Checked:
    name: str
    backup_type: BackupType
    cron_expression: str
    timezone: str
    retention_days: int | None
    keep_rules: dict[str, int] | None
    scope: Scope
    scope_ids: list[str]
    compression: str
    compression_level: int | None
    is_active: bool


def schedule_to_json(row: BackupSchedule) -> dict[str, Any]:
    """A schedule as the CLI and API show it; times are UTC ISO 8601."""

    def iso(value: datetime | None) -> str | None:
        return value.astimezone(UTC).isoformat() if value is not None else None

    return {
        "id": str(row.id),
        "name": row.name,
        "backup_type": row.backup_type.value,
        "scope": row.scope.value,
        "scope_ids": list(row.scope_ids or []),
        "is_active": row.is_active,
        "cron_expression": row.cron_expression,
        "timezone": row.timezone,
        "retention_days": row.retention_days,
        "keep_rules": dict(row.keep_rules or {}),
        "compression": row.compression,
        "compression_level": row.compression_level,
        "last_run_at": iso(row.last_run_at),
        "next_run_at": iso(row.next_run_at),
        "last_status": row.last_status,
        "created_by": row.created_by,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def _audit_values(row: BackupSchedule) -> dict[str, Any]:
    data = schedule_to_json(row)
    return {key: data[key] for key in (*EDITABLE, "next_run_at")}


class ScheduleService:
    def __init__(self, ctx: ServiceContext, *, clock: Clock | None = None) -> None:
        self.ctx = ctx
        self.clock = clock or (lambda: datetime.now(UTC))

    # --- reading -----------------------------------------------------------------------------

    def list_schedules(self) -> list[BackupSchedule]:
        with self.ctx.catalog.session() as session:
            return list(session.scalars(sa.select(BackupSchedule).order_by(BackupSchedule.name)))

    def get(self, ident: uuid.UUID | str) -> BackupSchedule:
        """A schedule by id, or by exact name."""
        with self.ctx.catalog.session() as session:
            row: BackupSchedule | None = None
            try:
                row = session.get(BackupSchedule, parse_id(ident, "schedule"))
            except NotFoundError:
                row = None
            if row is None and isinstance(ident, str):
                row = session.scalar(sa.select(BackupSchedule).where(BackupSchedule.name == ident))
        if row is None:
            raise NotFoundError(f"schedule {str(ident)!r} not found")
        return row

    def preview(self, ident: uuid.UUID | str, count: int = 5) -> list[datetime]:
        """The next ``count`` run times of a schedule (UTC), from now."""
        row = self.get(ident)
        return preview_runs(row.cron_expression, row.timezone, self.clock(), count)

    # --- changing ----------------------------------------------------------------------------

    def create(
        self,
        spec: ScheduleSpec,
        actor: Actor,
        *,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> BackupSchedule:
        checked = self._check(spec)
        now = self.clock()
        row = BackupSchedule(
            id=uuid.uuid4(),
            **_columns(checked),
            next_run_at=_next_run(checked, now),
            created_by=actor.name,
            created_at=now,
            updated_at=now,
        )
        with self.ctx.catalog.session(write_lock=True) as session:
            self._unique_name(session, checked.name, None)
            session.add(row)
        self._audit(
            "schedule.create", actor, row, {"new": _audit_values(row)}, request_id, client_address
        )
        return row

    def update(
        self,
        ident: uuid.UUID | str,
        changes: Mapping[str, Any],
        actor: Actor,
        *,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> BackupSchedule:
        """Change some fields; the timing is recomputed when cron, zone or activity change."""
        unknown = sorted(set(changes) - set(EDITABLE))
        if unknown:
            raise InvalidInputError(
                f"cannot change {', '.join(unknown)}: use {', '.join(EDITABLE)}"
            )
        current = self.get(ident)
        merged = {**_spec_values(current), **changes}
        checked = self._check(ScheduleSpec(**merged))
        now = self.clock()
        with self.ctx.catalog.session(write_lock=True) as session:
            row = session.get(BackupSchedule, current.id)
            if row is None:
                raise NotFoundError(f"schedule {str(ident)!r} not found")
            old = _audit_values(row)
            self._unique_name(session, checked.name, row.id)
            retime = (
                checked.cron_expression != row.cron_expression
                or checked.timezone != row.timezone
                or checked.is_active != row.is_active
            )
            for key, value in _columns(checked).items():
                setattr(row, key, value)
            if retime:
                row.next_run_at = _next_run(checked, now)
            row.updated_at = now
        new = _audit_values(row)
        changed = {k for k in new if new[k] != old[k]}
        details = {"old": {k: old[k] for k in changed}, "new": {k: new[k] for k in changed}}
        self._audit("schedule.update", actor, row, details, request_id, client_address)
        return row

    def toggle(
        self,
        ident: uuid.UUID | str,
        actor: Actor,
        *,
        active: bool | None = None,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> BackupSchedule:
        """Pause or resume (``active`` None flips). Resuming plans from now: runs that fell
        in the pause are not caught up."""
        current = self.get(ident)
        wanted = (not current.is_active) if active is None else active
        return self.update(
            current.id,
            {"is_active": wanted},
            actor,
            request_id=request_id,
            client_address=client_address,
        )

    def delete(
        self,
        ident: uuid.UUID | str,
        actor: Actor,
        *,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> BackupSchedule:
        """Remove a schedule; its backups stay (no longer bound to its retention rules)."""
        current = self.get(ident)
        with self.ctx.catalog.session(write_lock=True) as session:
            row = session.get(BackupSchedule, current.id)
            if row is None:
                raise NotFoundError(f"schedule {str(ident)!r} not found")
            if row.last_status == "running":
                raise ConflictError(
                    f"schedule {row.name!r} has a run in progress; pause it and delete it when "
                    "the run has finished"
                )
            old = _audit_values(row)
            session.delete(row)
        self._audit("schedule.delete", actor, current, {"old": old}, request_id, client_address)
        return current

    # --- checks ------------------------------------------------------------------------------

    def _check(self, spec: ScheduleSpec) -> _Checked:
        name = " ".join(str(spec.name or "").split())
        if not name or len(name) > MAX_NAME:
            raise InvalidInputError(f"schedule name must be 1 to {MAX_NAME} printable characters")
        try:
            backup_type = BackupType(spec.backup_type)
            scope = Scope(spec.scope or Scope.ALL)
        except ValueError as exc:
            raise InvalidInputError(f"invalid schedule: {exc}") from None
        expression = check_expression(spec.cron_expression or "")
        tz_name = (spec.timezone or "UTC").strip()
        zone(tz_name)
        rules = RetentionRules.parse(spec.retention_days, spec.keep_rules)
        scope_ids = [str(i).strip() for i in spec.scope_ids or () if str(i).strip()]
        if scope is Scope.ALL and scope_ids:
            raise InvalidInputError("scope_ids: only allowed with a study or organization scope")
        if scope is not Scope.ALL and backup_type is not BackupType.FILES:
            raise InvalidInputError("scope: a study or organization scope applies to files backups")
        if scope is not Scope.ALL and not scope_ids:
            raise InvalidInputError(f"scope_ids: name at least one {scope.value}")
        compression = spec.compression or self.ctx.settings.compression
        if compression not in ("zstd", "gzip"):
            raise InvalidInputError("compression must be zstd or gzip")
        if spec.compression_level is not None:
            resolve_level(compression, spec.compression_level)
        return _Checked(
            name=name,
            backup_type=backup_type,
            cron_expression=expression,
            timezone=tz_name,
            retention_days=rules.retention_days,
            keep_rules=rules.keep_json() or None,
            scope=scope,
            scope_ids=scope_ids,
            compression=compression,
            compression_level=spec.compression_level,
            is_active=bool(spec.is_active),
        )

    @staticmethod
    def _unique_name(session: sa.orm.Session, name: str, own: uuid.UUID | None) -> None:
        taken = session.scalar(sa.select(BackupSchedule.id).where(BackupSchedule.name == name))
        if taken is not None and taken != own:
            raise ConflictError(f"a schedule named {name!r} already exists")

    def _audit(
        self,
        action: str,
        actor: Actor,
        row: BackupSchedule,
        details: dict[str, Any],
        request_id: str | None,
        client_address: str | None,
    ) -> None:
        self.ctx.audit.record(
            action,
            actor_id=actor.id,
            actor_name=actor.name,
            target_type="schedule",
            target_id=str(row.id),
            details={"name": row.name, **details},
            request_id=request_id,
            client_address=client_address,
        )


def preview_runs(expression: str, timezone: str, now: datetime, count: int = 5) -> list[datetime]:
    """The next ``count`` fire times of ``expression`` in ``timezone`` after ``now`` (UTC)."""
    if not 1 <= count <= MAX_PREVIEW:
        raise InvalidInputError(f"count must be from 1 to {MAX_PREVIEW}")
    return next_fires(check_expression(expression), zone(timezone), now, count)


def _next_run(checked: _Checked, now: datetime) -> datetime | None:
    if not checked.is_active:
        return None
    return next_fire(checked.cron_expression, zone(checked.timezone), now)


def _columns(checked: _Checked) -> dict[str, Any]:
    return {
        "name": checked.name,
        "backup_type": checked.backup_type,
        "cron_expression": checked.cron_expression,
        "timezone": checked.timezone,
        "retention_days": checked.retention_days,
        "keep_rules": checked.keep_rules,
        "scope": checked.scope,
        "scope_ids": checked.scope_ids,
        "compression": checked.compression,
        "compression_level": checked.compression_level,
        "is_active": checked.is_active,
    }


def _spec_values(row: BackupSchedule) -> dict[str, Any]:
    return {
        "name": row.name,
        "backup_type": row.backup_type,
        "cron_expression": row.cron_expression,
        "timezone": row.timezone,
        "retention_days": row.retention_days,
        "keep_rules": row.keep_rules,
        "scope": row.scope,
        "scope_ids": tuple(row.scope_ids or ()),
        "compression": row.compression,
        "compression_level": row.compression_level,
        "is_active": row.is_active,
    }
