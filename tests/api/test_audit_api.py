"""The audit trail over the API: search, paging, chain check, CSV and JSON exports."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from clinvault.catalog.models import AuditEvent, AuditOutcome
from clinvault.services.audit import check_exported_chain

from .conftest import Site

AUDIT = "/api/v1/audit"


def record(site: Site, count: int, action: str = "backup.create", **fields: object) -> None:
    for number in range(count):
        site.ctx.audit.record(
            action,
            actor_id=str(fields.get("actor_id", "u-1")),
            actor_name=str(fields.get("actor_name", "Una User")),
            outcome=AuditOutcome(str(fields.get("outcome", "success"))),
            target_type="backup",
            target_id=f"b-{number}",
            reason="nightly",
            details={"size": number},
        )


def test_search_filters_by_action_actor_target_and_outcome(
    site: Site, auditor_client: httpx.Client
) -> None:
    record(site, 3)
    record(site, 2, "backup.delete", actor_id="u-2", outcome="failure")

    def items(**params: str) -> list[dict[str, Any]]:
        answer = auditor_client.get(AUDIT, params=params)
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()["items"]
        return found

    assert len(items(action="backup.create")) == 3
    assert len(items(action="backup.*")) == 5
    assert {e["action"] for e in items(actor="u-2")} == {"backup.delete"}
    assert [e["target_id"] for e in items(target_type="backup", target_id="b-1")] == ["b-1", "b-1"]
    assert len(items(outcome="failure")) == 2
    newest = items(action="backup.*")
    assert [e["seq"] for e in newest] == sorted((e["seq"] for e in newest), reverse=True)
    event = newest[0]
    assert str(event["occurred_at"]).endswith("Z")
    assert event["actor_name"] == "Una User" and event["reason"] == "nightly"
    assert event["details"] == {"size": 1} and len(str(event["hash"])) == 64


def test_search_by_time_range(site: Site, auditor_client: httpx.Client) -> None:
    record(site, 2)
    events = site.events("backup.create")
    cut = events[1].occurred_at
    after = auditor_client.get(AUDIT, params={"since": cut.isoformat(), "action": "backup.*"})
    before = auditor_client.get(AUDIT, params={"until": cut.isoformat(), "action": "backup.*"})
    assert [e["seq"] for e in after.json()["items"]] == [events[1].seq]
    assert [e["seq"] for e in before.json()["items"]] == [events[0].seq]
    naive = cut.astimezone(UTC).replace(tzinfo=None).isoformat()  # no zone: taken as UTC
    assert auditor_client.get(AUDIT, params={"since": naive}).json()["items"][-1]["seq"] == (
        events[1].seq
    )
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert auditor_client.get(AUDIT, params={"since": future}).json()["total"] == 0


def test_paging_gives_a_total_and_stops_at_1000(site: Site, admin_client: httpx.Client) -> None:
    record(site, 7)
    pages = [
        admin_client.get(AUDIT, params={"action": "backup.create", "offset": offset, "limit": 3})
        for offset in (0, 3, 6)
    ]
    bodies = [page.json() for page in pages]
    assert [body["total"] for body in bodies] == [7, 7, 7]
    seqs = [event["seq"] for body in bodies for event in body["items"]]
    assert len(seqs) == len(set(seqs)) == 7
    assert admin_client.get(AUDIT, params={"limit": 1001}).status_code == 422
    assert admin_client.get(AUDIT, params={"offset": -1}).status_code == 422


def test_verify_reports_an_intact_chain_and_is_audited(
    site: Site, auditor_client: httpx.Client
) -> None:
    record(site, 3)
    answer = auditor_client.get(f"{AUDIT}/verify")
    assert answer.status_code == 200
    body = answer.json()
    assert body["ok"] is True and body["first_bad_seq"] is None
    assert body["events_checked"] == len(site.events()) - 1  # the verify event comes after
    [event] = site.events("audit.verify")
    assert event.actor_name == "Otto Auditor" and event.details["ok"] is True


def test_verify_finds_a_tampered_event(site: Site, auditor_client: httpx.Client) -> None:
    record(site, 3)
    target = site.events("backup.create")[1]
    database = sa.make_url(site.ctx.settings.resolved_catalog_url).database
    assert database is not None
    conn = sqlite3.connect(database, isolation_level=None)
    try:  # as an attacker with file access would: triggers out of the way
        triggers = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type='trigger' AND tbl_name='audit_events'"
        ).fetchall()
        conn.execute("BEGIN IMMEDIATE")
        for name, _ in triggers:
            conn.execute(f'DROP TRIGGER "{name}"')
        conn.execute("UPDATE audit_events SET reason = 'edited' WHERE seq = ?", (target.seq,))
        for _, create in triggers:
            conn.execute(create)
        conn.execute("COMMIT")
    finally:
        conn.close()
    body = auditor_client.get(f"{AUDIT}/verify").json()
    assert body["ok"] is False and body["first_bad_seq"] == target.seq
    assert site.events("audit.verify")[-1].outcome is AuditOutcome.FAILURE


def test_json_export_is_complete_verifiable_and_audited(
    site: Site, auditor_client: httpx.Client
) -> None:
    record(site, 3)
    answer = auditor_client.get(f"{AUDIT}/export", params={"format": "json"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    disposition = answer.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="clinvault-audit-')
    assert disposition.endswith('Z.json"')
    document = json.loads(answer.text)
    assert document["time_zone"] == "UTC" and document["exported_at"].endswith("Z")
    assert document["exported_by"] == {"id": str(site.auditor.id), "name": "Otto Auditor"}
    events = document["events"]
    assert document["count"] == len(events) == len(site.events()) == document["last_seq"]
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert all(event["occurred_at"].endswith("Z") for event in events)
    assert events[-1]["action"] == "audit.export"  # the export records itself first
    assert events[-1]["actor_id"] == str(site.auditor.id)
    assert events[-1]["details"] == {"format": "json"}
    assert check_exported_chain(events) is None


def test_csv_export_has_one_row_per_event_with_utc_times(
    site: Site, admin_client: httpx.Client
) -> None:
    record(site, 2)
    answer = admin_client.get(f"{AUDIT}/export", params={"format": "csv"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["content-disposition"].endswith('.csv"')
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    stored = site.events()
    assert len(rows) == len(stored)
    assert "occurred_at_utc" in rows[0]
    assert all(row["occurred_at_utc"].endswith("Z") for row in rows)
    assert rows[-1]["action"] == "audit.export" and rows[-1]["actor_name"] == "Ada Admin"
    second = site.events("backup.create")[1]
    [created] = [row for row in rows if row["seq"] == str(second.seq)]
    assert json.loads(created["details"]) == {"size": 1}
    assert (created["hash"], created["id"]) == (second.hash, str(second.id))
    assert [event.details for event in site.events("audit.export")] == [{"format": "csv"}]


def test_export_format_must_be_csv_or_json(admin_client: httpx.Client) -> None:
    assert admin_client.get(f"{AUDIT}/export", params={"format": "xml"}).status_code == 422


@pytest.mark.parametrize("path", [AUDIT, f"{AUDIT}/verify", f"{AUDIT}/export"])
def test_audit_routes_need_a_sign_in(site: Site, anon_client: httpx.Client, path: str) -> None:
    assert anon_client.get(path).status_code == 401
    with site.ctx.catalog.session() as session:
        actions = session.scalars(sa.select(AuditEvent.action)).all()
    assert "audit.export" not in actions and "access.denied" in actions
