"""Notifications: email to a local SMTP server, signed webhooks to a local receiver, no
secrets sent or logged; storage threshold and failed backups notified from the scheduler."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from clinvault.catalog.models import AuditOutcome, Backup, BackupStatus, BackupType
from clinvault.errors import InvalidInputError
from clinvault.services import notify
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.notify import SIGNATURE_HEADER, Notifier
from clinvault.services.scheduler import Scheduler
from tests.schedule.conftest import SmtpSink, WebhookSink, audit_events, notify_settings

SECRET = "webhook-secret-for-tests"
ADMIN = Actor("u-1", "Ada Admin")


def test_an_event_reaches_email_and_a_signed_webhook(
    make_ctx: Callable[..., ServiceContext],
    smtp_sink: SmtpSink,
    webhook_sink: WebhookSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = make_ctx(**notify_settings(smtp_sink, webhook_sink))
    notifier = Notifier(ctx.settings, audit=ctx.audit)

    with caplog.at_level(logging.DEBUG):
        deliveries = notifier.notify(
            "drill.failed",
            "Restore drill failed: nightly-1",
            "The restore drill of nightly-1 failed.",
            {"backup": "nightly-1", "password": "hunter2", "url": "postgresql://u:pw@db/x"},
        )

    assert [(d.channel, d.ok) for d in deliveries] == [("email", True), ("webhook", True)]
    assert deliveries[1].target == f"http://127.0.0.1:{webhook_sink.server_address[1]}"
    (mail,) = smtp_sink.mails
    assert mail.sender == "<clinvault@example.org>"
    assert mail.recipients == ["<qa@example.org>", "<ops@example.org>"]
    message = mail.message
    assert message["Subject"] == "[ClinVault] Restore drill failed: nightly-1"
    assert message["X-ClinVault-Event"] == "drill.failed"
    text = message.get_payload(decode=True)
    assert isinstance(text, bytes)
    assert b"The restore drill of nightly-1 failed." in text and b"backup: nightly-1" in text

    (hook,) = webhook_sink.hooks
    assert hook.path == "/hooks/clinvault?token=s3cr3t-path"
    assert hook.headers["content-type"] == "application/json"
    assert hook.headers["x-clinvault-event"] == "drill.failed"
    expected = "sha256=" + hmac.new(SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hook.headers[SIGNATURE_HEADER.lower()], expected)
    payload = json.loads(hook.body)
    assert payload["event"] == "drill.failed" and payload["details"]["backup"] == "nightly-1"
    assert payload["delivery_id"] == hook.headers["x-clinvault-delivery"]
    assert datetime.fromisoformat(payload["occurred_at"]).tzinfo is not None

    sent = hook.body.decode() + mail.data.decode()
    assert payload["details"]["password"] == "[REDACTED]"
    for secret in ("hunter2", ":pw@", SECRET, "s3cr3t-path"):
        assert secret not in sent and secret not in caplog.text


def test_failures_are_reported_audited_and_never_raise(
    make_ctx: Callable[..., ServiceContext],
    smtp_sink: SmtpSink,
    webhook_sink: WebhookSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    webhook_sink.status = 500
    ctx = make_ctx(**notify_settings(smtp_sink, webhook_sink, smtp_port=1))
    with caplog.at_level(logging.WARNING):
        deliveries = Notifier(ctx.settings, audit=ctx.audit).notify(
            "backup.failed", "Backup failed", "It failed.", {}
        )

    assert [(d.channel, d.ok) for d in deliveries] == [("email", False), ("webhook", False)]
    assert deliveries[1].error == "HTTP 500"
    assert "s3cr3t-path" not in caplog.text  # the webhook's path (a token) is never logged
    (event,) = audit_events(ctx, "notification.failed")
    assert event.outcome is AuditOutcome.FAILURE and event.details["event"] == "backup.failed"
    assert "s3cr3t-path" not in json.dumps(event.details)


def test_smtp_credentials_are_sent_only_over_tls_or_to_loopback(
    make_ctx: Callable[..., ServiceContext],
    smtp_sink: SmtpSink,
    webhook_sink: WebhookSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx = make_ctx(
        **notify_settings(
            smtp_sink, webhook_sink, webhook_urls=[], smtp_user="mailer", smtp_password="pw-123"
        )
    )
    notifier = Notifier(ctx.settings)

    (sent,) = notifier.notify("test", "loopback", "over loopback", {})
    assert sent.ok
    assert smtp_sink.mails[0].auth == ["\0mailer\0pw-123"]
    assert b"pw-123" not in smtp_sink.mails[0].data

    monkeypatch.setattr(notify, "_is_loopback", lambda host: False)
    (refused,) = notifier.notify("test", "remote", "to a remote server", {})
    assert not refused.ok and "STARTTLS" in (refused.error or "")
    assert len(smtp_sink.mails) == 1


def test_test_send_is_audited_and_needs_a_channel(
    make_ctx: Callable[..., ServiceContext], smtp_sink: SmtpSink, webhook_sink: WebhookSink
) -> None:
    quiet = make_ctx()
    with pytest.raises(InvalidInputError, match="no notification channel"):
        Notifier(quiet.settings, audit=quiet.audit).test_send(ADMIN)

    ctx = make_ctx(**notify_settings(smtp_sink, webhook_sink))
    deliveries = Notifier(ctx.settings, audit=ctx.audit).test_send(ADMIN, request_id="r-1")

    assert all(d.ok for d in deliveries)
    assert json.loads(webhook_sink.hooks[0].body)["event"] == "test"
    (event,) = audit_events(ctx, "notification.test")
    assert event.actor_name == "Ada Admin" and event.request_id == "r-1"
    assert event.outcome is AuditOutcome.SUCCESS


def test_webhooks_accept_http_urls_only(make_ctx: Callable[..., ServiceContext]) -> None:
    ctx = make_ctx(webhook_urls=["file:///etc/passwd"])
    (delivery,) = Notifier(ctx.settings).notify("test", "s", "t", {})
    assert not delivery.ok and "http" in (delivery.error or "")


def test_storage_threshold_is_notified_once_a_day(
    make_ctx: Callable[..., ServiceContext], smtp_sink: SmtpSink, webhook_sink: WebhookSink
) -> None:
    ctx = make_ctx(**notify_settings(smtp_sink, webhook_sink), storage_alert_percent=0.001)
    ctx.storage.write_bytes("probe", b"x")  # the storage directory exists
    scheduler = Scheduler(ctx)
    now = datetime(2025, 1, 1, 12, tzinfo=UTC)

    scheduler.tick(now)
    scheduler.tick(now.replace(hour=13))

    events = [json.loads(h.body) for h in webhook_sink.hooks]
    assert [e["event"] for e in events] == ["storage.threshold"]
    assert events[0]["details"]["threshold_percent"] == 0.001
    assert events[0]["details"]["total_bytes"] > 0
    assert len(audit_events(ctx, "storage.threshold")) == 1

    scheduler.tick(now.replace(day=2, hour=13))
    assert len(webhook_sink.hooks) == 2


def test_a_failed_backup_is_notified_once(
    make_ctx: Callable[..., ServiceContext], smtp_sink: SmtpSink, webhook_sink: WebhookSink
) -> None:
    ctx = make_ctx(**notify_settings(smtp_sink, webhook_sink))
    with ctx.catalog.session() as session:
        session.add(
            Backup(
                id=uuid.uuid4(),
                name="manual-full",
                type=BackupType.FULL,
                status=BackupStatus.FAILED,
                compression="zstd",
                compression_level=3,
                created_by="Ada Admin",
                completed_at=datetime.now(UTC),
                error="pg_dump: connection refused",
            )
        )
    first, second = Scheduler(ctx), Scheduler(ctx)  # two instances, one catalog

    first.tick()
    second.tick()
    first.tick()

    events = [json.loads(h.body) for h in webhook_sink.hooks]
    assert [e["event"] for e in events] == ["backup.failed"]
    assert events[0]["details"]["error"] == "pg_dump: connection refused"
    assert len(smtp_sink.mails) == 1
