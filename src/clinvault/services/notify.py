"""Telling people when something needs them: email over SMTP and JSON webhooks.

Events: ``backup.failed``, ``schedule.missed``, ``verify.failed``, ``drill.failed`` and
``storage.threshold`` (plus ``test`` from :meth:`Notifier.test_send`). Every configured
channel gets every event; a channel that fails does not stop the others, and failures are
logged and audited, never raised: a broken mail server must not break a backup.

Webhooks are ``POST``\\ ed as JSON. With ``webhook_secret`` set, the header
``X-ClinVault-Signature-256: sha256=<hex>`` carries the HMAC-SHA256 of the exact body under
that secret, so a receiver can check the sender (compare in constant time); the body holds
its own ``occurred_at`` and ``delivery_id`` against replays. Redirects are not followed.

Secrets stay out of everything sent and logged: details pass through the audit trail's
redaction, webhook URLs are shown by scheme and host only (their paths often hold tokens),
and SMTP credentials are only ever sent after STARTTLS (or to a loopback server).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import smtplib
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Final

from clinvault import __version__
from clinvault.catalog.audit import redact_secrets
from clinvault.catalog.models import AuditOutcome
from clinvault.config import Settings
from clinvault.errors import InvalidInputError
from clinvault.services.actor import Actor
from clinvault.services.audit import AuditService

log = logging.getLogger(__name__)

BACKUP_FAILED: Final = "backup.failed"
SCHEDULE_MISSED: Final = "schedule.missed"
VERIFY_FAILED: Final = "verify.failed"
DRILL_FAILED: Final = "drill.failed"
STORAGE_THRESHOLD: Final = "storage.threshold"
TEST: Final = "test"
EVENTS: Final = (
    BACKUP_FAILED,
    SCHEDULE_MISSED,
    VERIFY_FAILED,
    DRILL_FAILED,
    STORAGE_THRESHOLD,
    TEST,
)
SIGNATURE_HEADER: Final = "X-ClinVault-Signature-256"
EVENT_HEADER: Final = "X-ClinVault-Event"


@dataclass(frozen=True, slots=True)
class Notification:
    event: str
    subject: str
    summary: str
    details: Mapping[str, Any]
    occurred_at: datetime
    delivery_id: str

    def payload(self) -> dict[str, Any]:
        """The webhook body (and the facts of the email): no secrets, by construction."""
        return {
            "event": self.event,
            "subject": self.subject,
            "summary": self.summary,
            "details": redact_secrets(json.loads(json.dumps(dict(self.details), default=_plain))),
            "occurred_at": self.occurred_at.isoformat(),
            "delivery_id": self.delivery_id,
            "service": {"name": "clinvault", "version": __version__, "host": socket.gethostname()},
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one channel: ``target`` is safe to show (no credentials, no path)."""

    channel: str
    target: str
    ok: bool
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "target": self.target, "ok": self.ok, "error": self.error}


