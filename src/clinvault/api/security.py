"""Who may call what: the authentication and role dependencies every route uses.

Deny by default: every ``/api/v1`` route except :data:`PUBLIC_ROUTES` declares one of
:data:`CurrentPrincipal` (any signed-in user), :data:`ReaderDep` (``SYSTEM_ADMIN`` or
``AUDITOR``) or :data:`AdminDep` (``SYSTEM_ADMIN``); :func:`allowed_roles` reads which from the
route itself, and a test walks the app's routes to hold every route to it.

Credentials, in this order:

* ``Authorization: Bearer <token>``: a login's ``access_token`` or a named API token. No CSRF
  token is needed: browsers never attach this header on their own.
* the ``clinvault_session`` cookie (HttpOnly, SameSite=Strict): unsafe methods must also send
  ``X-CSRF-Token`` equal to the session's CSRF token, compared in constant time.

Every 401 and 403 these dependencies answer is audited as ``access.denied``.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import Depends, FastAPI, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.config import JsonDict
from starlette.concurrency import run_in_threadpool

from clinvault.api.deps import ContextDep, client_address, request_id
from clinvault.catalog.models import AuditOutcome, Signature
from clinvault.config import Settings
from clinvault.errors import AuthError, PermissionDeniedError
from clinvault.services.actor import Actor
from clinvault.services.auth import AuthService
from clinvault.services.context import ServiceContext
from clinvault.services.identity import Principal, Role, csrf_token_for
from clinvault.services.signatures import MEANINGS, SignatureService

__all__ = [
    "ADMIN_ROLES",
    "CSRF_HEADER",
    "PUBLIC_ROUTES",
    "READER_ROLES",
    "SESSION_COOKIE",
    "SIGNATURE_EXAMPLE",
    "AdminDep",
    "AuthDep",
    "CurrentPrincipal",
    "Endpoint",
    "Principal",
    "ReaderDep",
    "SignatureIn",
    "SignaturesDep",
    "allowed_roles",
    "audit_denial",
    "clear_session_cookie",
    "current_principal",
    "endpoints",
    "require_admin",
    "require_reader",
    "set_session_cookie",
    "sign_operation",
    "use_presigned",
]

SESSION_COOKIE: Final = "clinvault_session"
CSRF_HEADER: Final = "X-CSRF-Token"
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ADMIN_ROLES: Final = frozenset({Role.SYSTEM_ADMIN})
READER_ROLES: Final = frozenset({Role.SYSTEM_ADMIN, Role.AUDITOR})
ANY_ROLE: Final = frozenset(Role)
# (method, path) pairs served without a credential.
PUBLIC_ROUTES: Final = frozenset({("POST", "/api/v1/auth/login")})

_ANONYMOUS: Final = Actor(None, "anonymous")

_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="opaque",
    description="A login's `access_token` (cvs_...) or an API token (cvt_...).",
)
_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    description="The UI's session cookie; unsafe methods also need the `X-CSRF-Token` header.",
)


def current_principal(
    request: Request,
    ctx: ContextDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    """The signed-in caller, or 401 (403 for a cookie request without its CSRF token)."""
    auth = AuthService(ctx)
    principal: Principal | None = None
    try:
        if bearer is not None:
            principal = auth.resolve_bearer(bearer.credentials)
        elif cookie:
            principal = auth.resolve_session(cookie)
            if request.method in UNSAFE_METHODS and not _csrf_ok(request, cookie):
                raise PermissionDeniedError(
                    f"a request authenticated by the session cookie needs the {CSRF_HEADER} "
                    "header given at login"
                )
        else:
            raise AuthError("authentication required: sign in, or send a bearer token")
    except AuthError as exc:
        audit_denial(ctx, request, principal, exc)
        raise
    request.state.principal = principal
    return principal


def _csrf_ok(request: Request, session_token: str) -> bool:
    given = request.headers.get(CSRF_HEADER, "")
    return hmac.compare_digest(given.encode(), csrf_token_for(session_token).encode())


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def _check_role(
    principal: Principal, roles: frozenset[Role], request: Request, ctx: ServiceContext
) -> Principal:
    """async, so that the common case (allowed) costs no hop through the thread pool; a
    denial is audited there, since that writes to the catalog."""
    if principal.role not in roles:
        needed = " or ".join(sorted(roles))
        denial = PermissionDeniedError(f"this action needs the {needed} role")
        await run_in_threadpool(audit_denial, ctx, request, principal, denial)
        raise denial
    return principal


async def require_admin(
    principal: CurrentPrincipal, request: Request, ctx: ContextDep
) -> Principal:
    """The caller, who must be a SYSTEM_ADMIN (else 403)."""
    return await _check_role(principal, ADMIN_ROLES, request, ctx)


async def require_reader(
    principal: CurrentPrincipal, request: Request, ctx: ContextDep
) -> Principal:
    """The caller, who may read the audit trail and the backups (else 403)."""
    return await _check_role(principal, READER_ROLES, request, ctx)


AdminDep = Annotated[Principal, Depends(require_admin)]
ReaderDep = Annotated[Principal, Depends(require_reader)]

_GUARDS: Final[dict[Callable[..., Any], frozenset[Role]]] = {
    current_principal: ANY_ROLE,
    require_reader: READER_ROLES,
    require_admin: ADMIN_ROLES,
}


def audit_denial(
    ctx: ServiceContext, request: Request, principal: Principal | None, exc: AuthError
) -> None:
    """Record a refused request: who, which endpoint, why (never a credential)."""
    actor = principal.actor() if principal is not None else _ANONYMOUS
    ctx.audit.record(
        "access.denied",
        actor_id=actor.id,
        actor_name=actor.name,
        outcome=AuditOutcome.DENIED,
        target_type="endpoint",
        target_id=f"{request.method} {request.url.path}"[:255],
        details={
            "method": request.method,
            "path": request.url.path,
            "role": None if principal is None else principal.role.value,
            "status": exc.http_status,
            "problem": exc.message,
        },
        request_id=request_id(request),
        client_address=client_address(request),
    )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One method of one API route, and the roles it admits (None: no guard at all)."""

    method: str
    path: str
    roles: frozenset[Role] | None

    @property
    def public(self) -> bool:
        return (self.method, self.path) in PUBLIC_ROUTES


