"""The backup endpoints over a real server and a real sample platform."""

from __future__ import annotations

import uuid

import httpx
import pytest

from clinvault.catalog.models import AuditOutcome, Backup
from clinvault.engine import bundle
from tests.api_ops.conftest import Ops, read_sse

pytestmark = pytest.mark.pg


def test_create_answers_202_with_a_job_that_completes_the_backup(ops: Ops) -> None:
    answer = ops.admin.post(
        "/api/v1/backup/create",
        json={"type": "full", "name": "api-first", "description": "from the API", "level": 5},
    )
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["status"] == "pending"
    assert answer.headers["location"] == f"/api/v1/jobs/{accepted['job_id']}"

    with ops.admin.stream("GET", accepted["links"]["events"]) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = list(read_sse(stream))
    assert events[-1][0] == "done"
    assert events[-1][2]["status"] == "completed"
    job = ops.wait_job(accepted["job_id"])
    assert job["target_type"] == "backup"
    backup_id = job["result"]["backup_id"]

    details = ops.admin.get(f"/api/v1/backup/{backup_id}").json()
    assert details["name"] == "api-first"
    assert details["status"] == "completed"
    assert details["compression_level"] == 5
    assert details["checksum"] == job["result"]["checksum"]
    assert details["objects"][0]["name"] == "manifest.json"
    assert {o["kind"] for o in details["objects"]} == {"manifest", "database", "files", "audit"}
    assert len(details["files"]) == details["files_total"] < 1000
    regular = [f for f in details["files"] if f["kind"] == "file"]
    assert len(regular) == ops.platform.summary.file_count
    assert all(len(f["sha256"]) == 64 for f in details["files"] if f["kind"] == "file")
    assert details["metadata"]["tables"] > 0
    assert "worker" not in details["metadata"]


def test_create_refuses_a_bad_request_naming_the_field(ops: Ops) -> None:
    bad = ops.admin.post("/api/v1/backup/create", json={"type": "full", "level": 99})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in bad.json()["errors"]] == ["level"]

    gzip = ops.admin.post(
        "/api/v1/backup/create", json={"type": "full", "compression": "gzip", "level": 12}
    )
    assert gzip.status_code == 422
    assert gzip.json()["errors"][0]["field"] == "level"

    ops.backup(name="taken")
    again = ops.admin.post("/api/v1/backup/create", json={"type": "database", "name": "taken"})
    assert again.status_code == 409


def test_auditor_reads_but_may_not_create(ops: Ops) -> None:
    assert ops.auditor.get("/api/v1/backup/list").status_code == 200
    assert ops.auditor.get("/api/v1/backup/stats").status_code == 200
    refused = ops.auditor.post("/api/v1/backup/create", json={"type": "full"})
    assert refused.status_code == 403
    assert ops.auditor.get("/api/v1/jobs").status_code == 403
    with httpx.Client(base_url=ops.base_url) as anonymous:
        assert anonymous.get("/api/v1/backup/list").status_code == 401


