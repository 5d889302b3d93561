"""``clinvault schedule``, ``retention``, ``drill`` and ``notify``: automation from the shell.

Schedules are fired by ``clinvault serve`` (its scheduler); these commands manage them, and
run retention, drills and notification tests by hand. Times are printed in UTC, ISO 8601.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from clinvault.catalog.models import BackupType, Scope
from clinvault.cli.common import context, err_console, print_json
from clinvault.engine.compression import Codec
from clinvault.errors import InvalidInputError
from clinvault.services.actor import Actor
from clinvault.services.drills import DRILL_KIND, VERIFY_KIND, DrillService
from clinvault.services.notify import Notifier
from clinvault.services.retention import cleanup_old_backups
from clinvault.services.schedules import (
    ScheduleService,
    ScheduleSpec,
    preview_runs,
    schedule_to_json,
)

schedule_app = typer.Typer(help="Create and manage backup schedules.", no_args_is_help=True)
retention_app = typer.Typer(help="Apply the retention rules.", no_args_is_help=True)
drill_app = typer.Typer(help="Restore drills and integrity verification.", no_args_is_help=True)
notify_app = typer.Typer(help="Email and webhook notifications.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ScheduleArg = Annotated[str, typer.Argument(help="Schedule id or name.")]
KeepOption = Annotated[int | None, typer.Option(min=0, help="Keep rule (0: not used).")]


def _keep_rules(**counts: int | None) -> dict[str, int] | None:
    given = {key: value for key, value in counts.items() if value is not None}
    return given or None


def _scope(study: list[str] | None, organization: list[str] | None) -> tuple[Scope, list[str]]:
    if study and organization:
        raise InvalidInputError("give --study or --organization, not both")
    if study:
        return Scope.STUDY, list(study)
    if organization:
        return Scope.ORGANIZATION, list(organization)
    return Scope.ALL, []


def _show(data: dict[str, Any], json_: bool) -> None:
    if json_:
        print_json(data)
        return
    for key, value in data.items():
        typer.echo(f"{key:18} {value if value not in (None, [], {}) else '-'}")


# --- schedule ----------------------------------------------------------------------------------


@schedule_app.command("list")
def list_(json_: JsonOption = False) -> None:
    """List schedules with their last and next run (UTC)."""
    rows = [schedule_to_json(r) for r in ScheduleService(context()).list_schedules()]
    if json_:
        print_json(rows)
        return
    if not rows:
        err_console.print("No schedules yet: add one with 'clinvault schedule create'.")
        return
    table = Table("name", "type", "cron", "zone", "active", "next run (UTC)", "last status")
    for r in rows:
        table.add_row(
            r["name"],
            r["backup_type"],
            r["cron_expression"],
            r["timezone"],
            "yes" if r["is_active"] else "paused",
            r["next_run_at"] or "-",
            r["last_status"] or "-",
        )
    Console(width=max(140, Console().width)).print(table)


@schedule_app.command("show")
def show(schedule: ScheduleArg, json_: JsonOption = False) -> None:
    """Show one schedule."""
    _show(schedule_to_json(ScheduleService(context()).get(schedule)), json_)


@schedule_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="Unique name.")],
    type_: Annotated[
        BackupType, typer.Option("--type", help="What to back up.", case_sensitive=False)
    ],
    cron: Annotated[str, typer.Option(help="Cron expression, e.g. '0 2 * * *' or @daily.")],
    timezone: Annotated[str, typer.Option(help="IANA time zone of the cron times.")] = "UTC",
    retention_days: Annotated[
        int | None, typer.Option(min=1, help="Keep backups made in the last N days.")
    ] = None,
    keep_last: KeepOption = None,
    keep_daily: KeepOption = None,
    keep_weekly: KeepOption = None,
    keep_monthly: KeepOption = None,
    keep_yearly: KeepOption = None,
    study: Annotated[list[str] | None, typer.Option(help="Files of a study only.")] = None,
    organization: Annotated[
        list[str] | None, typer.Option(help="Files of an organization only.")
    ] = None,
    compression: Annotated[Codec | None, typer.Option(case_sensitive=False)] = None,
    level: Annotated[int | None, typer.Option(help="Compression level.")] = None,
    paused: Annotated[bool, typer.Option(help="Create it paused.")] = False,
    json_: JsonOption = False,
) -> None:
    """Create a schedule; prints it with its next run (UTC)."""
    scope, ids = _scope(study, organization)
    spec = ScheduleSpec(
        name=name,
        backup_type=type_,
        cron_expression=cron,
        timezone=timezone,
        retention_days=retention_days,
        keep_rules=_keep_rules(
            last=keep_last,
            daily=keep_daily,
            weekly=keep_weekly,
            monthly=keep_monthly,
            yearly=keep_yearly,
        ),
        scope=scope,
        scope_ids=tuple(ids),
        compression=compression,
        compression_level=level,
        is_active=not paused,
    )
    row = ScheduleService(context()).create(spec, Actor.command_line())
    _show(schedule_to_json(row), json_)


@schedule_app.command("update")
def update(
    schedule: ScheduleArg,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    type_: Annotated[BackupType | None, typer.Option("--type", case_sensitive=False)] = None,
    cron: Annotated[str | None, typer.Option(help="New cron expression.")] = None,
    timezone: Annotated[str | None, typer.Option(help="New IANA time zone.")] = None,
    retention_days: Annotated[int | None, typer.Option(min=1)] = None,
    no_retention_days: Annotated[
        bool, typer.Option("--no-retention-days", help="Drop the age rule.")
    ] = False,
    keep_last: KeepOption = None,
    keep_daily: KeepOption = None,
    keep_weekly: KeepOption = None,
    keep_monthly: KeepOption = None,
    keep_yearly: KeepOption = None,
    compression: Annotated[Codec | None, typer.Option(case_sensitive=False)] = None,
    level: Annotated[int | None, typer.Option(help="Compression level.")] = None,
    json_: JsonOption = False,
) -> None:
    """Change a schedule; options not given stay as they are."""
    service = ScheduleService(context())
    current = service.get(schedule)
    changes: dict[str, Any] = {
        key: value
        for key, value in {
            "name": name,
            "backup_type": type_,
            "cron_expression": cron,
            "timezone": timezone,
            "retention_days": retention_days,
            "compression": compression,
            "compression_level": level,
        }.items()
        if value is not None
    }
    if no_retention_days:
        changes["retention_days"] = None
    keep = _keep_rules(
        last=keep_last,
        daily=keep_daily,
        weekly=keep_weekly,
        monthly=keep_monthly,
        yearly=keep_yearly,
    )
    if keep is not None:
        changes["keep_rules"] = {**(current.keep_rules or {}), **keep}
    if not changes:
        raise InvalidInputError("nothing to change: give at least one option")
    row = service.update(current.id, changes, Actor.command_line())
    _show(schedule_to_json(row), json_)


@schedule_app.command("delete")
def delete(
    schedule: ScheduleArg,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm.")] = False,
) -> None:
    """Delete a schedule (its backups stay)."""
    if not yes:
        raise InvalidInputError("deleting a schedule cannot be undone: add --yes to confirm")
    row = ScheduleService(context()).delete(schedule, Actor.command_line())
    err_console.print(f"Schedule {row.name} deleted; its backups are kept.")


@schedule_app.command("toggle")
def toggle(
    schedule: ScheduleArg,
    active: Annotated[
        bool | None, typer.Option("--on/--off", help="Resume or pause; flips when not given.")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Pause or resume a schedule."""
    row = ScheduleService(context()).toggle(schedule, Actor.command_line(), active=active)
    _show(schedule_to_json(row), json_)


