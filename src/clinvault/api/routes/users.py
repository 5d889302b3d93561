"""User administration (SYSTEM_ADMIN only): list, create, deactivate, reset a password,
change a role. Every change is audited with its old and new values, never a password."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, status

from clinvault.api.deps import client_address, request_id
from clinvault.api.schemas.users import (
    PasswordReset,
    RoleChange,
    UserCreate,
    UserDeactivate,
    UserOut,
)
from clinvault.api.security import AdminDep, AuthDep

router = APIRouter(prefix="/users", tags=["users"])


@router.get("", summary="List users")
def list_users(_: AdminDep, auth: AuthDep) -> list[UserOut]:
    return [UserOut.of(user) for user in auth.list_users()]


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a user")
def create_user(body: UserCreate, principal: AdminDep, request: Request, auth: AuthDep) -> UserOut:
    """A new user who signs in with ``username`` and ``password`` (at least 12 characters)."""
    user = auth.create_user(
        body.username,
        body.full_name,
        body.role,
        body.password.get_secret_value(),
        principal.actor(),
        reason=body.reason,
        request_id=request_id(request),
        client_address=client_address(request),
    )
    return UserOut.of(user)


@router.get("/{user_id}", summary="One user")
def get_user(user_id: uuid.UUID, _: AdminDep, auth: AuthDep) -> UserOut:
    return UserOut.of(auth.get_user(user_id))


@router.post("/{user_id}/deactivate", summary="Deactivate a user")
def deactivate_user(
    user_id: uuid.UUID, body: UserDeactivate, principal: AdminDep, request: Request, auth: AuthDep
) -> UserOut:
    """The user can no longer sign in; their sessions end and their API tokens are revoked.
    The last active SYSTEM_ADMIN cannot be deactivated (409)."""
    user = auth.deactivate_user(
        user_id,
        principal.actor(),
        reason=body.reason,
        request_id=request_id(request),
        client_address=client_address(request),
    )
    return UserOut.of(user)


@router.post("/{user_id}/reset-password", summary="Set a user's password")
def reset_password(
    user_id: uuid.UUID, body: PasswordReset, principal: AdminDep, request: Request, auth: AuthDep
) -> UserOut:
    """Set a new password: the user's sessions end and a lockout is lifted."""
    user = auth.reset_password(
        user_id,
        body.password.get_secret_value(),
        principal.actor(),
        reason=body.reason,
        request_id=request_id(request),
        client_address=client_address(request),
    )
    return UserOut.of(user)


@router.post("/{user_id}/role", summary="Change a user's role")
def change_role(
    user_id: uuid.UUID, body: RoleChange, principal: AdminDep, request: Request, auth: AuthDep
) -> UserOut:
    """Effective from the user's next request. The last active SYSTEM_ADMIN keeps the role."""
    user = auth.change_role(
        user_id,
        body.role,
        principal.actor(),
        reason=body.reason,
        request_id=request_id(request),
        client_address=client_address(request),
    )
    return UserOut.of(user)
