"""API fixtures: a real uvicorn server on a free port, over a throwaway SQLite catalog.

Clients: ``admin_client`` and ``auditor_client`` send a bearer API token, ``cookie_client``
signs in through ``POST /auth/login`` and keeps the session cookie (with the CSRF token at
hand), ``anon_client`` sends nothing. Password hashing uses low argon2 costs to keep the
suite fast; the production costs are checked on their own in ``test_auth.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI

from clinvault.api.app import create_app
from clinvault.catalog.models import AuditEvent, User
from clinvault.config import Settings
from clinvault.services.actor import Actor
from clinvault.services.auth import AuthService
from clinvault.services.context import ServiceContext
from clinvault.services.identity import Role

ADMIN_PASSWORD = "admin-password-for-tests"
AUDITOR_PASSWORD = "auditor-password-for-tests"


def api_settings(home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": home,
        "catalog_url": f"sqlite:///{home / 'catalog.db'}",
        "storage_url": "memory://",
        # No platform: routes that would reach it fail fast instead of starting one.
        "database_url": "postgresql://clinvault@127.0.0.1:1/none",
        "files_root": home / "platform",
        "password_hash_time_cost": 1,
        "password_hash_memory_kib": 8192,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def run_server(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port in a thread; yields the base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base_url}/healthz", timeout=10).status_code == 200
    try:
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class Site:
    """A running server and the context behind it."""

    base_url: str
    ctx: ServiceContext
    app: FastAPI
    admin: User
    auditor: User

    @property
    def auth(self) -> AuthService:
        return AuthService(self.ctx)

    def client(
        self, token: str | None = None, *, headers: dict[str, str] | None = None, **options: Any
    ) -> httpx.Client:
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.base_url, headers=sent, timeout=30, **options)

    def api_token(self, user: User, name: str = "tests") -> str:
        return self.auth.create_api_token(user, name, None).token

    def events(self, action: str | None = None) -> list[AuditEvent]:
        """Audit events, oldest first."""
        statement = sa.select(AuditEvent).order_by(AuditEvent.seq)
        if action is not None:
            statement = statement.where(AuditEvent.action == action)
        with self.ctx.catalog.session() as session:
            return list(session.scalars(statement).all())

    def update(self, model: type[Any], row_id: Any, **values: Any) -> None:
        """Change a row behind the services' back (to move it in time)."""
        with self.ctx.catalog.session(write_lock=True) as session:
            session.execute(sa.update(model).where(model.id == row_id).values(**values))

    def user(self, user_id: Any) -> User:
        return self.auth.get_user(user_id)


@contextmanager
def running_site(home: Path, **overrides: Any) -> Iterator[Site]:
    """A server on a fresh catalog with an admin and an auditor."""
    ctx = ServiceContext(api_settings(home, **overrides))
    auth = AuthService(ctx)
    admin = auth.create_user(
        "admin", "Ada Admin", Role.SYSTEM_ADMIN, ADMIN_PASSWORD, Actor.system()
    )
    auditor = auth.create_user(
        "auditor", "Otto Auditor", Role.AUDITOR, AUDITOR_PASSWORD, Actor.system()
    )
    app = create_app(ctx)
    try:
        with run_server(app) as base_url:
            yield Site(base_url, ctx, app, admin, auditor)
    finally:
        ctx.catalog.dispose()


def make_site(home: Path, **overrides: Any) -> Iterator[Site]:
    """:func:`running_site` as a generator, for ``yield from`` in fixtures elsewhere."""
    with running_site(home, **overrides) as site:
        yield site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with running_site(tmp_path / "home") as site:
        yield site


@pytest.fixture
def admin_client(site: Site) -> Iterator[httpx.Client]:
    with site.client(site.api_token(site.admin)) as client:
        yield client


@pytest.fixture
def auditor_client(site: Site) -> Iterator[httpx.Client]:
    with site.client(site.api_token(site.auditor)) as client:
        yield client


@pytest.fixture
def anon_client(site: Site) -> Iterator[httpx.Client]:
    with site.client() as client:
        yield client


@dataclass
class CookieSession:
    client: httpx.Client
    csrf_token: str
    login: dict[str, Any]


@pytest.fixture
def cookie_client(site: Site) -> Iterator[CookieSession]:
    """Signed in as the admin through the login endpoint: cookie plus CSRF token."""
    with site.client() as client:
        answer = client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        yield CookieSession(client, body["csrf_token"], body)
