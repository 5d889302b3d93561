"""The application factory: one FastAPI app serving the API (and the UI's assets)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from clinvault import __version__
from clinvault.api import problems, static
from clinvault.api.middleware import RequestIdMiddleware
from clinvault.api.routes import audit, auth, backups, health, jobs, restore, signatures, users
from clinvault.api.routes import metrics as metrics_routes
from clinvault.api.routes import schedules as schedule_routes
from clinvault.config import Settings, get_settings
from clinvault.services.context import ServiceContext
from clinvault.services.jobs import JobRunner

API_PREFIX = "/api/v1"

DESCRIPTION = """
Backup and restore for a regulated clinical platform (PostgreSQL and study files).

Authenticate with `POST /api/v1/auth/login`; send the returned `access_token` as
`Authorization: Bearer <token>`, or use the session cookie it sets (then unsafe methods need
the `X-CSRF-Token` header). Long work answers `202` with a job id; follow it at
`GET /api/v1/jobs/{id}` or stream it from `GET /api/v1/jobs/{id}/events`.
Errors are `application/problem+json`.
"""


def create_app(
    context: ServiceContext | None = None,
    settings: Settings | None = None,
    *,
    job_workers: int = 2,
) -> FastAPI:
    """Build the app around ``context`` (or one made from ``settings``).

    ``job_workers`` threads run queued jobs while the app is up (0: this instance only
    queues them, for another to run).
    """
    ctx = context or ServiceContext(settings or get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.catalog.upgrade()  # migrated before the first request
        for hook in app.state.startup_hooks:
            hook()
        # What start-up built (modules, the ORM's mappings, the routes) lives as long as the
        # process: out of the collector's way, full collections no longer walk all of it
        # and stall whichever requests are running.
        gc.collect()
        gc.freeze()
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
    if job_workers > 0:
        runner = JobRunner(ctx, workers=job_workers)
        app.state.job_runner = runner
        app.state.startup_hooks.append(runner.start)
        app.state.shutdown_hooks.append(runner.stop)

    app.add_middleware(RequestIdMiddleware)

    app.include_router(health.router)
    app.include_router(metrics_routes.router)
    app.include_router(auth.router, prefix=API_PREFIX)
    app.include_router(users.router, prefix=API_PREFIX)
    app.include_router(audit.router, prefix=API_PREFIX)
    app.include_router(signatures.router, prefix=API_PREFIX)
    # Before backups: /backup/schedules must not be taken for /backup/{backup_id}.
    app.include_router(schedule_routes.router, prefix=API_PREFIX)
    app.include_router(backups.router, prefix=API_PREFIX)
    app.include_router(restore.router, prefix=API_PREFIX)
    app.include_router(jobs.router, prefix=API_PREFIX)
    schedule_routes.install_scheduler(app, ctx)
    static.install(app)  # the admin UI at /, for paths no route matched
    return app


def create_web_app() -> FastAPI:
    """The app of one web server process of ``clinvault serve --workers N``: settings from
    the environment, and no jobs run here (the worker process runs them)."""
    return create_app(job_workers=0)
