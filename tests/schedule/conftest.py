"""Fixtures for scheduling, retention, drills, notifications and metrics.

* ``home`` / ``make_ctx``: a ClinVault context over a throwaway SQLite catalog and a local
  storage directory, with no platform (for tests that never back up or restore);
* ``platform``: the real tiny sample platform (``tests/services/conftest.py``), with the
  drill sandboxes derived from its database dropped afterwards;
* ``smtp_sink`` and ``webhook_sink``: a minimal SMTP server and an HTTP receiver on
  loopback that keep what they receive;
* ``FakeLauncher``: stands in for job submission, recording when each schedule fired.
"""

from __future__ import annotations

import base64
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from clinvault.catalog.models import AuditEvent, BackupSchedule
from clinvault.config import Settings
from clinvault.engine.dbrestore import databases_with_prefix, drop_database
from clinvault.engine.pgconn import ConnInfo
from clinvault.services.context import ServiceContext
from clinvault.services.scheduler import COMPLETED, Launch
from tests.services.conftest import Platform, platform  # noqa: F401

QUIET = {"drill_enabled": False, "verify_cron": None}


def settings_for(home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": home,
        "catalog_url": f"sqlite:///{home / 'catalog.db'}",
        "storage_url": (home / "store").as_uri(),
        "database_url": "postgresql://clinvault@127.0.0.1:1/none",  # never reached
        "files_root": home / "platform",
        **QUIET,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def make_ctx(home: Path) -> Iterator[Callable[..., ServiceContext]]:
    made: list[ServiceContext] = []

    def make(**overrides: Any) -> ServiceContext:
        ctx = ServiceContext(settings_for(home, **overrides))
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        if "catalog" in ctx.__dict__:
            ctx.catalog.dispose()


@pytest.fixture
def ctx(make_ctx: Callable[..., ServiceContext]) -> ServiceContext:
    return make_ctx()


@pytest.fixture
def make_database(
    make_database: Callable[[], ConnInfo], pg_server: ConnInfo
) -> Iterator[Callable[[], ConnInfo]]:
    """The shared factory, plus cleanup of databases derived from each (drill sandboxes)."""
    created: list[str] = []

    def make() -> ConnInfo:
        conn = make_database()
        created.append(conn.database)
        return conn

    yield make
    for name in created:
        for derived in databases_with_prefix(pg_server, f"{name}__"):
            drop_database(pg_server, derived)


def audit_events(ctx: ServiceContext, action: str | None = None) -> list[AuditEvent]:
    statement = sa.select(AuditEvent).order_by(AuditEvent.seq)
    if action is not None:
        statement = statement.where(AuditEvent.action == action)
    with ctx.catalog.session() as session:
        return list(session.scalars(statement))


def schedule_row(ctx: ServiceContext, name: str) -> BackupSchedule:
    with ctx.catalog.session() as session:
        row = session.scalar(sa.select(BackupSchedule).where(BackupSchedule.name == name))
    assert row is not None
    return row


@dataclass
class FakeLauncher:
    """Records (schedule name, fire time) instead of queueing a backup job."""

    status: str = COMPLETED
    pause: float = 0.0
    fired: list[tuple[str, datetime]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, ctx: ServiceContext, schedule: BackupSchedule, now: datetime) -> Launch:
        if self.pause:
            time.sleep(self.pause)
        with self.lock:
            self.fired.append((schedule.name, now))
        return Launch(self.status)

    def times(self, name: str) -> list[datetime]:
        return [when for who, when in self.fired if who == name]


# --- a minimal SMTP sink ---------------------------------------------------------------------


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    data: bytes
    auth: list[str]

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data)


class _SmtpHandler(socketserver.StreamRequestHandler):
    server: SmtpSink

    def _say(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self._say("220 sink ESMTP")
        sender, recipients, auth = "", [], []
        while True:
            raw = self.rfile.readline(65536)
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip("\r\n")
            verb = line[:4].upper()
            if verb in ("EHLO", "HELO"):
                self._say("250-sink")
                self._say("250 AUTH PLAIN")
            elif verb == "AUTH":
                auth.append(base64.b64decode(line.split()[-1]).decode(errors="replace"))
                self._say("235 ok")
            elif line.upper().startswith("MAIL FROM:"):
                sender = line[10:].strip()
                self._say("250 ok")
            elif line.upper().startswith("RCPT TO:"):
                recipients.append(line[8:].strip())
                self._say("250 ok")
            elif verb == "DATA":
                self._say("354 go on")
                lines = []
                while (chunk := self.rfile.readline(65536)) not in (b".\r\n", b""):
                    lines.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                self.server.mails.append(Mail(sender, recipients, b"".join(lines), auth))
                self._say("250 queued")
            elif verb == "QUIT":
                self._say("221 bye")
                return
            else:
                self._say("250 ok")


class SmtpSink(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SmtpHandler)
        self.mails: list[Mail] = []


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    server = SmtpSink()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- a webhook receiver ----------------------------------------------------------------------


@dataclass
class Hook:
    path: str
    headers: dict[str, str]
    body: bytes


class _HookHandler(BaseHTTPRequestHandler):
    server: WebhookSink

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.server.hooks.append(
            Hook(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


class WebhookSink(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HookHandler)
        self.hooks: list[Hook] = []
        self.status = 204

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/clinvault?token=s3cr3t-path"


@pytest.fixture
def webhook_sink() -> Iterator[WebhookSink]:
    server = WebhookSink()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def notify_settings(smtp: SmtpSink, hooks: WebhookSink, **extra: Any) -> dict[str, Any]:
    """Settings sending email to the SMTP sink and webhooks to the receiver."""
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.server_address[1],
        "smtp_starttls": False,
        "smtp_from": "clinvault@example.org",
        "notify_emails": ["qa@example.org", "ops@example.org"],
        "webhook_urls": [hooks.url],
        "webhook_secret": "webhook-secret-for-tests",
        "smtp_timeout_seconds": 5,
        "webhook_timeout_seconds": 5,
        **extra,
    }
