"""Prometheus metrics at ``GET /metrics``.

Public by default, as Prometheus scrapes usually are (the figures hold no clinical data, no
names of people and no secrets). With ``metrics_public = false`` the scrape must send a
bearer token (an API token of a SYSTEM_ADMIN or AUDITOR user, ``bearer_token_file`` in the
scrape config); refusals are audited like any other.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from clinvault.api.deps import ContextDep
from clinvault.api.security import READER_ROLES, audit_denial
from clinvault.errors import AuthError, PermissionDeniedError
from clinvault.services.auth import AuthService
from clinvault.services.identity import Principal
from clinvault.services.metrics import CONTENT_TYPE, render_metrics

router = APIRouter(tags=["health"])


def _check_access(request: Request, ctx: ContextDep) -> None:
    if ctx.settings.metrics_public:
        return
    principal: Principal | None = None
    try:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("metrics need a bearer token (metrics_public is false)")
        principal = AuthService(ctx).resolve_bearer(token.strip())
        if principal.role not in READER_ROLES:
            raise PermissionDeniedError("metrics need the SYSTEM_ADMIN or AUDITOR role")
    except AuthError as exc:
        audit_denial(ctx, request, principal, exc)
        raise


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Text exposition 0.0.4"}},
)
async def metrics(request: Request, ctx: ContextDep) -> Response:
    """Backups per type (last success, duration, size, failures), jobs, schedules, drill and
    verification results, and storage usage."""
    await run_in_threadpool(_check_access, request, ctx)
    body = await run_in_threadpool(render_metrics, ctx)
    return Response(content=body, media_type=CONTENT_TYPE)
