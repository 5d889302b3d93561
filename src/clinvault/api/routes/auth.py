"""Sign in and out, the signed-in user, and API tokens for automation."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi import APIRouter, Request, Response, status

from clinvault.api.deps import client_address, request_id
from clinvault.api.schemas.auth import LoginIn, LoginOut, MeOut, TokenCreate, TokenCreated, TokenOut
from clinvault.api.schemas.users import UserOut
from clinvault.api.security import (
    SESSION_COOKIE,
    AuthDep,
    CurrentPrincipal,
    clear_session_cookie,
    set_session_cookie,
)
from clinvault.services.identity import csrf_token_for

router = APIRouter(prefix="/auth", tags=["auth"])

_NO_STORE = "no-store"


@router.post(
    "/login",
    summary="Sign in",
    responses={401: {"description": "Wrong username or password, or the account is locked"}},
)
def login(body: LoginIn, request: Request, response: Response, auth: AuthDep) -> LoginOut:
    """Check a username and password and open a session.

    The session is returned twice: as the HttpOnly ``clinvault_session`` cookie (for the UI;
    unsafe requests then need the ``X-CSRF-Token`` header with ``csrf_token``) and as
    ``access_token`` (for scripts, as ``Authorization: Bearer``). Any failure is the same
    401; five in a row lock the account for 15 minutes.
    """
    result = auth.authenticate(
        body.username,
        body.password.get_secret_value(),
        client_address(request),
        request.headers.get("user-agent"),
        request_id=request_id(request),
    )
    set_session_cookie(response, result.session_token, auth.settings)
    response.headers["Cache-Control"] = _NO_STORE
    return LoginOut(
        access_token=result.access_token,
        csrf_token=result.csrf_token,
        expires_at=result.expires_at,
        idle_timeout_seconds=auth.settings.session_idle_minutes * 60,
        user=UserOut.of(result.user),
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="Sign out")
def logout(principal: CurrentPrincipal, request: Request, auth: AuthDep) -> Response:
    """End the current session (cookie or access token) and clear the cookie."""
    auth.logout(principal, request_id=request_id(request), client_address=client_address(request))
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    clear_session_cookie(response, auth.settings)
    return response


@router.get("/me", summary="The signed-in user")
def me(principal: CurrentPrincipal, request: Request, response: Response) -> MeOut:
    """Who is signed in, with which role; cookie sessions also get their CSRF token back."""
    cookie = request.cookies.get(SESSION_COOKIE)
    by_bearer = request.headers.get("authorization", "").lower().startswith("bearer ")
    by_cookie = cookie is not None and not by_bearer
    response.headers["Cache-Control"] = _NO_STORE
    return MeOut(
        id=principal.user_id,
        username=principal.username,
        full_name=principal.full_name,
        role=principal.role,
        via=principal.via,
        csrf_token=csrf_token_for(cookie) if by_cookie and cookie else None,
    )


@router.post(
    "/tokens", status_code=status.HTTP_201_CREATED, summary="Create an API token for automation"
)
def create_token(
    body: TokenCreate,
    principal: CurrentPrincipal,
    request: Request,
    response: Response,
    auth: AuthDep,
) -> TokenCreated:
    """A named bearer token acting as the signed-in user until it expires or is revoked.
    The token is in this answer only; ClinVault keeps its hash."""
    created = auth.create_api_token(
        principal.user_id,
        body.name,
        auth.now() + timedelta(days=body.expires_in_days),
        actor=principal.actor(),
        request_id=request_id(request),
        client_address=client_address(request),
    )
    response.headers["Cache-Control"] = _NO_STORE
    return TokenCreated(**TokenOut.of(created.record).model_dump(), token=created.token)


@router.get("/tokens", summary="Your API tokens")
def list_tokens(principal: CurrentPrincipal, auth: AuthDep) -> list[TokenOut]:
    return [TokenOut.of(token) for token in auth.list_api_tokens(principal.user_id)]


@router.delete("/tokens/{token_id}", summary="Revoke one of your API tokens")
def revoke_token(
    token_id: uuid.UUID, principal: CurrentPrincipal, request: Request, auth: AuthDep
) -> TokenOut:
    record = auth.revoke_api_token(
        token_id, principal, request_id=request_id(request), client_address=client_address(request)
    )
    return TokenOut.of(record)
