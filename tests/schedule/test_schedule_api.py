"""The schedule, retention, drill, notification and metrics endpoints over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from clinvault.services.cron import next_fire
from tests.api.conftest import ADMIN_PASSWORD, Site, make_site

BASE = "/api/v1/backup/schedules"
NIGHTLY = {
    "name": "nightly-full",
    "backup_type": "full",
    "cron_expression": "0 2 * * *",
    "timezone": "Europe/Berlin",
    "retention_days": 30,
    "keep_rules": {"daily": 7, "weekly": 4},
}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield from make_site(tmp_path / "home", drill_enabled=False, verify_cron=None)


@pytest.fixture
def admin(site: Site) -> Iterator[httpx.Client]:
    with site.client(site.api_token(site.admin)) as client:
        yield client


@pytest.fixture
def auditor(site: Site) -> Iterator[httpx.Client]:
    with site.client(site.api_token(site.auditor)) as client:
        yield client


def test_schedule_lifecycle_is_served_and_audited(
    site: Site, admin: httpx.Client, auditor: httpx.Client
) -> None:
    created = admin.post(BASE, json=NIGHTLY)
    assert created.status_code == 201, created.text
    body = created.json()
    expected = next_fire("0 2 * * *", "Europe/Berlin", datetime.now(UTC))
    assert datetime.fromisoformat(body["next_run_at"]) == expected
    assert body["next_run_at"].endswith("Z")
    assert body["keep_rules"] == {"daily": 7, "weekly": 4} and body["is_active"] is True
    schedule_id = body["id"]

    listed = auditor.get(BASE)  # before /backup/{backup_id}: not taken for a backup id
    assert listed.status_code == 200 and [s["id"] for s in listed.json()] == [schedule_id]
    assert auditor.post(BASE, json={**NIGHTLY, "name": "x"}).status_code == 403
    assert admin.post(BASE, json=NIGHTLY).status_code == 409
    bad = admin.post(BASE, json={**NIGHTLY, "name": "bad", "cron_expression": "0 2 * *"})
    assert bad.status_code == 422 and "5 fields" in bad.json()["detail"]
    bad_zone = admin.post(BASE, json={**NIGHTLY, "name": "bad", "timezone": "Mars/Olympus"})
    assert bad_zone.status_code == 422 and "time zone" in bad_zone.json()["detail"]

    changed = admin.put(
        f"{BASE}/{schedule_id}", json={"cron_expression": "30 1 * * *", "retention_days": None}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["cron_expression"] == "30 1 * * *"
    assert changed.json()["retention_days"] is None
    assert changed.json()["keep_rules"] == {"daily": 7, "weekly": 4}

    preview = auditor.get(f"{BASE}/{schedule_id}/preview", params={"count": 3}).json()
    assert len(preview["runs"]) == 3
    assert all(r.endswith("Z") for r in preview["runs"])
    assert all("T01:30:00+0" in r for r in preview["runs_local"])
    tried = auditor.get(f"{BASE}/preview", params={"cron": "@weekly", "timezone": "UTC"})
    assert tried.status_code == 200 and len(tried.json()["runs"]) == 5

    paused = admin.post(f"{BASE}/{schedule_id}/toggle")
    assert paused.json()["is_active"] is False and paused.json()["next_run_at"] is None
    resumed = admin.post(f"{BASE}/{schedule_id}/toggle", params={"active": "true"})
    assert resumed.json()["is_active"] is True and resumed.json()["next_run_at"]

    assert admin.delete(f"{BASE}/{schedule_id}").status_code == 204
    assert auditor.get(f"{BASE}/{schedule_id}").status_code == 404

    actions = [e.action for e in site.events() if e.target_type == "schedule"]
    assert actions == [
        "schedule.create",
        "schedule.update",
        "schedule.update",
        "schedule.update",
        "schedule.delete",
    ]
    update = next(e for e in site.events("schedule.update"))
    assert update.details["old"]["cron_expression"] == "0 2 * * *"
    assert update.details["new"]["cron_expression"] == "30 1 * * *"
    assert update.actor_name == "Ada Admin" and update.client_address == "127.0.0.1"


def test_retention_runs_dry_by_default_and_a_real_run_must_be_signed(
    site: Site, admin: httpx.Client
) -> None:
    dry = admin.post("/api/v1/retention/run", json={})
    assert dry.status_code == 200 and dry.json()["dry_run"] is True

    unsigned = admin.post("/api/v1/retention/run", json={"dry_run": False})
    assert unsigned.status_code == 403

    signature = {
        "username": "admin",
        "password": ADMIN_PASSWORD,
        "meaning": "Approved deletion",
        "reason": "Quarterly clean-up, ticket CHG-7",
    }
    signed = admin.post("/api/v1/retention/run", json={"dry_run": False, "signature": signature})
    assert signed.status_code == 200, signed.text
    assert signed.json()["dry_run"] is False
    runs = site.events("retention.run")
    assert [(e.actor_name, e.outcome.value) for e in runs] == [
        ("Ada Admin", "denied"),  # the unsigned attempt
        ("Ada Admin", "success"),
    ]


def test_drills_are_started_and_listed(admin: httpx.Client, auditor: httpx.Client) -> None:
    assert auditor.get("/api/v1/drills").json() == []
    started = admin.post("/api/v1/drills", json={"kind": "verify"})
    assert started.status_code == 202, started.text
    check_id = started.json()["id"]
    deadline = time.monotonic() + 30
    while (current := auditor.get(f"/api/v1/drills/{check_id}").json())["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert current["status"] == "completed" and current["outcome"] == "skipped"
    assert [c["id"] for c in auditor.get("/api/v1/drills", params={"kind": "verify"}).json()] == [
        check_id
    ]
    assert auditor.post("/api/v1/drills", json={"kind": "drill"}).status_code == 403


def test_notification_test_needs_a_channel(admin: httpx.Client) -> None:
    answer = admin.post("/api/v1/notifications/test")
    assert answer.status_code == 422 and "no notification channel" in answer.json()["detail"]


def test_metrics_are_public_by_default(site: Site) -> None:
    with site.client() as anonymous:
        answer = anonymous.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "clinvault_up 1" in answer.text


def test_metrics_can_require_a_reader_token(tmp_path: Path) -> None:
    for site in make_site(tmp_path / "private", metrics_public=False):
        with site.client() as anonymous:
            assert anonymous.get("/metrics").status_code == 401
        with site.client(site.api_token(site.auditor)) as reader:
            assert reader.get("/metrics").status_code == 200
        denied = site.events("access.denied")
        assert denied and denied[-1].target_id == "GET /metrics"
