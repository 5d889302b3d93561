"""Users: what an administrator sends and reads back. Passwords are write-only."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from clinvault.catalog.models import Role, User, utcnow

_PASSWORD = Field(
    min_length=1,
    max_length=1024,
    description="At least 12 characters, not the username. Never shown or logged.",
)
_REASON = Field(
    default=None, max_length=2000, description="Why, for the audit trail.", examples=["Left"]
)


USER_EXAMPLE: Final[dict[str, Any]] = {
    "id": "3b0f5d0e-8f55-4c39-9d0a-5a8d2f0c1e11",
    "username": "jdoe",
    "full_name": "Jane Doe",
    "role": "SYSTEM_ADMIN",
    "is_active": True,
    "locked": False,
    "locked_until": None,
    "last_login_at": "2026-11-27T09:12:03.120000Z",
    "password_changed_at": "2026-11-01T08:00:00Z",
    "created_by": "Jane Admin",
    "created_at": "2026-11-01T08:00:00Z",
}


class UserOut(BaseModel):
    """A user as the API shows it (no password hash)."""

    model_config = ConfigDict(json_schema_extra={"examples": [USER_EXAMPLE]})

    id: uuid.UUID
    username: str = Field(description="Lower case; sign-in is case-insensitive.")
    full_name: str = Field(description="The printed name shown in audit events and signatures.")
    role: Role
    is_active: bool = Field(description="False once deactivated; users are never deleted.")
    locked: bool = Field(description="Locked after repeated failed logins or signatures.")
    locked_until: datetime | None
    last_login_at: datetime | None
    password_changed_at: datetime | None
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        locked = user.locked_until is not None and user.locked_until > utcnow()
        return cls(
            id=user.id,
            username=user.username,
            full_name=user.full_name,
            role=user.role,
            is_active=user.is_active,
            locked=locked,
            locked_until=user.locked_until if locked else None,
            last_login_at=user.last_login_at,
            password_changed_at=user.password_changed_at,
            created_by=user.created_by,
            created_at=user.created_at,
        )


class UserCreate(BaseModel):
    """A new user."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "username": "asmith",
                    "full_name": "Alex Smith",
                    "role": "AUDITOR",
                    "password": "a long passphrase here",
                    "reason": "QA auditor for study CV-101",
                }
            ]
        }
    )

    username: str = Field(min_length=1, max_length=64, description="Stored in lower case.")
    full_name: str = Field(min_length=1, max_length=255, description="The printed name.")
    role: Role
    password: SecretStr = _PASSWORD
    reason: str | None = _REASON


class UserDeactivate(BaseModel):
    """Deactivating a user ends their sessions and revokes their API tokens."""

    reason: str | None = _REASON


class PasswordReset(BaseModel):
    """A new password set by an administrator; the user's sessions end, a lockout lifts."""

    password: SecretStr = _PASSWORD
    reason: str | None = _REASON


class RoleChange(BaseModel):
    """A new role, effective from the user's next request."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"role": "AUDITOR", "reason": "Moved to QA"}]}
    )

    role: Role
    reason: str | None = _REASON