@schedule_app.command("preview")
def preview(
    schedule: Annotated[str | None, typer.Argument(help="Schedule id or name.")] = None,
    cron: Annotated[str | None, typer.Option(help="Or: a cron expression to try.")] = None,
    timezone: Annotated[str, typer.Option(help="Time zone for --cron.")] = "UTC",
    count: Annotated[int, typer.Option(min=1, max=50)] = 5,
    json_: JsonOption = False,
) -> None:
    """The next run times (UTC) of a schedule, or of a cron expression."""
    ctx = context()
    service = ScheduleService(ctx)
    if schedule is not None:
        row = service.get(schedule)
        cron, timezone = row.cron_expression, row.timezone
    if cron is None:
        raise InvalidInputError("give a schedule or --cron")
    runs = [r.isoformat() for r in preview_runs(cron, timezone, service.clock(), count)]
    if json_:
        print_json({"cron_expression": cron, "timezone": timezone, "runs": runs})
        return
    for run in runs:
        typer.echo(run)


# --- retention ---------------------------------------------------------------------------------


@retention_app.command("run")
def retention_run(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would go.")] = False,
    schedule: Annotated[str | None, typer.Option(help="Only this schedule's backups.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm a real run.")] = False,
    json_: JsonOption = False,
) -> None:
    """Apply every schedule's retention rules (and the safety-backup setting)."""
    if not dry_run and not yes:
        raise InvalidInputError(
            "a retention run deletes backups: add --yes to confirm, or --dry-run to look first"
        )
    ctx = context()
    schedule_id = ScheduleService(ctx).get(schedule).id if schedule else None
    report = cleanup_old_backups(
        ctx, dry_run=dry_run, schedule_id=schedule_id, actor=Actor.command_line()
    )
    if json_:
        print_json(report.to_json())
    else:
        for d in report.decisions:
            action = "keep  " if d.keep else ("DELETE" if dry_run else "deleted")
            typer.echo(f"{action} {d.name} [{d.group}] {'; '.join(d.reasons)}")
        verb = "would be deleted" if dry_run else "deleted"
        count = len(report.to_delete) if dry_run else len(report.deleted)
        err_console.print(f"{count} backup(s) {verb}, {len(report.decisions) - count} kept.")
    if report.errors:
        for error in report.errors:
            err_console.print(f"[red]error[/red]: {error}")
        raise typer.Exit(1)


# --- drills ------------------------------------------------------------------------------------


@drill_app.command("run")
def drill_run(
    verify: Annotated[
        bool, typer.Option("--verify", help="Integrity verification instead of a restore drill.")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Restore the latest backup (and a random older one) into a sandbox, validate, drop."""
    kind = VERIFY_KIND if verify else DRILL_KIND
    report = DrillService(context()).run(kind, Actor.command_line())
    if json_:
        print_json(report.to_json())
    else:
        for item in report.items:
            typer.echo(f"{item.status:8} {item.name} ({item.type}) {'; '.join(item.problems)}")
        err_console.print(f"{kind}: {report.status}" + (f" ({report.note})" if report.note else ""))
    if report.failed:
        raise typer.Exit(7)


# --- notifications -----------------------------------------------------------------------------


@notify_app.command("test")
def notify_test(json_: JsonOption = False) -> None:
    """Send a test notification to every configured channel."""
    ctx = context()
    deliveries = Notifier(ctx.settings, audit=ctx.audit).test_send(Actor.command_line())
    if json_:
        print_json([d.to_json() for d in deliveries])
    else:
        for d in deliveries:
            state = "sent" if d.ok else f"FAILED: {d.error}"
            typer.echo(f"{d.channel:8} {d.target}: {state}")
    if not all(d.ok for d in deliveries):
        raise typer.Exit(1)