def endpoints(app: FastAPI) -> list[Endpoint]:
    """Every method of every API route of ``app``, with the roles its guards admit."""
    found: list[Endpoint] = []
    for context in iter_route_contexts(app.routes):
        if not isinstance(context.original_route, APIRoute):
            continue
        dependant: Dependant | None = getattr(context, "dependant", None)
        roles = None if dependant is None else allowed_roles(dependant)
        for method in sorted(context.methods or ()):
            found.append(Endpoint(method, context.path_format or "", roles))
    return found


def allowed_roles(dependant: Dependant) -> frozenset[Role] | None:
    """The roles a route admits (all its guards together), or None when it has no guard."""
    found = [_GUARDS[call] for call in _calls(dependant) if call in _GUARDS]
    if not found:
        return None
    return frozenset.intersection(*found)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


# --- the session cookie ------------------------------------------------------------------------


def set_session_cookie(response: Response, token: str, settings: Settings) -> None:
    """A browser-session cookie (no Max-Age): gone when the browser closes, and ended
    earlier by the server's idle and absolute timeouts."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=settings.cookie_secure, httponly=True, samesite="strict"
    )


# --- services the routes use -------------------------------------------------------------------


async def _auth_service(ctx: ContextDep) -> AuthService:
    return AuthService(ctx)


async def _signature_service(ctx: ContextDep) -> SignatureService:
    return SignatureService(ctx)


AuthDep = Annotated[AuthService, Depends(_auth_service)]
SignaturesDep = Annotated[SignatureService, Depends(_signature_service)]


SIGNATURE_EXAMPLE: Final[JsonDict] = {
    "username": "jdoe",
    "password": "********",
    "meaning": "Approved restore",
    "reason": "Restore requested in change ticket CHG-1042",
}


class SignatureIn(BaseModel):
    """An electronic signature given with a request: the signed-in user's own username and
    password re-entered, a meaning from the fixed list, and a reason."""

    username: str = Field(
        min_length=1, max_length=64, description="The signer: must be the signed-in user."
    )
    password: SecretStr = Field(
        min_length=1, max_length=1024, description="The signer's password, re-entered."
    )
    meaning: str = Field(
        min_length=1,
        max_length=64,
        description="What the signature means; one of: " + ", ".join(MEANINGS) + ".",
        examples=["Approved restore"],
    )
    reason: str = Field(
        min_length=1,
        max_length=2000,
        description="Why; kept with the signature and in the audit trail.",
        examples=["Restore requested in change ticket CHG-1042"],
    )

    model_config = ConfigDict(json_schema_extra={"examples": [SIGNATURE_EXAMPLE]})


def sign_operation(
    signatures: SignatureService,
    principal: Principal,
    given: SignatureIn,
    operation: Mapping[str, Any],
    request: Request,
    *,
    required_meaning: str,
    target_type: str | None = None,
    target_id: str | None = None,
) -> Signature:
    """Sign ``operation`` with the signature given in a request (wrong password: 403)."""
    return signatures.sign(
        principal,
        given.username,
        given.password.get_secret_value(),
        given.meaning,
        given.reason,
        operation,
        required_meaning=required_meaning,
        target_type=target_type,
        target_id=target_id,
        client_address=client_address(request),
        request_id=request_id(request),
    )


def use_presigned(
    signatures: SignatureService,
    principal: Principal,
    signature_id: uuid.UUID,
    operation: Mapping[str, Any],
    request: Request,
    *,
    required_meaning: str,
    target_type: str | None = None,
    target_id: str | None = None,
) -> Signature:
    """Apply a signature made with ``POST /signatures`` to ``operation`` (else 403)."""
    return signatures.consume(
        signature_id,
        principal,
        operation,
        required_meaning=required_meaning,
        target_type=target_type,
        target_id=target_id,
        client_address=client_address(request),
        request_id=request_id(request),
    )
