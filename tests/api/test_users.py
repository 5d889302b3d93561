"""User administration over the API: audited with old and new values, never a password."""

from __future__ import annotations

import uuid

import httpx

from clinvault.catalog.audit import event_document
from clinvault.catalog.models import AuditOutcome

from .conftest import ADMIN_PASSWORD, AUDITOR_PASSWORD, Site

USERS = "/api/v1/users"
NEW_USER = {
    "username": "Grace",
    "full_name": "Grace Hopper",
    "role": "AUDITOR",
    "password": "grace-password-1",
    "reason": "new QA auditor",
}


def create(client: httpx.Client, **changes: str) -> dict[str, object]:
    answer = client.post(USERS, json=NEW_USER | changes)
    assert answer.status_code == 201, answer.text
    body: dict[str, object] = answer.json()
    return body


def can_login(site: Site, username: str, password: str) -> bool:
    with site.client() as client:
        answer = client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
    return answer.status_code == 200


def test_admin_creates_a_user_and_the_event_names_who_and_what(
    site: Site, admin_client: httpx.Client
) -> None:
    answer = admin_client.post(USERS, json=NEW_USER, headers={"X-Request-ID": "create-grace"})
    assert answer.status_code == 201
    body = answer.json()
    assert {key: body[key] for key in ("username", "full_name", "role", "is_active")} == {
        "username": "grace",
        "full_name": "Grace Hopper",
        "role": "AUDITOR",
        "is_active": True,
    }
    assert "grace-password-1" not in answer.text and "password_hash" not in body
    assert can_login(site, "GRACE", "grace-password-1")
    event = site.events("user.create")[-1]
    assert (event.actor_id, event.actor_name) == (str(site.admin.id), "Ada Admin")
    assert (event.target_type, event.target_id) == ("user", body["id"])
    assert event.reason == "new QA auditor"
    assert (event.request_id, event.client_address) == ("create-grace", "127.0.0.1")
    assert event.details == {
        "new": {
            "username": "grace",
            "full_name": "Grace Hopper",
            "role": "AUDITOR",
            "is_active": True,
        }
    }
    assert "grace-password-1" not in str(event_document(event))


def test_a_refused_creation_is_audited_as_a_failure(site: Site, admin_client: httpx.Client) -> None:
    short = admin_client.post(USERS, json=NEW_USER | {"password": "too-short"})
    assert short.status_code == 422
    assert short.json()["detail"] == "the password must be at least 12 characters long"
    create(admin_client)
    taken = admin_client.post(USERS, json=NEW_USER | {"username": "GRACE"})
    assert taken.status_code == 409
    bad_name = admin_client.post(USERS, json=NEW_USER | {"username": "no spaces allowed"})
    assert bad_name.status_code == 422
    outcomes = [(e.outcome, e.target_id) for e in site.events("user.create")[2:]]
    assert outcomes == [
        (AuditOutcome.FAILURE, "grace"),
        (AuditOutcome.SUCCESS, outcomes[1][1]),
        (AuditOutcome.FAILURE, "grace"),
        (AuditOutcome.FAILURE, "no spaces allowed"),
    ]
    assert "too-short" not in str([event_document(e) for e in site.events()])


def test_list_and_get_users(site: Site, admin_client: httpx.Client) -> None:
    listed = admin_client.get(USERS).json()
    assert [user["username"] for user in listed] == ["admin", "auditor"]
    one = admin_client.get(f"{USERS}/{site.auditor.id}").json()
    assert one["full_name"] == "Otto Auditor" and one["locked"] is False
    assert admin_client.get(f"{USERS}/{uuid.uuid4()}").status_code == 404


