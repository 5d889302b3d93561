"""What sign-in, user administration and signatures share: who is acting, passwords, tokens,
lockout, and catalog transactions that carry their own audit event.

* :class:`Principal` is a signed-in user as the API and services see it.
* Passwords are hashed with argon2id; a password is at least 12 characters and differs from
  the username. Unknown usernames are checked against a dummy hash so that a wrong username
  costs the same time as a wrong password.
* Session and API tokens are 256-bit random strings with a readable prefix (``cvs_`` for
  sessions, ``cvt_`` for API tokens); only their SHA-256 is stored.
* Lockout: ``lockout_threshold`` consecutive failures (logins and signatures alike) lock the
  account for ``lockout_minutes``.
* A state change and its audit event are written in one transaction
  (:meth:`IdentityStore.write`), so neither exists without the other and a failed audit
  write fails the action.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final, Literal

import sqlalchemy as sa
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from clinvault.catalog.audit import EventDraft, append_event
from clinvault.catalog.models import AuditOutcome, Role, User, UserSession, utcnow
from clinvault.config import Settings
from clinvault.errors import DatabaseError, InvalidInputError
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext

__all__ = [
    "API_TOKEN_PREFIX",
    "SESSION_TOKEN_PREFIX",
    "Clock",
    "IdentityStore",
    "Origin",
    "PasswordPolicy",
    "Principal",
    "Role",
    "csrf_token_for",
    "new_token",
    "normalize_username",
    "token_digest",
]

Clock = Callable[[], datetime]

SESSION_TOKEN_PREFIX: Final = "cvs_"  # noqa: S105 (a label, not a secret)
API_TOKEN_PREFIX: Final = "cvt_"  # noqa: S105

MIN_PASSWORD_LENGTH: Final = 12
# Bounds the hashing work one request can ask for.
MAX_PASSWORD_LENGTH: Final = 1024

_USERNAME: Final = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
_CSRF_CONTEXT: Final = b"clinvault csrf v1"


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in user. ``via`` names the credential: a login ``session`` (presented as the
    cookie or as the login's bearer ``access_token``) or a named API ``token``;
    ``credential_id`` is that session's or token's id."""

    user_id: uuid.UUID
    username: str
    full_name: str
    role: Role
    via: Literal["session", "token"]
    credential_id: uuid.UUID | None = None

    def actor(self) -> Actor:
        """The identity recorded in the audit trail: user id and printed name."""
        return Actor(id=str(self.user_id), name=self.full_name)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.SYSTEM_ADMIN


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request came from, for the audit trail."""

    request_id: str | None = None
    client_address: str | None = None


# --- usernames, passwords and tokens -----------------------------------------------------------


def normalize_username(username: str) -> str:
    """The stored form of a username (lower case), or :class:`InvalidInputError`."""
    name = username.strip().lower()
    if not _USERNAME.match(name):
        raise InvalidInputError(
            "a username is 1 to 64 characters: letters, digits and . _ @ -, "
            "starting with a letter or digit"
        )
    return name


class PasswordPolicy:
    """argon2id hashing with the costs from settings, and the password rules."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = _hasher(settings.password_hash_time_cost, settings.password_hash_memory_kib)

    @staticmethod
    def check(password: str, username: str) -> None:
        """Refuse a password that breaks the rules; the message never shows the password."""
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInputError(
                f"the password must be at least {MIN_PASSWORD_LENGTH} characters long"
            )
        if len(password) > MAX_PASSWORD_LENGTH:
            raise InvalidInputError(
                f"the password must be at most {MAX_PASSWORD_LENGTH} characters long"
            )
        if password.strip().lower() == username.strip().lower():
            raise InvalidInputError("the password must not be the username")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        if len(password) > MAX_PASSWORD_LENGTH:
            return False
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def verify_dummy(self, password: str) -> None:
        """Spend the time a real check takes, for a username that does not exist."""
        self.verify(_dummy_hash(self._hasher.time_cost, self._hasher.memory_cost), password)

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True


@lru_cache(maxsize=4)
def _hasher(time_cost: int, memory_kib: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, type=Type.ID)


