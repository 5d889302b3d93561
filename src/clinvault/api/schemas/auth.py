"""Sign-in, the signed-in user, and API tokens."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from clinvault.api.schemas.users import USER_EXAMPLE, UserOut
from clinvault.catalog.models import ApiToken, Role


class LoginIn(BaseModel):
    """A username and password."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"username": "admin", "password": "********"}]}
    )

    username: str = Field(min_length=1, max_length=64, description="Case-insensitive.")
    password: SecretStr = Field(min_length=1, max_length=1024)


class LoginOut(BaseModel):
    """A new session. The same session is also set as the HttpOnly ``clinvault_session``
    cookie for the UI; scripts send ``access_token`` as ``Authorization: Bearer``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "cvs_3q2-7wEXAMPLEonly",
                    "token_type": "bearer",
                    "csrf_token": "6f1c...e2",
                    "expires_at": "2026-11-27T21:12:03.120000Z",
                    "idle_timeout_seconds": 900,
                    "user": USER_EXAMPLE,
                }
            ]
        }
    )

    access_token: str = Field(
        description="The session's bearer token: valid while the session is (idle and "
        "absolute timeouts), ended by logout. Keep it out of logs and browser storage."
    )
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the scheme's name)
    csrf_token: str = Field(
        description="Send as the X-CSRF-Token header on POST/PUT/PATCH/DELETE requests "
        "authenticated by the cookie."
    )
    expires_at: datetime = Field(description="The absolute end of the session (UTC).")
    idle_timeout_seconds: int = Field(description="The session ends after this much idleness.")
    user: UserOut


class MeOut(BaseModel):
    """The signed-in user and how they signed in."""

    id: uuid.UUID
    username: str
    full_name: str
    role: Role
    via: Literal["session", "token"] = Field(
        description="``session``: a login (cookie or its access token); ``token``: an API token."
    )
    csrf_token: str | None = Field(
        default=None,
        description="The session's CSRF token, given to cookie-authenticated callers (so the "
        "UI can recover it after a page reload).",
    )


class TokenCreate(BaseModel):
    """A named API token for automation."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "nightly verification job", "expires_in_days": 90}]
        }
    )

    name: str = Field(min_length=1, max_length=255, description="What the token is for.")
    expires_in_days: int = Field(default=90, ge=1, le=365)


class TokenOut(BaseModel):
    """An API token's record; the secret itself is never shown again."""

    id: uuid.UUID
    name: str
    prefix: str = Field(description="The first characters of the token, to recognize it.")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenOut:
        return cls(
            id=token.id,
            name=token.name,
            prefix=token.prefix,
            created_at=token.created_at,
            expires_at=token.expires_at,
            last_used_at=token.last_used_at,
            revoked_at=token.revoked_at,
        )


class TokenCreated(TokenOut):
    """A new API token: ``token`` is shown this once; only its hash is kept."""

    token: str = Field(description="Send as ``Authorization: Bearer <token>``.")
