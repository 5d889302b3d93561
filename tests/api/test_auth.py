"""Signing in and out: cookie and bearer sessions, CSRF, lockout, timeouts, API tokens."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from clinvault.catalog.audit import event_document
from clinvault.catalog.models import ApiToken, AuditOutcome, User, UserSession, utcnow
from clinvault.config import Settings
from clinvault.errors import AuthError, InvalidInputError
from clinvault.services.actor import Actor
from clinvault.services.auth import AuthService
from clinvault.services.context import ServiceContext
from clinvault.services.identity import PasswordPolicy, Role

from .conftest import (
    ADMIN_PASSWORD,
    AUDITOR_PASSWORD,
    CookieSession,
    Site,
    api_settings,
    running_site,
)

LOGIN = "/api/v1/auth/login"
ME = "/api/v1/auth/me"
LOGOUT = "/api/v1/auth/logout"
TOKENS = "/api/v1/auth/tokens"


def login(site: Site, username: str = "admin", password: str = ADMIN_PASSWORD) -> dict[str, str]:
    with site.client() as client:
        answer = client.post(LOGIN, json={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    body: dict[str, str] = answer.json()
    return body


def failed_login(site: Site, username: str = "admin", password: str = "wrong password!") -> None:
    with site.client() as client:
        answer = client.post(LOGIN, json={"username": username, "password": password})
    assert answer.status_code == 401
    assert answer.json()["detail"] == "invalid username or password"


def session_of(site: Site, user: User) -> UserSession:
    """The user's newest session."""
    with site.ctx.catalog.session() as session:
        return session.scalars(
            sa.select(UserSession)
            .where(UserSession.user_id == user.id)
            .order_by(UserSession.created_at.desc())
            .limit(1)
        ).one()


# --- login, cookie, logout ---------------------------------------------------------------------


def test_login_sets_an_httponly_strict_cookie_and_returns_a_bearer_token(site: Site) -> None:
    with site.client(headers={"X-Request-ID": "login-req-1"}) as client:
        answer = client.post(LOGIN, json={"username": "admin", "password": ADMIN_PASSWORD})
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "bearer"
    assert body["access_token"].startswith("cvs_")
    assert body["user"]["username"] == "admin" and body["user"]["role"] == "SYSTEM_ADMIN"
    assert body["idle_timeout_seconds"] == 15 * 60
    assert answer.headers["cache-control"] == "no-store"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"clinvault_session={body['access_token']};")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes
    assert "secure" not in attributes  # plain HTTP in tests; see the next test
    assert not any(part.startswith("max-age") for part in attributes)

    [event] = site.events("auth.login")
    assert event.outcome is AuditOutcome.SUCCESS
    assert (event.actor_id, event.actor_name) == (str(site.admin.id), "Ada Admin")
    assert (event.request_id, event.client_address) == ("login-req-1", "127.0.0.1")
    stored = session_of(site, site.admin)
    assert stored.token_hash != body["access_token"] and len(stored.token_hash) == 64
    assert stored.expires_at - stored.created_at == timedelta(hours=12)


def test_cookie_is_secure_when_configured(tmp_path: Path) -> None:
    with running_site(tmp_path / "home", cookie_secure=True) as site:
        with site.client() as client:
            answer = client.post(LOGIN, json={"username": "admin", "password": ADMIN_PASSWORD})
        attributes = {part.strip().lower() for part in answer.headers["set-cookie"].split(";")}
        assert "secure" in attributes


def test_me_over_cookie_returns_the_csrf_token(cookie_client: CookieSession) -> None:
    answer = cookie_client.client.get(ME)
    assert answer.status_code == 200
    assert answer.json() | {"id": None} == {
        "id": None,
        "username": "admin",
        "full_name": "Ada Admin",
        "role": "SYSTEM_ADMIN",
        "via": "session",
        "csrf_token": cookie_client.csrf_token,
    }


def test_usernames_are_case_insensitive(site: Site) -> None:
    assert login(site, "  ADMIN ")["access_token"]


def test_access_token_is_the_session_and_logout_ends_both(site: Site) -> None:
    body = login(site)
    with site.client(body["access_token"]) as bearer:
        assert bearer.get(ME).json()["via"] == "session"
        assert bearer.post(LOGOUT).status_code == 204  # no CSRF needed with a bearer token
        answer = bearer.get(ME)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    with site.client(cookies={"clinvault_session": body["access_token"]}) as cookie:
        assert cookie.get(ME).status_code == 401
    assert session_of(site, site.admin).end_reason == "logout"
    assert [e.outcome for e in site.events("auth.logout")] == [AuditOutcome.SUCCESS]


