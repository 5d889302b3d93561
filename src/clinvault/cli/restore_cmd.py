"""``clinvault restore``: preview, run and review restores, and manage their checkpoints."""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from clinvault.cli.common import context, err_console, human_bytes, print_json, progress_display
from clinvault.errors import ClinVaultError, InvalidInputError
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.restore import RestoreService
from clinvault.services.restore_ops import RestoreTarget, operation_to_json
from clinvault.services.restore_validation import RestoreScope

app = typer.Typer(help="Preview, run and review restores.", no_args_is_help=True)
checkpoints_app = typer.Typer(
    help="Checkpoints kept by restores (renamed databases, old directories).",
    no_args_is_help=True,
)
app.add_typer(checkpoints_app, name="checkpoints")

BackupArg = Annotated[str, typer.Argument(help="Backup id or name.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ScopeOption = Annotated[
    RestoreScope | None,
    typer.Option(
        "--scope", case_sensitive=False, help="What to restore (default: the backup's type)."
    ),
]
StudyOption = Annotated[
    list[str] | None, typer.Option("--study", help="Restore one study (id or code).")
]
OrgOption = Annotated[
    list[str] | None,
    typer.Option("--organization", help="Restore one organization (id or code)."),
]
YesOption = Annotated[bool, typer.Option("--yes", help="Confirm: the restore replaces data.")]


def _granular(
    scope: RestoreScope | None, study: list[str] | None, organization: list[str] | None
) -> tuple[str, list[str]] | None:
    if study and organization:
        raise InvalidInputError("give --study or --organization, not both")
    if (study or organization) and scope is not None:
        raise InvalidInputError("--scope cannot be combined with --study or --organization")
    if study:
        return "study", list(study)
    if organization:
        return "organization", list(organization)
    return None


def _granular_service(ctx: ServiceContext) -> Any:
    """The granular restore service, imported only when asked for."""
    try:
        module = importlib.import_module("clinvault.services.granular")
    except ImportError:
        raise ClinVaultError(
            "granular restore (--study, --organization) is unavailable in this installation"
        ) from None
    return module.GranularRestoreService(ctx)


def _service() -> tuple[ServiceContext, RestoreService]:
    ctx = context()
    service = RestoreService(ctx)
    service.recover_interrupted()
    return ctx, service


@app.command("preview")
def preview(
    backup: BackupArg,
    scope: ScopeOption = None,
    study: StudyOption = None,
    organization: OrgOption = None,
    json_: JsonOption = False,
) -> None:
    """Show what a restore would change, without changing anything."""
    granular = _granular(scope, study, organization)
    ctx, service = _service()
    if granular is not None:
        data = _granular_service(ctx).preview(backup, granular[0], granular[1])
    else:
        data = service.preview(backup, scope)
    if json_:
        print_json(data)
    else:
        _print_preview(data)


def _print_preview(data: dict[str, Any]) -> None:
    backup = data.get("backup", {})
    typer.echo(
        f"backup   {backup.get('name')} ({backup.get('id')}), taken {backup.get('taken_at')}"
    )
    typer.echo(f"scope    {data.get('scope')}, method {data.get('method')}")
    for problem in data.get("validation", {}).get("problems", []):
        typer.echo(f"problem: {problem}", err=True)
    database = data.get("database")
    if database:
        table = Table("table", "action", "live rows", "backup rows", "modified after backup")
        for t in database["tables"]:
            table.add_row(
                t["table"],
                t["action"],
                *(str(t[k]) if t[k] is not None else "-" for k in ("live_rows", "backup_rows")),
                str(t["modified_after_backup"]) if t["modified_after_backup"] is not None else "-",
            )
        Console(width=max(120, Console().width)).print(table)
        typer.echo(
            f"rows modified after the backup (would be lost): "
            f"{database['rows_modified_after_backup']}"
        )
    files = data.get("files")
    if files:
        typer.echo(
            f"files    {files['to_add']} to add, {files['to_replace']} to replace, "
            f"{files['to_remove']} to remove, {files['unchanged']} unchanged "
            f"({human_bytes(files['bytes_to_write'])} to write)"
        )
    estimate = data.get("estimate")
    if estimate:
        typer.echo(f"estimate about {estimate['seconds']} s ({estimate['basis']})")


@app.command("run")
def run(
    backup: BackupArg,
    scope: ScopeOption = None,
    study: StudyOption = None,
    organization: OrgOption = None,
    target_database: Annotated[
        str | None, typer.Option(help="Restore into this new database instead of the live one.")
    ] = None,
    target_dir: Annotated[
        str | None, typer.Option(help="Restore files into this new directory instead.")
    ] = None,
    no_safety_backup: Annotated[
        bool, typer.Option("--no-safety-backup", help="Skip the backup of the current state.")
    ] = False,
    yes: YesOption = False,
    json_: JsonOption = False,
) -> None:
    """Restore a backup: full, database or files, or one study or organization."""
    if not yes:
        raise InvalidInputError(
            "a restore replaces data: add --yes to confirm (see 'clinvault restore preview')"
        )
    granular = _granular(scope, study, organization)
    ctx, service = _service()
    actor = Actor.command_line()
    with progress_display("restore") as on_progress:
        if granular is not None:
            if target_database or target_dir:
                raise InvalidInputError("a study or organization restore goes to the platform")
            op = _granular_service(ctx).run(
                backup,
                granular[0],
                granular[1],
                actor,
                safety_backup=not no_safety_backup,
                on_progress=on_progress,
            )
        else:
            op = service.run(
                backup,
                scope,
                actor,
                target=RestoreTarget(target_database, target_dir),
                safety_backup=not no_safety_backup,
                on_progress=on_progress,
            )
    data = operation_to_json(op)
    if json_:
        print_json(data)
        return
    checkpoint = data["metadata"].get("checkpoint") or {}
    err_console.print(f"[green]Restore completed[/green]: {data['id']} from {data['backup_id']}")
    if data["safety_backup_id"]:
        typer.echo(f"  safety backup {data['safety_backup_id']}")
    for key in ("database", "directory"):
        if checkpoint.get(key) and not checkpoint.get("dropped_at"):
            typer.echo(f"  checkpoint {key}: {checkpoint[key]}")


@app.command("history")
def history(
    json_: JsonOption = False,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
) -> None:
    """List restores, newest first, with their outcome."""
    _ctx, service = _service()
    rows = [operation_to_json(op) for op in service.history(limit)]
    if json_:
        print_json(rows)
        return
    if not rows:
        err_console.print("No restores yet.")
        return
    table = Table("id", "backup", "scope", "status", "started (UTC)", "by", "error")
    for r in rows:
        scope = r["metadata"].get("restore_scope") or r["scope"]
        table.add_row(
            r["id"],
            r["backup_id"],
            str(scope),
            r["status"],
            (r["started_at"] or "")[:19],
            r["restored_by"],
            (r["error"] or "")[:60],
        )
    Console(width=max(160, Console().width)).print(table)


@checkpoints_app.command("list")
def checkpoints_list(json_: JsonOption = False) -> None:
    """Checkpoints still kept, newest first."""
    _ctx, service = _service()
    found = service.checkpoints()
    if json_:
        print_json(found)
        return
    for c in found:
        typer.echo(
            f"{c['operation_id']}  {c['completed_at']}  database={c['database'] or '-'}  "
            f"directory={c['directory'] or '-'}"
        )
    if not found:
        err_console.print("No checkpoints kept.")


@checkpoints_app.command("drop")
def checkpoints_drop(
    operation: Annotated[
        list[str] | None, typer.Argument(help="Restore operation ids whose checkpoint to drop.")
    ] = None,
    keep: Annotated[
        int | None, typer.Option(help="Drop all but the newest N (default: the setting).")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: a dropped checkpoint cannot be brought back.")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Drop checkpoints (the renamed databases and old trees); each drop is audited."""
    if not yes:
        raise InvalidInputError("dropping a checkpoint cannot be undone: add --yes to confirm")
    if operation and keep is not None:
        raise InvalidInputError("give operation ids or --keep, not both")
    _ctx, service = _service()
    dropped = service.drop_checkpoints(
        Actor.command_line(), keep=keep, operation_ids=list(operation or [])
    )
    if json_:
        print_json({"dropped": dropped})
    else:
        typer.echo(f"dropped {len(dropped)} checkpoint(s)")
