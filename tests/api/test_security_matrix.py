"""Deny by default, proved over every route the app serves (other teams' routes included).

The expectations come from the dependency each route declares (``allowed_roles``), never
from a list of paths kept here: a route added without a guard fails
``test_every_api_route_declares_a_guard``; one with a guard is probed as anonymous (401),
as an AUDITOR (403 unless the guard admits readers) and as a SYSTEM_ADMIN (never 401/403),
and each denial must be in the audit trail under the request's id.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clinvault.api.app import API_PREFIX, create_app
from clinvault.api.security import PUBLIC_ROUTES, Endpoint, endpoints
from clinvault.catalog.models import AuditOutcome
from clinvault.services.context import ServiceContext
from clinvault.services.identity import Role

from .conftest import Site, api_settings, running_site

_PARAM = re.compile(r"\{[^}]+\}")
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
BACKUP_OR_RESTORE = re.compile(rf"{API_PREFIX}/(backups?|restores?|jobs|drills|retention)(/|$)")


def _api_endpoints() -> list[Endpoint]:
    # Building the app does no work (the context is lazy), so routes are known at collection.
    app = create_app(ServiceContext(api_settings(Path("/nonexistent/clinvault-matrix"))))
    return [e for e in endpoints(app) if e.path.startswith(f"{API_PREFIX}/")]


API_ENDPOINTS = _api_endpoints()
GUARDED = [e for e in API_ENDPOINTS if not e.public]
IDS = [f"{e.method} {e.path}" for e in GUARDED]


@pytest.fixture(scope="module")
def matrix_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("matrix") / "home") as site:
        yield site


@pytest.fixture(scope="module")
def tokens(matrix_site: Site) -> dict[Role, str]:
    return {
        Role.SYSTEM_ADMIN: matrix_site.api_token(matrix_site.admin),
        Role.AUDITOR: matrix_site.api_token(matrix_site.auditor),
    }


def probe(site: Site, endpoint: Endpoint, token: str | None) -> tuple[int, str]:
    """Call ``endpoint`` with placeholder path parameters (and ``{}`` as the body of unsafe
    methods); the status and the request id. Only the status line is read, so streams are
    not waited for."""
    request_id = uuid.uuid4().hex
    url = _PARAM.sub(lambda _: str(uuid.uuid4()), endpoint.path)
    body: dict[str, object] | None = {} if endpoint.method in UNSAFE else None
    with (
        site.client(token, headers={"X-Request-ID": request_id}) as client,
        client.stream(endpoint.method, url, json=body) as answer,
    ):
        return answer.status_code, request_id


def assert_denial_audited(site: Site, request_id: str, role: Role | None) -> None:
    events = [e for e in site.events("access.denied") if e.request_id == request_id]
    assert len(events) == 1, f"no access.denied event for request {request_id}"
    assert events[0].outcome is AuditOutcome.DENIED
    assert events[0].details["role"] == (None if role is None else role.value)
    assert events[0].client_address == "127.0.0.1"


def test_every_api_route_declares_a_guard() -> None:
    unguarded = {(e.method, e.path) for e in API_ENDPOINTS if e.roles is None}
    assert unguarded == set(PUBLIC_ROUTES), "routes without CurrentPrincipal/ReaderDep/AdminDep"


def test_the_matrix_covers_the_auth_surface() -> None:
    paths = {(e.method, e.path) for e in GUARDED}
    assert {("GET", "/api/v1/audit"), ("POST", "/api/v1/users")} <= paths
    assert ("POST", "/api/v1/auth/login") not in paths


@pytest.mark.parametrize("endpoint", GUARDED, ids=IDS)
def test_anonymous_is_refused_with_401(matrix_site: Site, endpoint: Endpoint) -> None:
    status, request_id = probe(matrix_site, endpoint, None)
    assert status == 401
    assert_denial_audited(matrix_site, request_id, None)


@pytest.mark.parametrize("endpoint", GUARDED, ids=IDS)
def test_auditor_is_refused_unless_the_route_admits_readers(
    matrix_site: Site, tokens: dict[Role, str], endpoint: Endpoint
) -> None:
    assert endpoint.roles is not None
    status, request_id = probe(matrix_site, endpoint, tokens[Role.AUDITOR])
    if Role.AUDITOR in endpoint.roles:
        assert status not in (401, 403)
    else:
        assert status == 403
        assert_denial_audited(matrix_site, request_id, Role.AUDITOR)


@pytest.mark.parametrize("endpoint", GUARDED, ids=IDS)
def test_admin_is_allowed_everywhere(
    matrix_site: Site, tokens: dict[Role, str], endpoint: Endpoint
) -> None:
    assert endpoint.roles is not None and Role.SYSTEM_ADMIN in endpoint.roles
    status, _ = probe(matrix_site, endpoint, tokens[Role.SYSTEM_ADMIN])
    assert status not in (401, 403)


def test_backup_and_restore_actions_are_admin_only() -> None:
    """Whatever routes the backup and restore teams add, none admits an AUDITOR to act."""
    actions = [e for e in GUARDED if e.method in UNSAFE and BACKUP_OR_RESTORE.match(e.path)]
    assert actions or not any("/backup" in e.path for e in GUARDED)
    for endpoint in GUARDED:
        acts = endpoint.method in UNSAFE
        if acts and BACKUP_OR_RESTORE.match(endpoint.path):
            assert endpoint.roles == frozenset({Role.SYSTEM_ADMIN}), (
                f"{endpoint.method} {endpoint.path}"
            )
