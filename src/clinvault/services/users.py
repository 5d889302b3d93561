"""User administration: create, list, deactivate, reset a password, change a role.

Each change and its audit event (old and new values, never a password) commit together; a
refused change is audited as a failure. The last active ``SYSTEM_ADMIN`` can be neither
deactivated nor demoted, so the system never loses its administrator.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinvault.catalog.models import ApiToken, Role, User
from clinvault.errors import ClinVaultError, ConflictError, InvalidInputError, NotFoundError
from clinvault.services.actor import Actor
from clinvault.services.identity import IdentityStore, Origin, normalize_username

MAX_FULL_NAME = 255


def user_summary(user: User) -> dict[str, Any]:
    """The audited view of a user: what may appear in old/new values."""
    return {
        "username": user.username,
        "full_name": user.full_name,
        "role": user.role.value,
        "is_active": user.is_active,
    }


class UserService(IdentityStore):
    """The users who may sign in, and their administration."""

    def get_user(self, user_id: uuid.UUID) -> User:
        with self.read() as session:
            user = session.get(User, user_id)
        if user is None:
            raise NotFoundError(f"no user with id {user_id}")
        return user

    def get_user_by_username(self, username: str) -> User:
        name = username.strip().lower()
        with self.read() as session:
            user = session.scalars(sa.select(User).where(User.username == name)).one_or_none()
        if user is None:
            raise NotFoundError(f"no user named {name!r}")
        return user

    def list_users(self, *, include_inactive: bool = True) -> Sequence[User]:
        statement = sa.select(User).order_by(User.username)
        if not include_inactive:
            statement = statement.where(User.is_active.is_(True))
        with self.read() as session:
            return session.scalars(statement).all()

    def count_admins(self) -> int:
        """Active system administrators (the CLI's first-run check)."""
        with self.read() as session:
            return _active_admins(session)

    def create_user(
        self,
        username: str,
        full_name: str,
        role: Role,
        password: str,
        actor: Actor,
        *,
        reason: str | None = None,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> User:
        origin = Origin(request_id, client_address)
        target = username.strip().lower()[:255] or None
        with self._failures_audited("user.create", actor, origin, target, reason):
            name = normalize_username(username)
            printed = _printed_name(full_name)
            role = Role(role)
            self.passwords.check(password, name)
            password_hash = self.passwords.hash(password)  # slow: outside the transaction
            now = self.now()
            with self.write() as session:
                if session.scalars(sa.select(User.id).where(User.username == name)).first():
                    raise ConflictError(f"a user named {name!r} already exists")
                user = User(
                    username=name,
                    full_name=printed,
                    role=role,
                    password_hash=password_hash,
                    password_changed_at=now,
                    created_by=actor.name,
                    created_at=now,
                )
                session.add(user)
                session.flush()
                self.audit(
                    session,
                    "user.create",
                    actor,
                    origin,
                    target_type="user",
                    target_id=str(user.id),
                    reason=reason,
                    details={"new": user_summary(user)},
                )
        return user

    def deactivate_user(
        self,
        user_id: uuid.UUID,
        actor: Actor,
        *,
        reason: str | None = None,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> User:
        """Stop a user from signing in: open sessions end and API tokens are revoked.

        Users are never deleted: audit events and signatures keep pointing at them.
        """
        origin = Origin(request_id, client_address)
        with self._failures_audited("user.deactivate", actor, origin, str(user_id), reason):
            now = self.now()
            with self.write() as session:
                user = _locked_user(session, user_id)
                if not user.is_active:
                    raise ConflictError(f"user {user.username!r} is already inactive")
                _keep_an_admin(session, user)
                old = user_summary(user)
                user.is_active = False
                ended = self.end_sessions(session, user.id, "deactivated", now)
                revoked = session.execute(
                    sa.update(ApiToken)
                    .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                    .values(revoked_at=now)
                    .execution_options(synchronize_session=False)
                )
                self.audit(
                    session,
                    "user.deactivate",
                    actor,
                    origin,
                    target_type="user",
                    target_id=str(user.id),
                    reason=reason,
                    details={
                        "old": old,
                        "new": user_summary(user),
                        "sessions_ended": ended,
                        "revoked_api_access": int(getattr(revoked, "rowcount", 0) or 0),
                    },
                )
        return user

    def reset_password(
        self,
        user_id: uuid.UUID,
        password: str,
        actor: Actor,
        *,
        reason: str | None = None,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> User:
        """Set a new password; the user's sessions end and a lockout is lifted."""
        origin = Origin(request_id, client_address)
        with self._failures_audited("user.reset_password", actor, origin, str(user_id), reason):
            user = self.get_user(user_id)
            self.passwords.check(password, user.username)
            password_hash = self.passwords.hash(password)
            now = self.now()
            with self.write() as session:
                user = _locked_user(session, user_id)
                was_locked = self.is_locked(user, now)
                user.password_hash = password_hash
                user.password_changed_at = now
                self.clear_failures(user)
                ended = self.end_sessions(session, user.id, "password_reset", now)
                self.audit(
                    session,
                    "user.reset_password",
                    actor,
                    origin,
                    target_type="user",
                    target_id=str(user.id),
                    reason=reason,
                    details={
                        "username": user.username,
                        "changed": ["password"],
                        "was_locked": was_locked,
                        "sessions_ended": ended,
                    },
                )
        return user

    def change_role(
        self,
        user_id: uuid.UUID,
        role: Role,
        actor: Actor,
        *,
        reason: str | None = None,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> User:
        """Give a user another role; it applies to their next request."""
        origin = Origin(request_id, client_address)
        with self._failures_audited("user.change_role", actor, origin, str(user_id), reason):
            role = Role(role)
            with self.write() as session:
                user = _locked_user(session, user_id)
                if user.role is role:
                    raise ConflictError(f"user {user.username!r} already has the role {role}")
                if user.role is Role.SYSTEM_ADMIN:
                    _keep_an_admin(session, user)
                old = user_summary(user)
                user.role = role
                self.audit(
                    session,
                    "user.change_role",
                    actor,
                    origin,
                    target_type="user",
                    target_id=str(user.id),
                    reason=reason,
                    details={"old": old, "new": user_summary(user)},
                )
        return user

    @contextmanager
    def _failures_audited(
        self, action: str, actor: Actor, origin: Origin, target_id: str | None, reason: str | None
    ) -> Iterator[None]:
        try:
            yield
        except ClinVaultError as exc:
            self.record_failure(
                action,
                actor,
                origin,
                exc.message,
                target_type="user",
                target_id=target_id,
                reason=reason,
            )
            raise


def _printed_name(full_name: str) -> str:
    printed = " ".join(full_name.split())
    if not printed or len(printed) > MAX_FULL_NAME:
        raise InvalidInputError(f"the printed name must be 1 to {MAX_FULL_NAME} characters")
    return printed


def _locked_user(session: Session, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        raise NotFoundError(f"no user with id {user_id}")
    return user


def _active_admins(session: Session, *, excluding: uuid.UUID | None = None) -> int:
    """How many active administrators there are; their rows stay locked (PostgreSQL) until
    the transaction ends, so two concurrent demotions cannot both pass the check."""
    statement = sa.select(User.id).where(User.role == Role.SYSTEM_ADMIN, User.is_active.is_(True))
    if excluding is not None:
        statement = statement.where(User.id != excluding)
    return len(session.scalars(statement.with_for_update()).all())


def _keep_an_admin(session: Session, user: User) -> None:
    if (
        user.role is Role.SYSTEM_ADMIN
        and user.is_active
        and _active_admins(session, excluding=user.id) == 0
    ):
        raise ConflictError(
            f"{user.username!r} is the last active SYSTEM_ADMIN: make another administrator first"
        )
