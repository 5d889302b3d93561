"""``clinvault users`` and the demo users: passwords from stdin, never from argv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clinvault.cli.demo_cmd import _ensure_user
from clinvault.services.auth import AuthService
from clinvault.services.context import ServiceContext
from clinvault.services.identity import Role

from .conftest import api_settings


def clinvault(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    exe = shutil.which("clinvault", path=str(Path(sys.executable).parent))
    assert exe is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINVAULT_")}
    env |= {
        "CLINVAULT_DATA_DIR": str(home),
        "CLINVAULT_CATALOG_URL": f"sqlite:///{home / 'catalog.db'}",
        "CLINVAULT_PASSWORD_HASH_TIME_COST": "1",
        "CLINVAULT_PASSWORD_HASH_MEMORY_KIB": "8192",
    }
    return subprocess.run(
        [exe, *args], input=stdin, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def auth_for(home: Path) -> AuthService:
    return AuthService(ServiceContext(api_settings(home)))


def test_create_admin_reads_the_password_from_stdin(home: Path) -> None:
    password = "first-admin-password"
    args = ["users", "create-admin", "--username", "Root", "--full-name", "Rita Root"]
    result = clinvault(home, *args, stdin=password + "\n")
    assert result.returncode == 0, result.stderr
    assert "created SYSTEM_ADMIN 'root' (Rita Root)" in result.stdout
    assert password not in result.stdout + result.stderr
    auth = auth_for(home)
    user = auth.authenticate("root", password).user
    assert (user.full_name, user.role) == ("Rita Root", Role.SYSTEM_ADMIN)
    [event] = [e for e in auth.ctx.audit.list() if e.action == "user.create"]
    assert event.actor_name.endswith("(command line)")
    assert password not in json.dumps(event.details)


def test_create_admin_refuses_a_short_password(home: Path) -> None:
    args = ["users", "create-admin", "--username", "root", "--full-name", "Rita Root"]
    result = clinvault(home, *args, stdin="short-pw\n")
    assert result.returncode == 2
    assert "at least 12 characters" in result.stderr
    assert "short-pw" not in result.stdout + result.stderr
    assert auth_for(home).list_users() == []


def test_create_admin_refuses_an_empty_stdin(home: Path) -> None:
    result = clinvault(
        home, "users", "create-admin", "--username", "root", "--full-name", "Rita Root"
    )
    assert result.returncode == 2 and "no password" in result.stderr


def test_list_deactivate_and_reset_password(home: Path) -> None:
    auth = auth_for(home)
    args = ["users", "create", "--username", "ivy", "--full-name", "Ivy I", "--role", "auditor"]
    assert clinvault(home, *args, stdin="ivy-password-01\n").returncode == 0
    listed = json.loads(clinvault(home, "users", "list", "--json").stdout)
    assert [(u["username"], u["role"], u["is_active"]) for u in listed] == [
        ("ivy", "AUDITOR", True)
    ]
    reset = clinvault(home, "users", "reset-password", "ivy", stdin="ivy-password-02\n")
    assert reset.returncode == 0, reset.stderr
    assert auth.authenticate("ivy", "ivy-password-02").user.username == "ivy"
    assert clinvault(home, "users", "deactivate", "ivy", "--reason", "left").returncode == 0
    assert auth.get_user_by_username("ivy").is_active is False


def test_demo_users_are_created_once_with_a_printed_password(home: Path) -> None:
    ctx = ServiceContext(api_settings(home))
    first = _ensure_user(ctx, "admin", "Demo Administrator", Role.SYSTEM_ADMIN)
    password = first.split("with password ")[1].split()[0]
    assert len(password) >= 16
    assert AuthService(ctx).authenticate("admin", password).user.role is Role.SYSTEM_ADMIN
    again = _ensure_user(ctx, "admin", "Demo Administrator", Role.SYSTEM_ADMIN)
    assert password not in again
    assert "clinvault users reset-password admin" in again