def test_logout_over_cookie_clears_the_cookie(cookie_client: CookieSession) -> None:
    client = cookie_client.client
    answer = client.post(LOGOUT, headers={"X-CSRF-Token": cookie_client.csrf_token})
    assert answer.status_code == 204
    assert 'clinvault_session=""' in answer.headers["set-cookie"]
    assert client.get(ME).status_code == 401


def test_logout_with_an_api_token_is_refused_and_the_token_survives(
    admin_client: httpx.Client,
) -> None:
    assert admin_client.post(LOGOUT).status_code == 422
    assert admin_client.get(ME).status_code == 200


def test_anonymous_request_is_401_and_audited(site: Site) -> None:
    with site.client(headers={"X-Request-ID": "anon-1"}) as client:
        answer = client.get(ME)
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    [event] = site.events("access.denied")
    assert event.outcome is AuditOutcome.DENIED
    assert (event.actor_id, event.actor_name) == (None, "anonymous")
    assert event.request_id == "anon-1" and event.client_address == "127.0.0.1"
    assert event.details["path"] == ME and event.details["method"] == "GET"


def test_garbage_bearer_token_is_401(site: Site) -> None:
    for token in ("cvs_not-a-session", "cvt_not-a-token", "something-else"):
        with site.client(token) as client:
            assert client.get(ME).status_code == 401


# --- CSRF ---------------------------------------------------------------------------------------


def test_cookie_post_needs_the_csrf_header(site: Site, cookie_client: CookieSession) -> None:
    client = cookie_client.client
    body = {"name": "ci"}
    missing = client.post(TOKENS, json=body)
    wrong = client.post(TOKENS, json=body, headers={"X-CSRF-Token": "0" * 64})
    right = client.post(TOKENS, json=body, headers={"X-CSRF-Token": cookie_client.csrf_token})
    assert (missing.status_code, wrong.status_code, right.status_code) == (403, 403, 201)
    denials = site.events("access.denied")
    assert len(denials) == 2
    assert all("X-CSRF-Token" in event.details["problem"] for event in denials)
    assert all(event.actor_name == "Ada Admin" for event in denials)


def test_bearer_post_needs_no_csrf_header(admin_client: httpx.Client) -> None:
    assert admin_client.post(TOKENS, json={"name": "ci"}).status_code == 201


# --- failures and lockout -----------------------------------------------------------------------


def test_wrong_password_is_a_generic_401_and_audited(site: Site) -> None:
    failed_login(site, password="not the password")
    [event] = site.events("auth.login")
    assert event.outcome is AuditOutcome.FAILURE
    assert event.actor_id == str(site.admin.id)
    assert event.details == {"username": "admin", "cause": "bad_password"}
    assert site.user(site.admin.id).failed_attempts == 1


