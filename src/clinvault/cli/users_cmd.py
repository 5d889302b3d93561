"""``clinvault users``: the people who may sign in to the API and UI.

Passwords are read from standard input, never from the command line (where ``ps`` and shell
history would keep them): typed twice without echo on a terminal, or one line from a pipe.
Changes made here are audited with the operating-system user as the actor.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from clinvault.catalog.models import User
from clinvault.cli.common import context, print_json
from clinvault.errors import InvalidInputError
from clinvault.services.actor import Actor
from clinvault.services.auth import AuthService
from clinvault.services.identity import Role

app = typer.Typer(help="Users of the API and UI: create, list, deactivate.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
UsernameOption = Annotated[str, typer.Option("--username", help="Sign-in name (any case).")]
FullNameOption = Annotated[
    str, typer.Option("--full-name", help="Printed name, shown in audit events and signatures.")
]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why, for the audit trail.")]


def read_password(prompt: str = "Password") -> str:
    """The password from standard input: prompted twice, hidden, on a terminal; otherwise
    the first line (without its line ending)."""
    if sys.stdin.isatty():
        value: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=True, err=True)
        return value
    line = sys.stdin.readline()
    if not line:
        raise InvalidInputError("no password on standard input")
    return line.rstrip("\r\n")


def user_to_json(user: User) -> dict[str, object]:
    return {
        "id": str(user.id),
        "username": user.username,
        "full_name": user.full_name,
        "role": user.role.value,
        "is_active": user.is_active,
        "locked_until": user.locked_until.isoformat() if user.locked_until else None,
        "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
        "created_at": user.created_at.isoformat(),
        "created_by": user.created_by,
    }


def _create(username: str, full_name: str, role: Role, reason: str | None) -> None:
    auth = AuthService(context())
    user = auth.create_user(
        username, full_name, role, read_password(), Actor.command_line(), reason=reason
    )
    typer.echo(f"created {user.role.value} {user.username!r} ({user.full_name}), id {user.id}")


@app.command("create-admin")
def create_admin(
    username: UsernameOption, full_name: FullNameOption, reason: ReasonOption = None
) -> None:
    """Create a SYSTEM_ADMIN (the first administrator); the password comes from stdin."""
    _create(username, full_name, Role.SYSTEM_ADMIN, reason)


@app.command("create")
def create(
    username: UsernameOption,
    full_name: FullNameOption,
    role: Annotated[Role, typer.Option("--role", case_sensitive=False)] = Role.AUDITOR,
    reason: ReasonOption = None,
) -> None:
    """Create a user with a role; the password comes from stdin."""
    _create(username, full_name, role, reason)


@app.command("list")
def list_(json_: JsonOption = False) -> None:
    """Every user, active or not."""
    users = AuthService(context()).list_users()
    if json_:
        print_json([user_to_json(user) for user in users])
        return
    for user in users:
        state = "active" if user.is_active else "inactive"
        typer.echo(f"{user.username:20} {user.role.value:13} {state:9} {user.full_name}")


@app.command("deactivate")
def deactivate(
    username: Annotated[str, typer.Argument(help="Who.")], reason: ReasonOption = None
) -> None:
    """Stop a user from signing in (their sessions end, API tokens are revoked)."""
    auth = AuthService(context())
    user = auth.get_user_by_username(username)
    auth.deactivate_user(user.id, Actor.command_line(), reason=reason)
    typer.echo(f"deactivated {user.username!r}")


@app.command("reset-password")
def reset_password(
    username: Annotated[str, typer.Argument(help="Whose.")], reason: ReasonOption = None
) -> None:
    """Set a user's password from stdin; their sessions end and a lockout is lifted."""
    auth = AuthService(context())
    user = auth.get_user_by_username(username)
    auth.reset_password(user.id, read_password("New password"), Actor.command_line(), reason=reason)
    typer.echo(f"password of {user.username!r} changed")
