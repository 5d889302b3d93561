"""Dependencies shared by the routes, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from clinvault.services.context import ServiceContext


async def get_context(request: Request) -> ServiceContext:
    # async: a dependency that does no I/O must not cost a hop through the thread pool
    context: ServiceContext = request.app.state.context
    return context


ContextDep = Annotated[ServiceContext, Depends(get_context)]


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def request_id(request: Request) -> str | None:
    value: str | None = getattr(request.state, "request_id", None)
    return value
