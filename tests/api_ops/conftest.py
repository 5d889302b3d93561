"""Operations API fixtures: a real server over a real tiny sample platform, signed-in clients.

``ops`` starts uvicorn on a free port in a thread, serving ``create_app(ctx)`` (job workers
included) over the sample platform of ``tests/services/conftest.py``. Its admin and auditor
clients signed in with ``POST /api/v1/auth/login`` and send the session's bearer token.
Password hashing uses low argon2 costs to keep the suite fast.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI

from clinvault.api.app import create_app
from clinvault.catalog.models import AuditEvent, Role
from clinvault.services.actor import Actor
from clinvault.services.auth import AuthService
from clinvault.services.context import ServiceContext
from tests.services.conftest import Platform, platform  # noqa: F401

ADMIN_PASSWORD = "admin-password-for-ops-tests"
AUDITOR_PASSWORD = "auditor-password-for-ops-tests"
FAST_HASHING = {"password_hash_time_cost": 1, "password_hash_memory_kib": 8192}
FINISHED = ("completed", "failed", "cancelled")


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-ops", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def login(base_url: str, username: str, password: str) -> str:
    answer = httpx.post(
        f"{base_url}/api/v1/auth/login",
        json={"username": username, "password": password},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def create_users(ctx: ServiceContext) -> None:
    auth = AuthService(ctx)
    system = Actor.system()
    auth.create_user("admin", "Ada Admin", Role.SYSTEM_ADMIN, ADMIN_PASSWORD, system)
    auth.create_user("auditor", "Otto Auditor", Role.AUDITOR, AUDITOR_PASSWORD, system)


@dataclass
class Ops:
    """A running server over a sample platform, with signed-in clients."""

    platform: Platform
    ctx: ServiceContext
    base_url: str
    admin: httpx.Client
    auditor: httpx.Client
    admin_token: str

    def signature(self, meaning: str, password: str = ADMIN_PASSWORD) -> dict[str, str]:
        return {
            "username": "admin",
            "password": password,
            "meaning": meaning,
            "reason": "approved in the test plan",
        }

    def wait_job(self, job_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.admin.get(f"/api/v1/jobs/{job_id}").json()
            if job["status"] in FINISHED:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish in {timeout} s")

    def backup(self, **body: Any) -> dict[str, Any]:
        """Create a backup through the API and wait for it; returns its job (completed)."""
        answer = self.admin.post("/api/v1/backup/create", json={"type": "full", **body})
        assert answer.status_code == 202, answer.text
        job = self.wait_job(answer.json()["job_id"])
        assert job["status"] == "completed", job
        return job

    def events(self, action: str) -> list[AuditEvent]:
        with self.ctx.catalog.session() as session:
            return list(
                session.scalars(
                    sa.select(AuditEvent)
                    .where(AuditEvent.action == action)
                    .order_by(AuditEvent.seq)
                ).all()
            )


def read_sse(response: httpx.Response) -> Iterator[tuple[str, str | None, dict[str, Any]]]:
    """(event, id, data) of each event of a ``text/event-stream`` response."""
    name, ident, data = "message", None, []
    for line in response.iter_lines():
        if not line:
            if data:
                yield name, ident, json.loads("\n".join(data))
            name, ident, data = "message", None, []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("id:"):
            ident = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


@contextmanager
def running_ops(site: Platform, **overrides: Any) -> Iterator[Ops]:
    """Serve ``site`` (a sample platform) with job workers; yields the signed-in clients."""
    ctx = site.context(**{**FAST_HASHING, **overrides})
    create_users(ctx)
    app = create_app(ctx)
    try:
        with serve(app) as base_url:
            admin_token = login(base_url, "admin", ADMIN_PASSWORD)
            auditor_token = login(base_url, "auditor", AUDITOR_PASSWORD)
            with (
                httpx.Client(base_url=base_url, timeout=60, headers=_bearer(admin_token)) as a,
                httpx.Client(base_url=base_url, timeout=60, headers=_bearer(auditor_token)) as b,
            ):
                yield Ops(site, ctx, base_url, a, b, admin_token)
    finally:
        ctx.catalog.dispose()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def ops(platform: Platform) -> Iterator[Ops]:  # noqa: F811
    with running_ops(platform) as running:
        yield running
