"""``clinvault catalog``, ``clinvault audit`` and ``clinvault db``: keeping records straight."""

from __future__ import annotations

from typing import Annotated

import typer

from clinvault.cli.common import context, print_json
from clinvault.errors import AuditChainError
from clinvault.services.actor import Actor
from clinvault.services.maintenance import rebuild_catalog, recover_interrupted

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]

catalog_app = typer.Typer(help="The catalog of backups.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
db_app = typer.Typer(help="The catalog database schema.", no_args_is_help=True)


@catalog_app.command("rebuild")
def rebuild(json_: JsonOption = False) -> None:
    """Rebuild the catalog from the manifests in storage (after losing the catalog)."""
    ctx = context()
    recover_interrupted(ctx)
    report = rebuild_catalog(ctx, Actor.command_line())
    if json_:
        print_json(report.to_json())
        return
    for key, ids in report.to_json().items():
        typer.echo(f"{key:20} {len(ids)}")
        for backup_id in ids if key != "unchanged" else []:
            typer.echo(f"  {backup_id}")


@audit_app.command("verify")
def audit_verify(json_: JsonOption = False) -> None:
    """Check the audit trail's hash chain from the first event to the last."""
    report = context().audit.verify()
    if json_:
        print_json(
            {
                "ok": report.ok,
                "events_checked": report.events_checked,
                "first_bad_seq": report.first_bad_seq,
                "problem": report.problem,
            }
        )
    elif report.ok:
        typer.echo(f"audit trail intact: {report.events_checked} events verified")
    else:
        typer.echo(
            f"AUDIT TRAIL BROKEN at event {report.first_bad_seq}: {report.problem}", err=True
        )
    if not report.ok:
        raise typer.Exit(AuditChainError.exit_code)


@db_app.command("upgrade")
def upgrade() -> None:
    """Apply catalog migrations up to the newest (also done on every start)."""
    catalog = context().catalog
    typer.echo(f"catalog {catalog.display_url} is at revision {catalog.current_revision()}")
