"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from clinvault import __version__
from clinvault.api.deps import ContextDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Readiness: the catalog answers")
def healthz(ctx: ContextDep) -> dict[str, Any]:
    """Answers 200 once the service is ready to serve (catalog migrated and reachable)."""
    return {"status": "ok", "version": __version__, "catalog": ctx.catalog.current_revision()}
