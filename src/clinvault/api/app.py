"""The application factory: one FastAPI app serving the API (and the UI's assets)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from clinvault import __version__
from clinvault.api import problems
from clinvault.api.routes import audit, auth, health, signatures, users
from clinvault.config import Settings, get_settings
from clinvault.services.context import ServiceContext

API_PREFIX = "/api/v1"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

DESCRIPTION = """
Backup and restore for a regulated clinical platform (PostgreSQL and study files).

Authenticate with `POST /api/v1/auth/login`; send the returned `access_token` as
`Authorization: Bearer <token>`, or use the session cookie it sets (then unsafe methods need
the `X-CSRF-Token` header). Long work answers `202` with a job id; follow it at
`GET /api/v1/jobs/{id}` or stream it from `GET /api/v1/jobs/{id}/events`.
Errors are `application/problem+json`.
"""


def create_app(context: ServiceContext | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the app around ``context`` (or one made from ``settings``)."""
    ctx = context or ServiceContext(settings or get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.catalog.upgrade()  # migrated before the first request
        for hook in app.state.startup_hooks:
            hook()
        try:
            yield
        finally:
            for hook in reversed(app.state.shutdown_hooks):
                hook()

    app = FastAPI(
        title="ClinVault",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.context = ctx
    app.state.startup_hooks = []
    app.state.shutdown_hooks = []
    problems.install(app)

    @app.middleware("http")
    async def request_ids(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        given = request.headers.get("x-request-id", "")
        request.state.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        response = await call_next(request)
        response.headers["X-Request-ID"] = request.state.request_id
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    app.include_router(health.router)
    app.include_router(auth.router, prefix=API_PREFIX)
    app.include_router(users.router, prefix=API_PREFIX)
    app.include_router(audit.router, prefix=API_PREFIX)
    app.include_router(signatures.router, prefix=API_PREFIX)
    return app