@lru_cache(maxsize=4)
def _dummy_hash(time_cost: int, memory_kib: int) -> str:
    return _hasher(time_cost, memory_kib).hash(secrets.token_urlsafe(16))


def new_token(prefix: str) -> str:
    """A fresh bearer secret: the prefix and 256 random bits."""
    return prefix + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the catalog stores for a token: its SHA-256 (tokens are random, so no salt)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def csrf_token_for(session_token: str) -> str:
    """The CSRF token of a session, derived from its secret: the server can check it
    without a lookup, and knowing it reveals nothing of the session token."""
    return hmac.new(session_token.encode("utf-8"), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


# --- the catalog, with audit events in the same transaction ------------------------------------


class IdentityStore:
    """Base of the identity services: settings, clock, passwords and catalog transactions."""

    def __init__(self, ctx: ServiceContext, *, clock: Clock | None = None) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.passwords = PasswordPolicy(ctx.settings)
        self._clock = clock or utcnow

    def now(self) -> datetime:
        return self._clock()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._mapped_errors(), self.ctx.catalog.session() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction that may append audit events (writer lock held on SQLite)."""
        with self._mapped_errors(), self.ctx.catalog.session(write_lock=True) as session:
            yield session

    @staticmethod
    @contextmanager
    def _mapped_errors() -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            origin = getattr(exc, "orig", None) or exc
            first = (str(origin).strip().splitlines() or [type(origin).__name__])[0]
            raise DatabaseError(f"the catalog refused the change: {first}") from exc

    @staticmethod
    def audit(
        session: Session,
        action: str,
        actor: Actor,
        origin: Origin,
        *,
        outcome: AuditOutcome = AuditOutcome.SUCCESS,
        target_type: str | None = None,
        target_id: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one event in ``session``'s transaction (secrets in details are redacted)."""
        append_event(
            session,
            EventDraft(
                action=action,
                actor_id=actor.id,
                actor_name=actor.name,
                outcome=outcome,
                target_type=target_type,
                target_id=target_id,
                reason=reason,
                details=details or {},
                request_id=origin.request_id,
                client_address=origin.client_address,
            ),
        )

    def record_failure(
        self,
        action: str,
        actor: Actor,
        origin: Origin,
        problem: str,
        *,
        outcome: AuditOutcome = AuditOutcome.FAILURE,
        target_type: str | None = None,
        target_id: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Audit an action that was refused before it changed anything."""
        self.ctx.audit.record(
            action,
            actor_id=actor.id,
            actor_name=actor.name,
            outcome=outcome,
            target_type=target_type,
            target_id=target_id,
            reason=reason,
            details={"error": problem, **(details or {})},
            request_id=origin.request_id,
            client_address=origin.client_address,
        )

    # --- lockout ------------------------------------------------------------------------------

    def is_locked(self, user: User, now: datetime) -> bool:
        return user.locked_until is not None and user.locked_until > now

    def register_failure(self, session: Session, user: User, now: datetime) -> bool:
        """Count one failed login or signature; True when this failure locked the account.

        The count restarts at lock time, so an account unlocked by time has the full number
        of attempts again.
        """
        user.failed_attempts += 1
        if user.failed_attempts < self.settings.lockout_threshold:
            return False
        user.failed_attempts = 0
        user.locked_until = now + timedelta(minutes=self.settings.lockout_minutes)
        self.end_sessions(session, user.id, "locked", now)
        return True

    @staticmethod
    def clear_failures(user: User) -> None:
        user.failed_attempts = 0
        user.locked_until = None

    def audit_lock(self, session: Session, user: User, origin: Origin, cause: str) -> None:
        self.audit(
            session,
            "user.lock",
            Actor.system(),
            origin,
            target_type="user",
            target_id=str(user.id),
            details={
                "username": user.username,
                "cause": cause,
                "failures": self.settings.lockout_threshold,
                "locked_until": user.locked_until,
            },
        )

    @staticmethod
    def end_sessions(session: Session, user_id: uuid.UUID, reason: str, now: datetime) -> int:
        """End every open session of a user; how many were ended."""
        result = session.execute(
            sa.update(UserSession)
            .where(UserSession.user_id == user_id, UserSession.ended_at.is_(None))
            .values(ended_at=now, end_reason=reason)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)
