"""Electronic signatures: re-entered credentials, fixed meanings, bound to one operation."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from clinvault.catalog.audit import event_document
from clinvault.catalog.models import AuditOutcome, Signature, utcnow
from clinvault.engine.pgconn import ConnInfo
from clinvault.errors import AuthError, ConflictError, InvalidInputError, PermissionDeniedError
from clinvault.services.actor import Actor
from clinvault.services.auth import AuthService
from clinvault.services.context import ServiceContext
from clinvault.services.identity import Principal, Role
from clinvault.services.signatures import (
    MEANINGS,
    SignatureService,
    operation_hash,
    signature_to_json,
)
from clinvault.services.users import UserService

from .conftest import ADMIN_PASSWORD, AUDITOR_PASSWORD, Site, api_settings

SIGNATURES = "/api/v1/signatures"
BACKUP_ID = "0b6f3c8e-3a1d-4a57-8f5e-2f4f7a1b9c10"
DELETE_OP: dict[str, Any] = {
    "action": "backup.delete",
    "target_type": "backup",
    "target_id": BACKUP_ID,
}
RESTORE_OP: dict[str, Any] = {
    "action": "restore.execute",
    "target_type": "backup",
    "target_id": BACKUP_ID,
    "scope": "all",
}


def signature(
    username: str = "admin",
    password: str = ADMIN_PASSWORD,
    meaning: str = "Approved deletion",
    reason: str = "CHG-1 retention cleanup",
) -> dict[str, str]:
    return {"username": username, "password": password, "meaning": meaning, "reason": reason}


def admin_principal(site: Site) -> Principal:
    admin = site.admin
    return Principal(admin.id, admin.username, admin.full_name, admin.role, "session")


def presign(client: httpx.Client, operation: dict[str, Any], **given: str) -> httpx.Response:
    return client.post(SIGNATURES, json={"operation": operation, "signature": signature(**given)})


def test_operation_hash_is_canonical() -> None:
    same = {"target_id": uuid.UUID(BACKUP_ID), "target_type": "backup", "action": "backup.delete"}
    assert operation_hash(DELETE_OP) == operation_hash(same)
    assert operation_hash(DELETE_OP) != operation_hash(DELETE_OP | {"target_id": "other"})
    assert len(operation_hash(DELETE_OP)) == 64


def test_presign_binds_the_signature_to_the_operation(
    site: Site, admin_client: httpx.Client
) -> None:
    answer = presign(admin_client, DELETE_OP)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["operation_hash"] == operation_hash(DELETE_OP)
    assert body["printed_name"] == "Ada Admin" and body["meaning"] == "Approved deletion"
    assert body["signed_at"].endswith("Z") and body["expires_at"].endswith("Z")
    [event] = site.events("signature.create")
    assert event.outcome is AuditOutcome.SUCCESS
    assert (event.actor_id, event.actor_name) == (str(site.admin.id), "Ada Admin")
    assert event.reason == "CHG-1 retention cleanup"
    assert event.details["operation_hash"] == body["operation_hash"]
    assert event.details["signature_id"] == body["id"] and event.details["presigned"] is True


def test_wrong_password_is_refused_and_counts_toward_lockout(
    site: Site, admin_client: httpx.Client
) -> None:
    for attempt in range(1, 5):
        answer = presign(admin_client, DELETE_OP, password="not my password")
        assert answer.status_code == 403
        assert site.user(site.admin.id).failed_attempts == attempt
    fails = site.events("signature.fail")
    assert [event.details["cause"] for event in fails] == ["bad_password"] * 4
    assert presign(admin_client, DELETE_OP, password="not my password").status_code == 403
    assert site.user(site.admin.id).locked_until is not None
    assert site.events("user.lock")[0].details["cause"] == "failed signatures"
    # Locked: the caller's own credentials stop working, and so does signing in.
    assert admin_client.get("/api/v1/auth/me").status_code == 401
    with site.client() as client:
        login = client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
    assert login.status_code == 401


def test_signer_must_be_the_signed_in_user(site: Site, admin_client: httpx.Client) -> None:
    answer = presign(admin_client, DELETE_OP, username="auditor", password=AUDITOR_PASSWORD)
    assert answer.status_code == 403
    assert answer.json()["detail"] == "the signer must be the signed-in user"
    [event] = site.events("signature.fail")
    assert event.actor_id == str(site.admin.id) and event.details["cause"] == "signer_mismatch"
    assert site.user(site.auditor.id).failed_attempts == 0
    assert site.user(site.admin.id).failed_attempts == 1
    assert not site.events("signature.create")


def test_meaning_must_come_from_the_list(site: Site, admin_client: httpx.Client) -> None:
    answer = presign(admin_client, DELETE_OP, meaning="Because I can")
    assert answer.status_code == 422
    assert all(meaning in answer.json()["detail"] for meaning in MEANINGS)
    [event] = site.events("signature.fail")
    assert event.details["meaning"] == "Because I can"
    assert site.user(site.admin.id).failed_attempts == 0


def test_a_required_meaning_is_enforced(site: Site) -> None:
    service = SignatureService(site.ctx)
    with pytest.raises(InvalidInputError, match="Approved restore"):
        service.sign(
            admin_principal(site),
            "admin",
            ADMIN_PASSWORD,
            "Reviewed",
            "looked at it",
            RESTORE_OP,
            required_meaning="Approved restore",
        )


def test_reason_and_action_are_required(site: Site, admin_client: httpx.Client) -> None:
    assert presign(admin_client, DELETE_OP, reason="   ").status_code == 422
    assert presign(admin_client, {"target_id": BACKUP_ID}).status_code == 422
    secret_op = DELETE_OP | {"password": "hunter2hunter2"}
    assert presign(admin_client, secret_op).status_code == 422
    assert len(site.events("signature.fail")) == 3
    assert "hunter2hunter2" not in str([event_document(e) for e in site.events()])


def test_auditor_cannot_sign(site: Site, auditor_client: httpx.Client) -> None:
    answer = presign(auditor_client, DELETE_OP, username="auditor", password=AUDITOR_PASSWORD)
    assert answer.status_code == 403
    assert not site.events("signature.create")


def test_a_presigned_signature_is_used_once(site: Site, admin_client: httpx.Client) -> None:
    signature_id = uuid.UUID(presign(admin_client, DELETE_OP).json()["id"])
    service = SignatureService(site.ctx)
    used = service.consume(signature_id, admin_principal(site), DELETE_OP)
    assert (used.target_type, used.target_id) == ("backup", BACKUP_ID)
    with pytest.raises(PermissionDeniedError, match="already been used"):
        service.consume(signature_id, admin_principal(site), DELETE_OP)
    assert [e.outcome for e in site.events("signature.consume")] == [AuditOutcome.SUCCESS]
    [refused] = site.events("signature.refused")
    assert refused.outcome is AuditOutcome.DENIED
    assert refused.details["problem"] == "the signature has already been used"


def test_a_signature_cannot_be_replayed_for_another_operation(
    site: Site, admin_client: httpx.Client
) -> None:
    signature_id = uuid.UUID(presign(admin_client, DELETE_OP).json()["id"])
    other = DELETE_OP | {"target_id": str(uuid.uuid4())}
    service = SignatureService(site.ctx)
    with pytest.raises(PermissionDeniedError, match="different operation"):
        service.consume(signature_id, admin_principal(site), other)
    with pytest.raises(PermissionDeniedError, match="different operation"):
        service.consume(signature_id, admin_principal(site), RESTORE_OP)
    [first, second] = site.events("signature.refused")
    assert first.target_id == other["target_id"]
    assert first.details["signed_operation_hash"] == operation_hash(DELETE_OP)
    assert first.details["operation_hash"] == operation_hash(other)
    assert second.details["action"] == "restore.execute"
    assert service.consume(signature_id, admin_principal(site), DELETE_OP).target_id == BACKUP_ID


def test_a_presigned_signature_expires_after_five_minutes(
    site: Site, admin_client: httpx.Client
) -> None:
    signature_id = uuid.UUID(presign(admin_client, DELETE_OP).json()["id"])
    site.update(Signature, signature_id, signed_at=utcnow() - timedelta(minutes=5, seconds=1))
    with pytest.raises(PermissionDeniedError, match="expired"):
        SignatureService(site.ctx).consume(signature_id, admin_principal(site), DELETE_OP)


def test_only_the_signer_can_use_a_signature(site: Site, admin_client: httpx.Client) -> None:
    signature_id = uuid.UUID(presign(admin_client, DELETE_OP).json()["id"])
    auditor = site.auditor
    other = Principal(auditor.id, auditor.username, auditor.full_name, auditor.role, "token")
    service = SignatureService(site.ctx)
    with pytest.raises(PermissionDeniedError, match="no such signature"):
        service.consume(signature_id, other, DELETE_OP)
    with pytest.raises(PermissionDeniedError, match="no such signature"):
        service.consume(uuid.uuid4(), admin_principal(site), DELETE_OP)


def test_meaning_required_at_use_is_checked(site: Site, admin_client: httpx.Client) -> None:
    signature_id = uuid.UUID(presign(admin_client, RESTORE_OP, meaning="Reviewed").json()["id"])
    with pytest.raises(PermissionDeniedError, match="Approved restore"):
        SignatureService(site.ctx).consume(
            signature_id, admin_principal(site), RESTORE_OP, required_meaning="Approved restore"
        )


def test_sign_applies_at_once_and_shows_on_its_target(site: Site) -> None:
    service = SignatureService(site.ctx)
    signed = service.sign(
        admin_principal(site),
        "ADMIN",
        ADMIN_PASSWORD,
        "Approved restore",
        "DR drill",
        RESTORE_OP,
        required_meaning="Approved restore",
        request_id="req-77",
        client_address="10.1.2.3",
    )
    [shown] = service.for_target("backup", BACKUP_ID)
    document = signature_to_json(shown)
    assert document == signature_to_json(signed)
    assert document["printed_name"] == "Ada Admin" and document["meaning"] == "Approved restore"
    assert document["reason"] == "DR drill" and document["signed_at"].endswith("Z")
    assert document["operation_hash"] == operation_hash(RESTORE_OP)
    assert document["operation"] == RESTORE_OP
    with pytest.raises(PermissionDeniedError, match="already been used"):
        service.consume(signed.id, admin_principal(site), RESTORE_OP)
    [event] = site.events("signature.create")
    assert (event.request_id, event.client_address) == ("req-77", "10.1.2.3")
    assert (event.target_type, event.target_id) == ("backup", BACKUP_ID)
    with pytest.raises(InvalidInputError, match="target"):
        service.sign(
            admin_principal(site), "admin", ADMIN_PASSWORD, "Reviewed", "x", {"action": "review"}
        )


def test_no_secret_reaches_the_audit_trail_or_logs(
    site: Site, admin_client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    presign(admin_client, DELETE_OP, password="a-wrong-password-1")
    presign(admin_client, DELETE_OP, username="auditor", password=AUDITOR_PASSWORD)
    ok = presign(admin_client, DELETE_OP)
    assert ok.status_code == 201
    assert ADMIN_PASSWORD not in ok.text
    trail = str([event_document(event) for event in site.events()])
    server_side = ("clinvault", "uvicorn", "fastapi", "starlette", "sqlalchemy")
    logs = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(server_side))
    for secret in (ADMIN_PASSWORD, AUDITOR_PASSWORD, "a-wrong-password-1"):
        assert secret not in trail and secret not in logs


@pytest.mark.pg
def test_identity_services_on_a_postgresql_catalog(database: ConnInfo, tmp_path: Path) -> None:
    """The same rules hold on a shared PostgreSQL catalog (row locks instead of SQLite's)."""
    ctx = ServiceContext(api_settings(tmp_path / "home", catalog_url=database.url()))
    try:
        auth = AuthService(ctx)
        admin = auth.create_user(
            "pat", "Pat P", Role.SYSTEM_ADMIN, "pat-password-01", Actor.system()
        )
        with pytest.raises(ConflictError):
            UserService(ctx).deactivate_user(admin.id, Actor.system())
        token = auth.authenticate("PAT", "pat-password-01").session_token
        principal = auth.resolve_session(token)
        service = SignatureService(ctx)
        presigned = service.presign(
            principal, "pat", "pat-password-01", "Approved deletion", "cleanup", DELETE_OP
        )
        assert service.consume(presigned.id, principal, DELETE_OP).target_id == BACKUP_ID
        for _ in range(5):
            with pytest.raises(PermissionDeniedError):
                service.sign(principal, "pat", "wrong", "Reviewed", "r", DELETE_OP)
        with pytest.raises(AuthError, match="session has ended"):
            auth.resolve_session(token)
        assert ctx.audit.verify().ok
    finally:
        ctx.catalog.dispose()
