"""The ``clinvault`` command: one Typer app, errors mapped to exit codes in one place."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from typing import NoReturn

import typer
from typer import _click as typer_click

from clinvault import __version__
from clinvault.cli import (
    admin_cmd,
    backup_cmd,
    demo_cmd,
    restore_cmd,
    schedule_cmd,
    serve_cmd,
    users_cmd,
)
from clinvault.cli.common import err_console
from clinvault.errors import ClinVaultError

app = typer.Typer(
    name="clinvault",
    help="Backup and restore for regulated clinical platforms (PostgreSQL and study files).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(backup_cmd.app, name="backup")
app.add_typer(restore_cmd.app, name="restore")
app.add_typer(admin_cmd.catalog_app, name="catalog")
app.add_typer(admin_cmd.audit_app, name="audit")
app.add_typer(admin_cmd.db_app, name="db")
app.add_typer(users_cmd.app, name="users")
app.add_typer(schedule_cmd.schedule_app, name="schedule")
app.add_typer(schedule_cmd.retention_app, name="retention")
app.add_typer(schedule_cmd.drill_app, name="drill")
app.add_typer(schedule_cmd.notify_app, name="notify")
app.command("demo-data")(demo_cmd.demo_data)
app.command("demo")(demo_cmd.demo)
app.command("serve")(serve_cmd.serve)
app.command("worker")(serve_cmd.worker)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"clinvault {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    """Entry point: run the app; a ClinVault error prints its message and sets the exit code."""
    try:
        code = app(standalone_mode=False)
    except ClinVaultError as exc:
        err_console.print(f"[red]error[/red]: {exc.message}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/red]")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except typer_click.ClickException as exc:  # Typer's own copy of click's usage errors
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def run() -> NoReturn:
    """The ``clinvault`` command itself: ``main``, then a quick exit.

    Once a command has finished, Python spends about a quarter of a second tearing down the
    modules it loaded (SQLAlchemy, pydantic, psycopg, ...), whatever the command did; a
    script calling ``clinvault`` in a loop, or a benchmark, pays it every time. When only
    this thread is left, the exit handlers are run and the standard streams flushed, as the
    normal exit would, and the process ends without the teardown. Anything unusual (other
    threads still running, an output stream that cannot be flushed) takes the normal way.
    """
    try:
        main()
        code: str | int | None = 0
    except SystemExit as exc:
        code = exc.code
    if not isinstance(code, int) or threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)  # the normal exit reports it
    os._exit(code)