def safe_url(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: enough to recognise it, nothing secret."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def sign(body: bytes, secret: str) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Notifier:
    """Sends notifications to the channels in ``settings``."""

    def __init__(self, settings: Settings, *, audit: AuditService | None = None) -> None:
        self.settings = settings
        self.audit = audit

    @property
    def channels(self) -> list[str]:
        found = []
        if self.settings.smtp_host and self.settings.notify_emails:
            found.append("email")
        if self.settings.webhook_urls:
            found.append("webhook")
        return found

    def notify(
        self, event: str, subject: str, summary: str, details: Mapping[str, Any] | None = None
    ) -> list[Delivery]:
        """Send ``event`` to every configured channel; returns each channel's outcome."""
        note = Notification(
            event=event,
            subject=subject,
            summary=summary,
            details=dict(details or {}),
            occurred_at=datetime.now(UTC),
            delivery_id=uuid.uuid4().hex,
        )
        deliveries: list[Delivery] = []
        if "email" in self.channels:
            deliveries.append(self._email(note))
        if "webhook" in self.channels:
            deliveries += [self._webhook(note, url) for url in self.settings.webhook_urls]
        failed = [d for d in deliveries if not d.ok]
        for d in failed:
            log.warning("notification %s to %s %s failed: %s", event, d.channel, d.target, d.error)
        if failed and self.audit is not None and event != TEST:
            system = Actor.system()
            self.audit.record(
                "notification.failed",
                actor_id=system.id,
                actor_name=system.name,
                outcome=AuditOutcome.FAILURE,
                target_type="notification",
                target_id=note.delivery_id,
                details={"event": event, "deliveries": [d.to_json() for d in failed]},
            )
        return deliveries

    def test_send(
        self,
        actor: Actor,
        *,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> list[Delivery]:
        """A test message to every channel, audited; InvalidInputError when none is set."""
        if not self.channels:
            raise InvalidInputError(
                "no notification channel is configured: set smtp_host and notify_emails, "
                "or webhook_urls"
            )
        deliveries = self.notify(
            TEST,
            "Test notification",
            f"A test notification sent by {actor.name}. If you can read this, ClinVault "
            "can reach you.",
            {"requested_by": actor.name},
        )
        if self.audit is not None:
            self.audit.record(
                "notification.test",
                actor_id=actor.id,
                actor_name=actor.name,
                outcome=AuditOutcome.SUCCESS
                if all(d.ok for d in deliveries)
                else AuditOutcome.FAILURE,
                target_type="notification",
                details={"deliveries": [d.to_json() for d in deliveries]},
                request_id=request_id,
                client_address=client_address,
            )
        return deliveries

    # --- email -------------------------------------------------------------------------------

    def _email(self, note: Notification) -> Delivery:
        settings = self.settings
        host = settings.smtp_host or ""
        target = f"{', '.join(settings.notify_emails)} via {host}:{settings.smtp_port}"
        try:
            self._send_mail(note, host)
        except (smtplib.SMTPException, OSError, ValueError, InvalidInputError) as exc:
            message = exc.message if isinstance(exc, InvalidInputError) else _short(exc)
            return Delivery("email", target, False, message)
        return Delivery("email", target, True)

    def _send_mail(self, note: Notification, host: str) -> None:
        settings = self.settings
        message = EmailMessage()
        message["Subject"] = f"[ClinVault] {note.subject}"
        message["From"] = settings.smtp_from
        message["To"] = ", ".join(settings.notify_emails)
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = make_msgid(domain=settings.smtp_from.rpartition("@")[2] or None)
        message[EVENT_HEADER] = note.event
        message.set_content(_mail_body(note))
        with smtplib.SMTP(host, settings.smtp_port, timeout=settings.smtp_timeout_seconds) as smtp:
            smtp.ehlo()
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if settings.smtp_user:
                if not settings.smtp_starttls and not _is_loopback(host):
                    raise InvalidInputError(
                        "refusing to send SMTP credentials without STARTTLS: set smtp_starttls"
                    )
                password = settings.smtp_password
                smtp.login(settings.smtp_user, password.get_secret_value() if password else "")
            smtp.send_message(message)

    # --- webhooks ----------------------------------------------------------------------------

    def _webhook(self, note: Notification, url: str) -> Delivery:
        target = safe_url(url)
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            return Delivery("webhook", target, False, "webhook URLs must be http:// or https://")
        body = json.dumps(note.payload(), sort_keys=True, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"ClinVault/{__version__}",
            EVENT_HEADER: note.event,
            "X-ClinVault-Delivery": note.delivery_id,
        }
        if self.settings.webhook_secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, self.settings.webhook_secret.get_secret_value())
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=self.settings.webhook_timeout_seconds) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            return Delivery("webhook", target, False, f"HTTP {exc.code}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return Delivery("webhook", target, False, _short(exc))
        if not 200 <= status < 300:
            return Delivery("webhook", target, False, f"HTTP {status}")
        return Delivery("webhook", target, True)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _mail_body(note: Notification) -> str:
    payload = note.payload()
    lines = [note.summary, "", f"Event: {note.event}", f"When (UTC): {payload['occurred_at']}"]
    lines += [f"Host: {payload['service']['host']}", ""]
    for key, value in payload["details"].items():
        lines.append(f"{key}: {value}")
    lines += ["", f"ClinVault {__version__}; delivery {note.delivery_id}"]
    return "\n".join(lines) + "\n"


def _short(exc: BaseException) -> str:
    """A one-line description of a delivery failure, with any URL password redacted."""
    reason = getattr(exc, "reason", None)
    text = str(reason if reason is not None else exc).strip().splitlines()
    first = str(redact_secrets(text[0])) if text else ""
    return f"{type(exc).__name__}: {first}"[:300]