def test_list_pages_filters_sorts_and_searches(ops: Ops) -> None:
    ops.backup(type="database", name="db-alpha", level=1)
    ops.backup(type="files", name="files-beta", level=1)
    ops.backup(type="database", name="db-gamma", level=1)

    page = ops.auditor.get("/api/v1/backup/list", params={"page_size": 2}).json()
    assert page["total"] == 3 and page["pages"] == 2
    assert [b["name"] for b in page["items"]] == ["db-gamma", "files-beta"]  # newest first
    second = ops.auditor.get("/api/v1/backup/list", params={"page_size": 2, "page": 2}).json()
    assert [b["name"] for b in second["items"]] == ["db-alpha"]

    databases = ops.auditor.get("/api/v1/backup/list", params={"type": "database"}).json()
    assert {b["name"] for b in databases["items"]} == {"db-alpha", "db-gamma"}
    by_name = ops.auditor.get("/api/v1/backup/list", params={"sort": "name", "order": "asc"})
    assert [b["name"] for b in by_name.json()["items"]] == ["db-alpha", "db-gamma", "files-beta"]
    by_size = ops.auditor.get(
        "/api/v1/backup/list", params={"sort": "file_size_compressed", "order": "desc"}
    ).json()["items"]
    sizes = [b["file_size_compressed"] for b in by_size]
    assert sizes == sorted(sizes, reverse=True)
    found = ops.auditor.get("/api/v1/backup/list", params={"search": "GAM"}).json()
    assert [b["name"] for b in found["items"]] == ["db-gamma"]
    none = ops.auditor.get("/api/v1/backup/list", params={"search": "%"}).json()
    assert none["total"] == 0  # LIKE wildcards are matched literally
    failed = ops.auditor.get("/api/v1/backup/list", params={"status": "failed"}).json()
    assert failed["total"] == 0
    unknown = ops.auditor.get("/api/v1/backup/list", params={"sort": "password_hash"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "sort"


def test_verify_runs_as_a_job_and_records_the_outcome(ops: Ops) -> None:
    backup_id = ops.backup(type="database", level=1)["result"]["backup_id"]
    answer = ops.admin.post(f"/api/v1/backup/{backup_id}/verify")
    assert answer.status_code == 202
    job = ops.wait_job(answer.json()["job_id"])
    assert job["status"] == "completed"
    assert job["result"]["ok"] is True
    assert job["target_id"] == backup_id
    details = ops.admin.get(f"/api/v1/backup/{backup_id}").json()
    assert details["verify_status"] == "passed"
    missing = ops.admin.post("/api/v1/backup/00000000-0000-4000-8000-000000000000/verify")
    assert missing.status_code == 404


def test_stats_count_storage_and_savings(ops: Ops) -> None:
    first = ops.backup(type="database", level=1)["result"]
    second = ops.backup(type="files", level=1)["result"]
    stats = ops.auditor.get("/api/v1/backup/stats", params={"days": 7}).json()
    assert stats["total_backups"] == 2
    assert stats["by_status"]["completed"] == 2
    assert stats["by_type"] == {"full": 0, "database": 1, "files": 1}
    stored = first["file_size_compressed"] + second["file_size_compressed"]
    original = first["file_size_bytes"] + second["file_size_bytes"]
    assert stats["storage_used_bytes"] == stored
    assert stats["saved_by_compression_bytes"] == original - stored
    assert stats["last_backup"]["id"] == second["backup_id"]
    assert stats["next_scheduled"] is None
    assert len(stats["usage_over_time"]) == 7
    assert stats["usage_over_time"][-1]["storage_used_bytes"] == stored
    assert stats["usage_over_time"][-1]["backups"] == 2


def test_delete_without_signature_is_refused_and_audited(ops: Ops) -> None:
    backup_id = ops.backup(type="database", level=1)["result"]["backup_id"]
    bodiless = ops.admin.delete(f"/api/v1/backup/{backup_id}")
    assert bodiless.status_code == 403
    refused = ops.admin.request("DELETE", f"/api/v1/backup/{backup_id}", json={})
    assert refused.status_code == 403
    wrong = ops.admin.request(
        "DELETE",
        f"/api/v1/backup/{backup_id}",
        json={"signature": ops.signature("Approved deletion", password="not-the-password")},
    )
    assert wrong.status_code == 403
    meaning = ops.admin.request(
        "DELETE",
        f"/api/v1/backup/{backup_id}",
        json={"signature": ops.signature("Approved restore")},
    )
    assert meaning.status_code == 422
    denials = [e for e in ops.events("backup.delete") if e.outcome is AuditOutcome.DENIED]
    assert len(denials) == 4
    assert all(e.target_id == backup_id for e in denials)
    assert "not-the-password" not in str([(e.details, e.reason) for e in denials])
    assert ops.admin.get(f"/api/v1/backup/{backup_id}").json()["deleted_at"] is None


def test_signed_soft_delete_then_purge(ops: Ops) -> None:
    backup_id = ops.backup(type="database", level=1)["result"]["backup_id"]
    soft = ops.admin.request(
        "DELETE",
        f"/api/v1/backup/{backup_id}",
        json={"signature": ops.signature("Approved deletion")},
    )
    assert soft.status_code == 200, soft.text
    assert soft.json()["deleted_at"] is not None
    prefix = bundle.bundle_prefix(backup_id)
    assert list(ops.ctx.storage.list(prefix))  # soft: the bundle is kept
    assert ops.admin.get("/api/v1/backup/list").json()["total"] == 0
    listed = ops.admin.get("/api/v1/backup/list", params={"include_deleted": True}).json()
    assert [b["id"] for b in listed["items"]] == [backup_id]

    again = ops.admin.request(
        "DELETE",
        f"/api/v1/backup/{backup_id}",
        json={"signature": ops.signature("Approved deletion")},
    )
    assert again.status_code == 409

    purge = ops.admin.request(
        "DELETE",
        f"/api/v1/backup/{backup_id}",
        json={"purge": True, "signature": ops.signature("Approved deletion")},
    )
    assert purge.status_code == 200, purge.text
    assert purge.json()["file_path"] is None
    assert not list(ops.ctx.storage.list(prefix))
    done = [e for e in ops.events("backup.delete") if e.outcome is AuditOutcome.SUCCESS]
    assert [e.details["purge"] for e in done] == [False, True]
    assert done[1].details["old"]["file_path"] is not None
    assert done[1].details["new"]["file_path"] is None
    assert done[1].details["objects_removed"] == 3  # manifest, dump, audit trail
    details = ops.admin.get(f"/api/v1/backup/{backup_id}").json()
    assert [s["meaning"] for s in details["signatures"]] == ["Approved deletion"] * 2
    assert ops.admin.get(f"/api/v1/backup/{backup_id}/download").status_code == 404


def test_delete_refuses_a_backup_on_legal_hold(ops: Ops) -> None:
    backup_id = ops.backup(type="database", level=1)["result"]["backup_id"]
    with ops.ctx.catalog.session() as session:
        session.get_one(Backup, uuid.UUID(backup_id)).legal_hold = True
    held = ops.admin.request(
        "DELETE",
        f"/api/v1/backup/{backup_id}",
        json={"signature": ops.signature("Approved deletion")},
    )
    assert held.status_code == 409
    assert "legal hold" in held.json()["detail"]
    failures = [e for e in ops.events("backup.delete") if e.outcome is AuditOutcome.FAILURE]
    assert len(failures) == 1
    assert ops.events("signature.create") == []  # refused before anyone signed


def test_backups_queued_in_the_same_second_get_distinct_default_names(ops: Ops) -> None:
    jobs = [
        ops.admin.post("/api/v1/backup/create", json={"type": "database", "level": 1}).json()
        for _ in range(3)
    ]
    names = [ops.wait_job(j["job_id"])["params"]["name"] for j in jobs]
    assert len(set(names)) == 3
    assert all(name.startswith("database-") for name in names)
    listed = ops.admin.get("/api/v1/backup/list").json()
    assert sorted(b["name"] for b in listed["items"]) == sorted(names)