def test_unknown_user_gets_the_same_answer_and_costs_a_hash_check(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    original = PasswordPolicy.verify_dummy

    def spy(self: PasswordPolicy, password: str) -> None:
        checked.append(password)
        original(self, password)

    monkeypatch.setattr(PasswordPolicy, "verify_dummy", spy)
    failed_login(site, username="nobody", password="whatever-password")
    assert checked == ["whatever-password"]
    [event] = site.events("auth.login")
    assert event.details["cause"] == "unknown_user" and event.details["username"] == "nobody"
    assert event.actor_id is None


def test_five_failures_lock_the_account_even_for_the_right_password(site: Site) -> None:
    for _ in range(5):
        failed_login(site)
    user = site.user(site.admin.id)
    assert user.locked_until is not None
    assert timedelta(minutes=14) < user.locked_until - utcnow() <= timedelta(minutes=15)
    failed_login(site, password=ADMIN_PASSWORD)
    causes = [event.details["cause"] for event in site.events("auth.login")]
    assert causes == ["bad_password"] * 5 + ["locked"]
    [lock] = site.events("user.lock")
    assert lock.target_id == str(site.admin.id) and lock.details["cause"] == "failed logins"


def test_lock_lifts_when_its_time_has_passed(site: Site) -> None:
    for _ in range(5):
        failed_login(site)
    site.update(User, site.admin.id, locked_until=utcnow() - timedelta(seconds=1))
    assert login(site)["access_token"]
    user = site.user(site.admin.id)
    assert user.failed_attempts == 0 and user.locked_until is None


def test_a_success_resets_the_failure_count(site: Site) -> None:
    for _ in range(4):
        failed_login(site)
    login(site)
    for _ in range(4):
        failed_login(site)
    assert site.user(site.admin.id).locked_until is None
    assert login(site)["access_token"]


def test_locking_ends_open_sessions(site: Site, cookie_client: CookieSession) -> None:
    for _ in range(5):
        failed_login(site)
    assert cookie_client.client.get(ME).status_code == 401
    assert session_of(site, site.admin).end_reason == "locked"


def test_inactive_user_cannot_sign_in(site: Site) -> None:
    site.auth.deactivate_user(site.auditor.id, Actor.system())
    failed_login(site, "auditor", AUDITOR_PASSWORD)
    assert site.events("auth.login")[-1].details["cause"] == "inactive"


# --- timeouts -----------------------------------------------------------------------------------


def test_idle_session_expires(site: Site, cookie_client: CookieSession) -> None:
    stored = session_of(site, site.admin)
    site.update(UserSession, stored.id, last_seen_at=utcnow() - timedelta(minutes=15, seconds=1))
    answer = cookie_client.client.get(ME)
    assert answer.status_code == 401
    assert "idle timeout" in answer.json()["detail"]
    assert session_of(site, site.admin).end_reason == "idle_timeout"
    [event] = site.events("auth.session_expired")
    assert event.target_id == str(stored.id) and event.details["cause"] == "idle_timeout"
    site.update(UserSession, stored.id, last_seen_at=utcnow())  # ended stays ended
    assert cookie_client.client.get(ME).status_code == 401


def test_session_expires_at_its_absolute_limit(site: Site, cookie_client: CookieSession) -> None:
    stored = session_of(site, site.admin)
    site.update(UserSession, stored.id, expires_at=utcnow() - timedelta(seconds=1))
    answer = cookie_client.client.get(ME)
    assert answer.status_code == 401 and "absolute timeout" in answer.json()["detail"]
    assert session_of(site, site.admin).end_reason == "absolute_timeout"


def test_last_seen_is_written_at_most_every_30_seconds(
    site: Site, cookie_client: CookieSession
) -> None:
    first = session_of(site, site.admin).last_seen_at
    for _ in range(3):
        assert cookie_client.client.get(ME).status_code == 200
    assert session_of(site, site.admin).last_seen_at == first
    stored = session_of(site, site.admin)
    site.update(UserSession, stored.id, last_seen_at=utcnow() - timedelta(seconds=31))
    assert cookie_client.client.get(ME).status_code == 200
    assert utcnow() - session_of(site, site.admin).last_seen_at < timedelta(seconds=5)


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def short_sessions(tmp_path: Path) -> Iterator[tuple[AuthService, Clock]]:
    ctx = ServiceContext(
        api_settings(tmp_path / "home", session_idle_minutes=5, session_absolute_hours=1)
    )
    clock = Clock()
    auth = AuthService(ctx, clock=clock)
    auth.create_user("carol", "Carol C", Role.AUDITOR, "carol-password-1", Actor.system())
    yield auth, clock
    ctx.catalog.dispose()


def test_timeouts_follow_the_settings(short_sessions: tuple[AuthService, Clock]) -> None:
    auth, clock = short_sessions
    token = auth.authenticate("carol", "carol-password-1").session_token
    for _ in range(13):  # active every 4.5 minutes: the idle limit is never reached...
        clock.now += timedelta(minutes=4, seconds=30)
        assert auth.resolve_session(token).username == "carol"
    clock.now += timedelta(minutes=4)  # ...but the absolute hour is
    with pytest.raises(AuthError, match="absolute"):
        auth.resolve_session(token)
    token = auth.authenticate("carol", "carol-password-1").session_token
    clock.now += timedelta(minutes=5)
    with pytest.raises(AuthError, match="idle"):
        auth.resolve_session(token)


# --- API tokens ---------------------------------------------------------------------------------


def test_api_token_is_shown_once_stored_hashed_and_revocable(
    site: Site, admin_client: httpx.Client
) -> None:
    created = admin_client.post(TOKENS, json={"name": "nightly", "expires_in_days": 30})
    assert created.status_code == 201
    token = created.json()["token"]
    assert token.startswith("cvt_") and created.json()["prefix"] == token[:12]
    listed = admin_client.get(TOKENS).json()
    assert token not in str(listed) and {t["name"] for t in listed} == {"tests", "nightly"}
    with site.ctx.catalog.session() as session:
        hashes = session.scalars(sa.select(ApiToken.token_hash)).all()
    assert token not in hashes
    with site.client(token) as automation:
        me = automation.get(ME).json()
        assert (me["username"], me["via"]) == ("admin", "token")
        revoked = admin_client.delete(f"{TOKENS}/{created.json()['id']}")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        assert automation.get(ME).status_code == 401
    assert [e.action for e in site.events() if e.action.startswith("auth.token")] == [
        "auth.token_create",
        "auth.token_create",
        "auth.token_revoke",
    ]


def test_expired_api_token_is_refused(site: Site) -> None:
    created = site.auth.create_api_token(site.auditor, "short", utcnow() + timedelta(days=1))
    with site.client(created.token) as client:
        assert client.get(ME).status_code == 200
        site.update(ApiToken, created.record.id, expires_at=utcnow() - timedelta(seconds=1))
        assert client.get(ME).status_code == 401


def test_cannot_revoke_someone_elses_token(site: Site, auditor_client: httpx.Client) -> None:
    other = site.auth.create_api_token(site.admin, "admin's", None)
    assert auditor_client.delete(f"{TOKENS}/{other.record.id}").status_code == 404
    assert auditor_client.delete(f"{TOKENS}/{uuid.uuid4()}").status_code == 404


# --- passwords ----------------------------------------------------------------------------------


def test_password_policy_refuses_short_passwords_and_the_username(site: Site) -> None:
    with pytest.raises(InvalidInputError, match="at least 12 characters") as short:
        site.auth.create_user("dave", "Dave D", Role.AUDITOR, "eleven-char", Actor.system())
    assert "eleven-char" not in str(short.value)
    with pytest.raises(InvalidInputError, match="must not be the username"):
        site.auth.create_user("davethedev12", "Dave", Role.AUDITOR, "DaveTheDev12", Actor.system())
    site.auth.create_user("dave", "Dave D", Role.AUDITOR, "twelve-chars", Actor.system())


def test_passwords_are_argon2id_with_the_rfc_9106_costs_by_default(tmp_path: Path) -> None:
    policy = PasswordPolicy(Settings(data_dir=tmp_path))
    digest = policy.hash("correct horse battery staple")
    assert digest.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert policy.verify(digest, "correct horse battery staple")
    assert not policy.verify(digest, "correct horse battery stapler")


def test_a_weaker_hash_is_upgraded_at_sign_in(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cheap = ServiceContext(api_settings(home))
    AuthService(cheap).create_user(
        "erin", "Erin E", Role.AUDITOR, "erin-password-1", Actor.system()
    )
    stronger = ServiceContext(api_settings(home, password_hash_memory_kib=16384))
    try:
        result = AuthService(stronger).authenticate("erin", "erin-password-1")
        assert "$m=16384,t=1," in result.user.password_hash
        assert AuthService(stronger).authenticate("erin", "erin-password-1").session_token
    finally:
        cheap.catalog.dispose()
        stronger.catalog.dispose()


def test_no_secret_reaches_logs_audit_or_answers(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets_seen = [ADMIN_PASSWORD, "wrong-password-xyz"]
    failed_login(site, password="wrong-password-xyz")
    body = login(site)
    secrets_seen += [body["access_token"], body["csrf_token"]]
    with site.client(body["access_token"]) as client:
        created = client.post(TOKENS, json={"name": "ci"}).json()
        secrets_seen.append(created["token"])
        new_user = {"username": "frank", "full_name": "Frank F", "role": "AUDITOR"}
        short = client.post("/api/v1/users", json=new_user | {"password": "short-pw"})
        assert short.status_code == 422 and "short-pw" not in short.text
        made = client.post("/api/v1/users", json=new_user | {"password": "frank-password-1"})
        reset = client.post(
            f"/api/v1/users/{made.json()['id']}/reset-password",
            json={"password": "frank-password-2"},
        )
        assert reset.status_code == 200
        secrets_seen += ["short-pw", "frank-password-1", "frank-password-2"]
        assert client.post(LOGOUT).status_code == 204
    trail = str([event_document(event) for event in site.events()])
    server_side = ("clinvault", "uvicorn", "fastapi", "starlette", "sqlalchemy", "argon2")
    logs = "\n".join(
        record.getMessage() for record in caplog.records if record.name.startswith(server_side)
    )
    assert "POST /api/v1/auth/login" in logs  # the server's access log was captured
    for secret in secrets_seen:
        assert secret not in trail
        assert secret not in logs
