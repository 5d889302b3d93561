"""``clinvault backup``: create, list, show and verify backups."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from clinvault.catalog.models import BackupType, Scope
from clinvault.cli.common import context, err_console, human_bytes, print_json, progress_display
from clinvault.engine.compression import Codec
from clinvault.errors import IntegrityError, InvalidInputError
from clinvault.services.actor import Actor
from clinvault.services.backup import BackupRequest, BackupService
from clinvault.services.maintenance import recover_interrupted
from clinvault.services.queries import backup_to_json, get_backup, list_backups
from clinvault.services.verify import VerifyService

app = typer.Typer(help="Create, list, inspect and verify backups.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


@app.command("create")
def create(
    type_: Annotated[
        BackupType, typer.Option("--type", help="What to back up.", case_sensitive=False)
    ] = BackupType.FULL,
    study: Annotated[
        list[str] | None,
        typer.Option("--study", help="Limit a files backup to a study (id or code)."),
    ] = None,
    organization: Annotated[
        list[str] | None,
        typer.Option(
            "--organization", help="Limit a files backup to an organization (id or code)."
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Unique name; default <type>-<UTC time>.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="Free text kept with the backup.")] = None,
    compression: Annotated[
        Codec | None, typer.Option(help="zstd (default) or gzip.", case_sensitive=False)
    ] = None,
    level: Annotated[
        int | None, typer.Option(help="Compression level: zstd 1-19 (3), gzip 1-9 (6).")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Take a backup of the platform database, its files, or both."""
    if study and organization:
        raise InvalidInputError("give --study or --organization, not both")
    scope, ids = Scope.ALL, tuple(study or organization or ())
    if study:
        scope = Scope.STUDY
    elif organization:
        scope = Scope.ORGANIZATION
    request = BackupRequest(
        type=type_,
        scope=scope,
        scope_ids=ids,
        name=name,
        description=description,
        compression=compression,
        level=level,
    )
    ctx = context()
    recover_interrupted(ctx)
    with progress_display(f"{type_.value} backup") as on_progress:
        row = BackupService(ctx).create(request, Actor.command_line(), on_progress=on_progress)
    if json_:
        print_json(backup_to_json(row))
        return
    err_console.print(
        f"[green]Backup completed[/green]: {row.name} ({row.id})\n"
        f"  size {human_bytes(row.file_size_bytes)} -> {human_bytes(row.file_size_compressed)}"
        f" ({(row.compression_ratio or 0) * 100:.1f}% saved), checksum {row.checksum}\n"
        f"  stored at {row.file_path}"
    )
    _print_skipped(row.metadata_ or {}, limit=10)


def _print_skipped(metadata: dict[str, Any], *, limit: int, err: bool = True) -> None:
    """What a files backup could not archive (FIFOs, sockets, files that vanished)."""
    warnings = [w for w in metadata.get("file_warnings") or [] if isinstance(w, str)]
    if not warnings:
        return
    total = max(len(warnings), int(metadata.get("file_warning_count") or 0))
    typer.echo(f"{total} item(s) not archived:", err=err)
    for warning in warnings[:limit]:
        typer.echo(f"  {warning}", err=err)
    if total > limit:
        typer.echo(
            f"  ... and {total - min(limit, len(warnings))} more"
            " (the manifest's files.warnings lists them all)",
            err=err,
        )


@app.command("list")
def list_(
    json_: JsonOption = False,
    all_: Annotated[bool, typer.Option("--all", help="Include deleted backups.")] = False,
) -> None:
    """List backups, newest first."""
    ctx = context()
    recover_interrupted(ctx)
    rows = list_backups(ctx, include_deleted=all_)
    if json_:
        print_json([backup_to_json(r) for r in rows])
        return
    table = Table("id", "name", "type", "status", "created (UTC)", "size", "stored", "saved")
    for r in rows:
        table.add_row(
            str(r.id),
            r.name,
            r.type.value,
            r.status.value,
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            human_bytes(r.file_size_bytes),
            human_bytes(r.file_size_compressed),
            f"{r.compression_ratio * 100:.0f}%" if r.compression_ratio is not None else "-",
        )
    if not rows:
        err_console.print("No backups yet: create one with 'clinvault backup create'.")
        return
    Console(width=max(160, Console().width)).print(table)


@app.command("show")
def show(
    backup: Annotated[str, typer.Argument(help="Backup id or name.")], json_: JsonOption = False
) -> None:
    """Show one backup's details."""
    row = get_backup(context(), backup)
    data = backup_to_json(row)
    if json_:
        print_json(data)
        return
    for key, value in data.items():
        if key != "metadata":
            typer.echo(f"{key:22} {value if value is not None else '-'}")
    _print_skipped(row.metadata_ or {}, limit=100, err=False)


@app.command("verify")
def verify(
    backup: Annotated[str, typer.Argument(help="Backup id or name.")], json_: JsonOption = False
) -> None:
    """Re-read every part and every file of a backup against its checksums."""
    ctx = context()
    row = get_backup(ctx, backup)
    with progress_display("verify") as on_progress:
        report = VerifyService(ctx).verify(row.id, Actor.command_line(), on_progress=on_progress)
    if json_:
        print_json(report.to_json())
    else:
        for part in report.parts:
            mark = "ok" if part.ok else "FAILED"
            typer.echo(f"{part.name:24} {mark}")
        for problem in report.problems:
            typer.echo(f"problem: {problem}", err=True)
        typer.echo(f"backup {report.name}: {'verified' if report.ok else 'VERIFICATION FAILED'}")
    if not report.ok:
        raise typer.Exit(IntegrityError.exit_code)
