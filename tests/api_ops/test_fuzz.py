"""Property-based fuzzing of the whole API from its OpenAPI schema: no request gets a 5xx.

For every operation of the schema, Schemathesis sends the documented examples and a few
generated requests (deterministic, so CI runs repeat) to a live server over a sample
platform, with an admin API token; one completed backup exists so that some requests meet a
real row. Nothing is excluded: operations that start work only queue a job, and a restore or
a deletion cannot pass without the admin's password, which the fuzzer does not know.

The schema is read when the module is imported (``@schema.parametrize()`` makes one test per
operation at collection time, before any server runs) from an app built the same way as the
live one; ``test_the_fuzzed_schema_is_the_live_one`` holds the two equal.
(``schemathesis.pytest.from_fixture`` would load it from the live server instead, but it
does not run on pytest 9.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from clinvault.api.app import create_app
from clinvault.config import Settings
from clinvault.demo import create_platform
from clinvault.engine.pgconn import ConnInfo
from clinvault.services.auth import AuthService
from clinvault.services.context import ServiceContext
from tests.api_ops.conftest import Ops, running_ops
from tests.services.conftest import Platform

pytestmark = [pytest.mark.pg, pytest.mark.slow]

MAX_EXAMPLES = 6
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20261127,
        "request-timeout": 30,
        "max-stream-events": 5,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
    }
)


def _openapi() -> dict[str, object]:
    """The schema the service publishes (building the app touches no catalog or platform)."""
    settings = Settings(data_dir=Path("/nonexistent/clinvault-fuzz"))  # type: ignore[call-arg]
    return create_app(ServiceContext(settings), job_workers=0).openapi()


schema = schemathesis.openapi.from_dict(_openapi(), config=CONFIG)


@pytest.fixture(scope="module")
def live(pg_server: ConnInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    """One server for every operation's test: a sample platform with one backup."""
    name = f"cvfuzz_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(**pg_server.psycopg_kwargs(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    root = tmp_path_factory.mktemp("fuzz")
    conn_info = pg_server.with_database(name)
    summary = create_platform(conn_info, root / "platform", scale=0.01, files_mb=1, seed=7)
    (root / "home").mkdir()
    try:
        with running_ops(Platform(conn_info, root / "platform", summary, root / "home")) as ops:
            ops.backup(type="database", name="fuzz-target", level=1)
            yield ops
    finally:
        with psycopg.connect(**pg_server.psycopg_kwargs(), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(scope="module")
def token(live: Ops) -> str:
    """An admin API token: unlike a login session, no fuzzed request can sign it out."""
    auth = AuthService(live.ctx)
    return auth.create_api_token(auth.get_user_by_username("admin"), "fuzzing", None).token


def test_the_fuzzed_schema_is_the_live_one(live: Ops) -> None:
    assert live.admin.get("/api/openapi.json").json() == _openapi()


@schema.parametrize()
def test_no_request_gets_a_server_error(case: Case, live: Ops, token: str) -> None:
    case.call_and_validate(
        base_url=live.base_url,
        headers={"Authorization": f"Bearer {token}"},
        checks=[not_a_server_error],
    )
