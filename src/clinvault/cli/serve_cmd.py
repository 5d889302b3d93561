"""``clinvault serve``: the API and the UI over HTTP."""

from __future__ import annotations

from typing import Annotated

import typer

from clinvault.cli.common import context


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8400,
) -> None:
    """Serve the REST API and the admin UI until interrupted."""
    import uvicorn

    from clinvault.api.app import create_app

    app = create_app(context())
    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False)