def test_deactivation_ends_sessions_and_revokes_tokens(
    site: Site, admin_client: httpx.Client
) -> None:
    token = site.api_token(site.auditor)
    with site.client() as browser:
        browser.post(
            "/api/v1/auth/login", json={"username": "auditor", "password": AUDITOR_PASSWORD}
        )
        assert browser.get("/api/v1/auth/me").status_code == 200
        answer = admin_client.post(
            f"{USERS}/{site.auditor.id}/deactivate", json={"reason": "left the company"}
        )
        assert answer.status_code == 200 and answer.json()["is_active"] is False
        assert browser.get("/api/v1/auth/me").status_code == 401
    with site.client(token) as automation:
        assert automation.get("/api/v1/auth/me").status_code == 401
    assert not can_login(site, "auditor", AUDITOR_PASSWORD)
    [event] = site.events("user.deactivate")
    assert event.details["old"]["is_active"] is True and event.details["new"]["is_active"] is False
    assert event.details["sessions_ended"] == 1 and event.details["revoked_api_access"] == 1
    assert event.reason == "left the company"
    again = admin_client.post(f"{USERS}/{site.auditor.id}/deactivate", json={})
    assert again.status_code == 409


def test_reset_password_replaces_the_old_one_and_lifts_a_lock(
    site: Site, admin_client: httpx.Client
) -> None:
    for _ in range(5):
        assert not can_login(site, "auditor", "not-the-password")
    assert admin_client.get(f"{USERS}/{site.auditor.id}").json()["locked"] is True
    answer = admin_client.post(
        f"{USERS}/{site.auditor.id}/reset-password",
        json={"password": "a-brand-new-password", "reason": "forgotten"},
    )
    assert answer.status_code == 200 and answer.json()["locked"] is False
    assert not can_login(site, "auditor", AUDITOR_PASSWORD)
    assert can_login(site, "auditor", "a-brand-new-password")
    [event] = site.events("user.reset_password")
    assert event.details["changed"] == ["password"] and event.details["was_locked"] is True
    assert "a-brand-new-password" not in str(event_document(event))
    equal_to_name = admin_client.post(
        f"{USERS}/{site.auditor.id}/reset-password", json={"password": "AUDITOR"}
    )
    assert equal_to_name.status_code == 422


def test_role_change_applies_to_the_next_request(site: Site, admin_client: httpx.Client) -> None:
    token = site.api_token(site.auditor)
    with site.client(token) as auditor:
        assert auditor.get(USERS).status_code == 403
        answer = admin_client.post(
            f"{USERS}/{site.auditor.id}/role", json={"role": "SYSTEM_ADMIN", "reason": "cover"}
        )
        assert answer.status_code == 200 and answer.json()["role"] == "SYSTEM_ADMIN"
        assert auditor.get(USERS).status_code == 200
    [event] = site.events("user.change_role")
    assert event.details["old"]["role"] == "AUDITOR"
    assert event.details["new"]["role"] == "SYSTEM_ADMIN"
    same = admin_client.post(f"{USERS}/{site.auditor.id}/role", json={"role": "SYSTEM_ADMIN"})
    assert same.status_code == 409


def test_the_last_admin_can_be_neither_deactivated_nor_demoted(
    site: Site, admin_client: httpx.Client
) -> None:
    demote = admin_client.post(f"{USERS}/{site.admin.id}/role", json={"role": "AUDITOR"})
    deactivate = admin_client.post(f"{USERS}/{site.admin.id}/deactivate", json={})
    assert (demote.status_code, deactivate.status_code) == (409, 409)
    assert "last active SYSTEM_ADMIN" in demote.json()["detail"]
    assert can_login(site, "admin", ADMIN_PASSWORD)
    second = create(admin_client, role="SYSTEM_ADMIN")
    assert admin_client.post(f"{USERS}/{site.admin.id}/role", json={"role": "AUDITOR"}).is_success
    failures = [e for e in site.events() if e.outcome is AuditOutcome.FAILURE]
    assert [e.action for e in failures] == ["user.change_role", "user.deactivate"]
    assert second["role"] == "SYSTEM_ADMIN"


def test_an_auditor_cannot_administer_users(site: Site, auditor_client: httpx.Client) -> None:
    assert auditor_client.get(USERS).status_code == 403
    assert auditor_client.post(USERS, json=NEW_USER).status_code == 403
    role = auditor_client.post(f"{USERS}/{site.auditor.id}/role", json={"role": "SYSTEM_ADMIN"})
    assert role.status_code == 403
    denials = site.events("access.denied")
    assert len(denials) == 3
    assert {event.details["role"] for event in denials} == {"AUDITOR"}
    assert all(event.actor_name == "Otto Auditor" for event in denials)
