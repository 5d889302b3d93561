"""The admin UI's built assets, served at ``/`` by the same app as the API.

The UI is a single-page application: any path that is not a file of the build answers
``index.html`` and the browser-side router takes over. It is installed as the router's
*default* handler, which Starlette calls only when no route matched, so it can never shadow
an API route, whatever order the routers are added in. Paths under ``/api/``, ``/healthz``
and ``/metrics`` keep the API's own 404 (a problem document, not HTML).

Where the build is: the ``ui_dir`` setting (``CLINVAULT_UI_DIR``), else ``frontend/dist``
of the source checkout. Without a build, ``/`` answers a short page saying
how to make one.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Final

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["default_ui_dir", "install"]

API_PATHS: Final = ("/api", "/healthz", "/metrics")
# Vite names every file under assets/ by its content hash: safe to cache for a year.
IMMUTABLE: Final = "public, max-age=31536000, immutable"
REVALIDATE: Final = "no-cache"
# The UI loads nothing from elsewhere; recharts sets inline style attributes.
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
MISSING_BUILD: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ClinVault</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto">
<h1>ClinVault</h1>
<p>The API is running (<a href="/api/docs">API documentation</a>), but the admin UI has not
been built.</p>
<p>Build it with <code>make ui</code> (or <code>cd frontend &amp;&amp; npm ci &amp;&amp;
npm run build</code>) and reload this page.</p>
</body></html>
"""

mimetypes.add_type("application/javascript", ".js")
mimetypes.add_type("text/css", ".css")
mimetypes.add_type("image/svg+xml", ".svg")


def default_ui_dir() -> Path:
    """``frontend/dist`` of the source checkout this module belongs to."""
    return Path(__file__).resolve().parents[3] / "frontend" / "dist"


def _configured_ui_dir(app: FastAPI) -> Path:
    configured: Path | None = app.state.context.settings.ui_dir
    return configured if configured is not None else default_ui_dir()


def _is_api_path(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in API_PATHS)


class SinglePageApp:
    """Answers what no route matched: build files, else ``index.html``; API paths 404."""

    def __init__(self, root: Path, fallback: ASGIApp) -> None:
        self.root = root.resolve()
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "/")
        if scope["type"] != "http" or _is_api_path(path):
            await self.fallback(scope, receive, send)
            return
        response = self.respond(Request(scope), path)
        await response(scope, receive, send)

    def respond(self, request: Request, path: str) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(status_code=405, headers={"Allow": "GET, HEAD"})
        index = self.root / "index.html"
        if not index.is_file():
            return HTMLResponse(MISSING_BUILD, headers=_html_headers())
        asset = self._file(path)
        if asset is not None:
            cache = IMMUTABLE if asset.parent.name == "assets" else REVALIDATE
            return FileResponse(asset, headers={"Cache-Control": cache})
        if path.startswith("/assets/"):
            # A missing hashed asset is a stale page, not a route: no HTML in a script tag.
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(index, media_type="text/html", headers=_html_headers())

    def _file(self, path: str) -> Path | None:
        relative = path.lstrip("/")
        if not relative or relative == "index.html":
            return None
        candidate = (self.root / relative).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate


def _html_headers() -> dict[str, str]:
    return {
        "Cache-Control": REVALIDATE,
        "Content-Security-Policy": CSP,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
    }


def install(app: FastAPI, ui_dir: Path | None = None) -> None:
    """Serve the UI from ``ui_dir`` (default: see the module docstring) for unmatched paths."""
    root = ui_dir if ui_dir is not None else _configured_ui_dir(app)
    app.router.default = SinglePageApp(root, app.router.default)
