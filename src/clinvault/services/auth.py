"""Signing in and out, sessions with idle and absolute timeouts, and API tokens.

A login creates one *session*. Its secret is both the HttpOnly cookie of the UI and the
``access_token`` returned to scripts: one credential, presented two ways, with one lifetime
(idle ``session_idle_minutes``, absolute ``session_absolute_hours``) that one logout ends.
Long-running automation uses named *API tokens* instead, which expire at a fixed date and
are revoked one by one. Only the SHA-256 of either secret is stored.

Failures are answered with one generic message whatever the cause (unknown user, wrong
password, locked or inactive account); the audit event records the real cause.
:class:`AuthService` also carries the user administration of
:class:`~clinvault.services.users.UserService`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinvault.catalog.models import ApiToken, AuditOutcome, User, UserSession
from clinvault.errors import AuthError, InvalidInputError, NotFoundError
from clinvault.services.actor import Actor
from clinvault.services.identity import (
    API_TOKEN_PREFIX,
    SESSION_TOKEN_PREFIX,
    Origin,
    Principal,
    csrf_token_for,
    new_token,
    token_digest,
)
from clinvault.services.users import UserService

__all__ = ["AuthService", "LoginResult", "NewApiToken", "Principal"]

BAD_CREDENTIALS: Final = "invalid username or password"
# A session's last_seen_at is written at most this often, not on every request.
LAST_SEEN_GRANULARITY: Final = timedelta(seconds=30)
MAX_TOKEN_NAME: Final = 255
_ANONYMOUS: Final = Actor(None, "unknown user")


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A successful login. ``access_token`` is the session token itself (see the module)."""

    user: User
    session_id: uuid.UUID
    expires_at: datetime
    session_token: str = field(repr=False)
    csrf_token: str = field(repr=False)

    @property
    def access_token(self) -> str:
        return self.session_token


@dataclass(frozen=True, slots=True)
class NewApiToken:
    """A created API token: ``token`` is shown once and never stored."""

    record: ApiToken
    token: str = field(repr=False)


