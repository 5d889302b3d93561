"""``clinvault demo-data`` and ``clinvault demo``: the sample clinical platform, demo users,
and the API and UI serving them."""

from __future__ import annotations

import secrets
from typing import Annotated

import typer

from clinvault.cli import serve_cmd
from clinvault.cli.common import context, err_console, human_bytes, print_json
from clinvault.demo import DemoSummary, create_platform, platform_exists
from clinvault.errors import NotFoundError
from clinvault.services.actor import Actor
from clinvault.services.auth import AuthService
from clinvault.services.context import ServiceContext
from clinvault.services.identity import Role


def _create(ctx: ServiceContext, scale: float, files_mb: int | None, seed: int) -> DemoSummary:
    with err_console.status("creating the sample clinical platform") as status:

        def on_progress(stage: str, fraction: float) -> None:
            status.update(f"creating the sample clinical platform: {stage} {fraction:.0%}")

        return create_platform(
            ctx.platform,
            ctx.settings.resolved_files_root,
            scale=scale,
            files_mb=files_mb,
            seed=seed,
            on_progress=on_progress,
        )


def _describe(ctx: ServiceContext, summary: DemoSummary | None) -> str:
    settings = ctx.settings
    lines = [
        f"platform database  {ctx.platform}",
        f"platform files     {settings.resolved_files_root}",
        f"backup storage     {settings.resolved_storage_url}",
        f"catalog            {ctx.catalog.display_url}",
    ]
    if summary is not None:
        rows = sum(summary.row_counts.values())
        lines += [
            f"created            {rows} rows in {len(summary.row_counts)} tables "
            f"({human_bytes(summary.database_bytes)}), {summary.file_count} files "
            f"({human_bytes(summary.files_bytes)})",
            f"studies            {', '.join(summary.study_codes[:5])}"
            + (" ..." if len(summary.study_codes) > 5 else ""),
        ]
    example_study = summary.study_codes[0] if summary and summary.study_codes else "<study code>"
    lines += [
        "",
        "Try:",
        "  clinvault backup create --type full",
        "  clinvault backup list",
        "  clinvault backup verify <id>",
        f"  clinvault backup create --type files --study {example_study}",
    ]
    return "\n".join(lines)


def demo_data(
    scale: Annotated[
        float, typer.Option(help="1 is about 100 MB of database, 10 about 1 GB.")
    ] = 1.0,
    files_mb: Annotated[
        int | None, typer.Option("--files-mb", help="Megabytes of study files (default by scale).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same data.")] = 42,
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Create the sample clinical platform (database and study files)."""
    ctx = context()
    summary = _create(ctx, scale, files_mb, seed)
    if json_:
        print_json(
            {
                "database": summary.database,
                "row_counts": summary.row_counts,
                "database_bytes": summary.database_bytes,
                "files_root": str(summary.files_root),
                "file_count": summary.file_count,
                "files_bytes": summary.files_bytes,
                "studies": summary.study_codes,
                "organizations": summary.organization_codes,
            }
        )
    else:
        typer.echo(_describe(ctx, summary))


def demo(
    scale: Annotated[
        float, typer.Option(help="Scale of the sample data when it is created.")
    ] = 1.0,
    host: Annotated[str, typer.Option(help="Address to serve the API and UI on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8400,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve the API and UI afterwards.")
    ] = True,
) -> None:
    """Run ClinVault on the sample platform: sample data and demo users when absent, then
    the API and UI on --host/--port."""
    ctx = context()
    summary = None if platform_exists(ctx.platform) else _create(ctx, scale, None, 42)
    typer.echo(_describe(ctx, summary))
    typer.echo("")
    for username, full_name, role in DEMO_USERS:
        typer.echo(_ensure_user(ctx, username, full_name, role))
    if serve:
        typer.echo(f"\nServing the API and UI on http://{host}:{port}/ (API docs at /api/docs)")
        serve_cmd.serve(host=host, port=port)


DEMO_USERS = (
    ("admin", "Demo Administrator", Role.SYSTEM_ADMIN),
    ("auditor", "Demo Auditor", Role.AUDITOR),
)


def _ensure_user(ctx: ServiceContext, username: str, full_name: str, role: Role) -> str:
    """Create a demo user once, with a random password shown only at creation."""
    auth = AuthService(ctx)
    try:
        auth.get_user_by_username(username)
    except NotFoundError:
        password = secrets.token_urlsafe(15)
        auth.create_user(
            username, full_name, role, password, Actor.command_line(), reason="clinvault demo"
        )
        return (
            f"created {role.value} user {username!r} with password {password}\n"
            "  (shown once: note it now)"
        )
    return (
        f"user {username!r} exists; to set a new password: "
        f"clinvault users reset-password {username}"
    )
