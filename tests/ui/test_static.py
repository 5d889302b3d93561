"""The UI's assets at ``/``: files of the build, the SPA fallback, and the API left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clinvault.api import static
from clinvault.api.app import create_app
from clinvault.config import Settings


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>ClinVault UI</title>")
    (root / "assets" / "index-abc123.js").write_text("console.log('ui')")
    (root / "favicon.svg").write_text("<svg/>")
    (tmp_path / "secret.txt").write_text("outside the build")
    return root


def _client(tmp_path: Path, ui_dir: Path) -> TestClient:
    app = create_app(settings=Settings(data_dir=tmp_path / "home"))
    static.install(app, ui_dir)  # a second install wraps the first: the explicit dir wins
    return TestClient(app)


def test_root_and_client_routes_answer_index_html(tmp_path: Path, dist: Path) -> None:
    client = _client(tmp_path, dist)
    for path in ("/", "/backups", "/backups/0b6f3c8e-3a1d-4a57-8f5e-2f4f7a1b9c10", "/audit"):
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert "ClinVault UI" in answer.text
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["cache-control"] == "no-cache"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def test_hashed_assets_are_served_with_a_long_cache(tmp_path: Path, dist: Path) -> None:
    client = _client(tmp_path, dist)
    answer = client.get("/assets/index-abc123.js")
    assert answer.status_code == 200
    assert answer.text == "console.log('ui')"
    assert "immutable" in answer.headers["cache-control"]
    assert client.get("/favicon.svg").headers["content-type"].startswith("image/svg")


def test_missing_asset_is_404_not_html(tmp_path: Path, dist: Path) -> None:
    answer = _client(tmp_path, dist).get("/assets/gone-000.js")
    assert answer.status_code == 404
    assert "html" not in answer.headers["content-type"]


def test_api_paths_are_never_shadowed(tmp_path: Path, dist: Path) -> None:
    client = _client(tmp_path, dist)
    for path in ("/api/v1/nope", "/api/openapi-nope.json", "/metrics/x", "/healthz/x"):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"].startswith("application/problem+json"), path
    assert client.get("/api/openapi.json").json()["info"]["title"] == "ClinVault"
    # A real API route keeps its own answer (401 without a session, not the UI).
    assert client.get("/api/v1/auth/me").status_code == 401


def test_paths_cannot_escape_the_build(tmp_path: Path, dist: Path) -> None:
    client = _client(tmp_path, dist)
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/assets/../../secret.txt"):
        answer = client.get(path)
        assert "outside the build" not in answer.text, path


def test_unsafe_methods_on_ui_paths_are_refused(tmp_path: Path, dist: Path) -> None:
    assert _client(tmp_path, dist).post("/backups").status_code == 405


def test_without_a_build_the_root_says_how_to_build(tmp_path: Path) -> None:
    answer = _client(tmp_path, tmp_path / "no-dist").get("/")
    assert answer.status_code == 200
    assert "make ui" in answer.text
