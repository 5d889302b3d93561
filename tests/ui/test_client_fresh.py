"""The UI's typed client is generated from ``frontend/openapi.json``: that file must be the
schema the API serves now, or the client is stale (regenerate with ``make ui-api``)."""

from __future__ import annotations

import difflib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "frontend" / "openapi.json"


def _exporter() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "export_openapi", ROOT / "scripts" / "export_openapi.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_openapi_schema_matches_the_app() -> None:
    exporter = _exporter()
    fresh = exporter.render(exporter.build_schema())
    committed = COMMITTED.read_text(encoding="utf-8")
    if fresh != committed:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    fresh.splitlines(keepends=True),
                    "frontend/openapi.json (committed)",
                    "create_app().openapi() (now)",
                )
            )[:60]
        )
        raise AssertionError(
            "frontend/openapi.json is stale: run `make ui-api` (regenerates the schema and "
            f"the typed client in frontend/src/api/generated/) and commit both.\n{diff}"
        )


def test_export_is_deterministic() -> None:
    exporter = _exporter()
    assert exporter.render(exporter.build_schema()) == exporter.render(exporter.build_schema())


def test_schema_is_served_under_api_prefix() -> None:
    schema = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert "/api/v1/auth/login" in schema["paths"]