class AuthService(UserService):
    """Authentication: login, logout, session and bearer resolution, API tokens."""

    def authenticate(
        self,
        username: str,
        password: str,
        client_address: str | None = None,
        user_agent: str | None = None,
        *,
        request_id: str | None = None,
    ) -> LoginResult:
        origin = Origin(request_id, client_address)
        name = username.strip().lower()[:64]
        with self.read() as session:
            found = session.scalars(sa.select(User).where(User.username == name)).one_or_none()
        if found is None:
            self.passwords.verify_dummy(password)
            self.record_failure(
                "auth.login",
                _ANONYMOUS,
                origin,
                BAD_CREDENTIALS,
                details={"cause": "unknown_user", "username": name},
            )
            raise AuthError(BAD_CREDENTIALS)
        password_ok = self.passwords.verify(found.password_hash, password)
        rehashed = (
            self.passwords.hash(password)
            if password_ok and self.passwords.needs_rehash(found.password_hash)
            else None
        )
        now = self.now()
        result: LoginResult | None = None
        with self.write() as session:
            user = session.get(User, found.id, with_for_update=True)
            assert user is not None  # users are never deleted
            actor = Actor(str(user.id), user.full_name)
            cause = self._login_refusal(user, password_ok, now)
            if cause is None:
                result = self._open_session(user, now, user_agent, rehashed)
                session.add(_session_row(user, result, now, origin, user_agent))
                self.audit(
                    session,
                    "auth.login",
                    actor,
                    origin,
                    target_type="session",
                    target_id=str(result.session_id),
                    details={"username": user.username, "expires_at": result.expires_at},
                )
            else:
                locked_now = cause == "bad_password" and self.register_failure(session, user, now)
                self.audit(
                    session,
                    "auth.login",
                    actor,
                    origin,
                    outcome=AuditOutcome.FAILURE,
                    target_type="user",
                    target_id=str(user.id),
                    details={"username": user.username, "cause": cause},
                )
                if locked_now:
                    self.audit_lock(session, user, origin, "failed logins")
        if result is None:
            raise AuthError(BAD_CREDENTIALS)
        return result

    def _login_refusal(self, user: User, password_ok: bool, now: datetime) -> str | None:
        if not user.is_active:
            return "inactive"
        if self.is_locked(user, now):
            return "locked"
        return None if password_ok else "bad_password"

    def _open_session(
        self, user: User, now: datetime, user_agent: str | None, rehashed: str | None
    ) -> LoginResult:
        self.clear_failures(user)
        user.last_login_at = now
        if rehashed is not None:
            user.password_hash = rehashed
        token = new_token(SESSION_TOKEN_PREFIX)
        return LoginResult(
            user=user,
            session_id=uuid.uuid4(),
            expires_at=now + timedelta(hours=self.settings.session_absolute_hours),
            session_token=token,
            csrf_token=csrf_token_for(token),
        )

    def logout(
        self,
        principal: Principal,
        *,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> None:
        """End the session the principal signed in with."""
        if principal.via != "session" or principal.credential_id is None:
            raise InvalidInputError(
                "an API token has no session to end: revoke it with DELETE /api/v1/auth/tokens/{id}"
            )
        origin = Origin(request_id, client_address)
        now = self.now()
        with self.write() as session:
            ended = _end_session(session, principal.credential_id, "logout", now)
            self.audit(
                session,
                "auth.logout",
                principal.actor(),
                origin,
                outcome=AuditOutcome.SUCCESS if ended else AuditOutcome.FAILURE,
                target_type="session",
                target_id=str(principal.credential_id),
                details={"username": principal.username},
            )

    def resolve_session(self, token: str) -> Principal:
        """The principal of a session token, enforcing the idle and absolute timeouts."""
        now = self.now()
        with self.read() as session:
            row = session.execute(
                sa.select(UserSession, User)
                .join(User, User.id == UserSession.user_id)
                .where(UserSession.token_hash == token_digest(token))
            ).first()
        if row is None or row[0].ended_at is not None:
            raise AuthError("not signed in, or the session has ended: sign in again")
        user_session, user = row
        expiry = self._expiry(user_session, now)
        if expiry is not None:
            self._expire(user_session, user, expiry, now)
            raise AuthError(f"the session has expired ({expiry.replace('_', ' ')}): sign in again")
        self._check_usable(user, now)
        if now - user_session.last_seen_at >= LAST_SEEN_GRANULARITY:
            with self.write() as session:
                session.execute(
                    sa.update(UserSession)
                    .where(UserSession.id == user_session.id, UserSession.ended_at.is_(None))
                    .values(last_seen_at=now)
                )
        return _principal(user, "session", user_session.id)

    def _expiry(self, user_session: UserSession, now: datetime) -> str | None:
        if now >= user_session.expires_at:
            return "absolute_timeout"
        if now - user_session.last_seen_at >= timedelta(minutes=self.settings.session_idle_minutes):
            return "idle_timeout"
        return None

    def _expire(self, user_session: UserSession, user: User, cause: str, now: datetime) -> None:
        with self.write() as session:
            if _end_session(session, user_session.id, cause, now):
                self.audit(
                    session,
                    "auth.session_expired",
                    Actor.system(),
                    Origin(),
                    target_type="session",
                    target_id=str(user_session.id),
                    details={
                        "user_id": str(user.id),
                        "username": user.username,
                        "cause": cause,
                        "last_seen_at": user_session.last_seen_at,
                    },
                )

    def _check_usable(self, user: User, now: datetime) -> None:
        if not user.is_active:
            raise AuthError("the account is inactive")
        if self.is_locked(user, now):
            raise AuthError("the account is locked after repeated failed attempts")

    def resolve_bearer(self, token: str) -> Principal:
        """The principal of an ``Authorization: Bearer`` token: a login's access token
        (a session) or a named API token."""
        if token.startswith(SESSION_TOKEN_PREFIX):
            return self.resolve_session(token)
        if not token.startswith(API_TOKEN_PREFIX):
            raise AuthError("not a ClinVault bearer token")
        now = self.now()
        with self.read() as session:
            row = session.execute(
                sa.select(ApiToken, User)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.token_hash == token_digest(token))
            ).first()
        if row is None or row[0].revoked_at is not None:
            raise AuthError("unknown or revoked API token")
        api_token, user = row
        if api_token.expires_at is not None and now >= api_token.expires_at:
            raise AuthError("the API token has expired")
        self._check_usable(user, now)
        last = api_token.last_used_at
        if last is None or now - last >= LAST_SEEN_GRANULARITY:
            with self.write() as session:
                session.execute(
                    sa.update(ApiToken).where(ApiToken.id == api_token.id).values(last_used_at=now)
                )
        return _principal(user, "token", api_token.id)

    def create_api_token(
        self,
        user: User | uuid.UUID,
        name: str,
        expires: datetime | None,
        *,
        actor: Actor | None = None,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> NewApiToken:
        """A named bearer token for automation, acting as ``user`` until ``expires``."""
        user_id = user.id if isinstance(user, User) else user
        label = " ".join(name.split())
        if not label or len(label) > MAX_TOKEN_NAME:
            raise InvalidInputError(f"a token name is 1 to {MAX_TOKEN_NAME} characters")
        now = self.now()
        if expires is not None and expires <= now:
            raise InvalidInputError("a token's expiry must be in the future")
        token = new_token(API_TOKEN_PREFIX)
        with self.write() as session:
            owner = session.get(User, user_id)
            if owner is None or not owner.is_active:
                raise NotFoundError(f"no active user with id {user_id}")
            record = ApiToken(
                user_id=owner.id,
                name=label,
                token_hash=token_digest(token),
                prefix=token[:12],
                created_at=now,
                expires_at=expires,
            )
            session.add(record)
            session.flush()
            self.audit(
                session,
                "auth.token_create",
                actor or Actor(str(owner.id), owner.full_name),
                Origin(request_id, client_address),
                target_type="api_token",
                target_id=str(record.id),
                details={
                    "name": label,
                    "prefix": record.prefix,
                    "owner": owner.username,
                    "expires_at": expires,
                },
            )
        return NewApiToken(record=record, token=token)

    def list_api_tokens(self, user_id: uuid.UUID) -> Sequence[ApiToken]:
        with self.read() as session:
            return session.scalars(
                sa.select(ApiToken)
                .where(ApiToken.user_id == user_id)
                .order_by(ApiToken.created_at.desc())
            ).all()

    def revoke_api_token(
        self,
        token_id: uuid.UUID,
        principal: Principal,
        *,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> ApiToken:
        """Revoke one of the principal's own API tokens."""
        now = self.now()
        with self.write() as session:
            record = session.get(ApiToken, token_id, with_for_update=True)
            if record is None or record.user_id != principal.user_id:
                raise NotFoundError(f"you have no API token with id {token_id}")
            if record.revoked_at is None:
                record.revoked_at = now
                self.audit(
                    session,
                    "auth.token_revoke",
                    principal.actor(),
                    Origin(request_id, client_address),
                    target_type="api_token",
                    target_id=str(record.id),
                    details={"name": record.name, "prefix": record.prefix},
                )
        return record


def _principal(user: User, via: Literal["session", "token"], credential_id: uuid.UUID) -> Principal:
    return Principal(
        user_id=user.id,
        username=user.username,
        full_name=user.full_name,
        role=user.role,
        via=via,
        credential_id=credential_id,
    )


def _session_row(
    user: User, result: LoginResult, now: datetime, origin: Origin, user_agent: str | None
) -> UserSession:
    return UserSession(
        id=result.session_id,
        user_id=user.id,
        token_hash=token_digest(result.session_token),
        csrf_token=result.csrf_token,
        created_at=now,
        last_seen_at=now,
        expires_at=result.expires_at,
        client_address=origin.client_address,
        user_agent=(user_agent or None) and user_agent[:512],
    )


def _end_session(session: Session, session_id: uuid.UUID, reason: str, now: datetime) -> bool:
    result = session.execute(
        sa.update(UserSession)
        .where(UserSession.id == session_id, UserSession.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))
