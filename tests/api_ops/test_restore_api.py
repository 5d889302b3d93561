"""The restore endpoints: preview, validate, signed execute as a job, and the history."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from clinvault.catalog.models import AuditOutcome
from clinvault.engine.dbrestore import drop_database
from tests.api_ops.conftest import Ops

pytestmark = pytest.mark.pg


@pytest.fixture
def sandbox(ops: Ops, tmp_path: Path) -> Iterator[dict[str, str]]:
    """An alternate restore target beside the live platform, removed afterwards."""
    name = f"{ops.platform.conn.database}__apitest"
    yield {"database": name, "directory": str(tmp_path / "restored-files")}
    drop_database(ops.platform.conn, name)


def _execute(ops: Ops, body: dict[str, Any]) -> Any:
    return ops.admin.post("/api/v1/restore/execute", json=body)


def test_preview_and_validate_change_nothing(ops: Ops) -> None:
    backup_id = ops.backup()["result"]["backup_id"]
    preview = ops.admin.post("/api/v1/restore/preview", json={"backup_id": backup_id})
    assert preview.status_code == 200, preview.text
    data = preview.json()
    assert data["validation"]["ok"] is True
    assert data["database"]["rows_modified_after_backup"] == 0
    assert data["files"]["to_add"] == data["files"]["to_remove"] == 0

    study = ops.platform.summary.study_codes[0]
    granular = ops.admin.post(
        "/api/v1/restore/preview",
        json={"backup_id": backup_id, "scope": "study", "ids": [study]},
    )
    assert granular.status_code == 200, granular.text

    validation = ops.admin.post("/api/v1/restore/validate", json={"backup_id": backup_id})
    assert validation.status_code == 200
    report = validation.json()
    assert report["ok"] is True
    assert {"status", "manifest", "pg_restore", "target"} <= {c["name"] for c in report["checks"]}
    assert all(c["ok"] for c in report["checks"])
    missing = ops.admin.post(
        "/api/v1/restore/validate", json={"backup_id": "00000000-0000-4000-8000-000000000000"}
    )
    assert missing.status_code == 404
    assert (
        ops.auditor.post("/api/v1/restore/preview", json={"backup_id": backup_id}).status_code
        == 403
    )


def test_execute_without_confirmation_or_valid_signature_is_refused_and_audited(
    ops: Ops, sandbox: dict[str, str]
) -> None:
    backup_id = ops.backup()["result"]["backup_id"]
    body = {"backup_id": backup_id, "scope": "full", "target": sandbox}

    unconfirmed = _execute(ops, {**body, "signature": ops.signature("Approved restore")})
    assert unconfirmed.status_code == 422
    unsigned = _execute(ops, {**body, "confirm": True})
    assert unsigned.status_code == 403
    wrong_password = _execute(
        ops,
        {**body, "confirm": True, "signature": ops.signature("Approved restore", "wrong-one")},
    )
    assert wrong_password.status_code == 403

    # A signature presigned for another operation (the same backup, but database only).
    other = {
        "action": "restore.execute",
        "target_type": "backup",
        "target_id": backup_id,
        "scope": "database",
        "ids": [],
        "target": sandbox,
        "options": {"safety_backup": True},
    }
    presigned = ops.admin.post(
        "/api/v1/signatures",
        json={"operation": other, "signature": ops.signature("Approved restore")},
    )
    assert presigned.status_code == 201, presigned.text
    replayed = _execute(ops, {**body, "confirm": True, "signature_id": presigned.json()["id"]})
    assert replayed.status_code == 403
    assert "different operation" in replayed.json()["detail"]

    denials = [e for e in ops.events("restore.execute") if e.outcome is AuditOutcome.DENIED]
    assert len(denials) == 4
    assert all(e.target_id == backup_id for e in denials)
    assert "wrong-one" not in str([e.details for e in denials])
    assert ops.admin.get("/api/v1/jobs").json()["total"] == 1  # only the backup ran
    assert ops.admin.get("/api/v1/restore/history").json()["total"] == 0


def test_signed_restore_runs_as_a_job_and_history_shows_the_signature(
    ops: Ops, sandbox: dict[str, str]
) -> None:
    backup_id = ops.backup()["result"]["backup_id"]
    answer = _execute(
        ops,
        {
            "backup_id": backup_id,
            "scope": "full",
            "target": sandbox,
            "confirm": True,
            "signature": ops.signature("Approved restore"),
        },
    )
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    job = ops.wait_job(accepted["job_id"])
    assert job["status"] == "completed", job
    assert job["target_type"] == "restore"
    assert job["params"]["signature_id"] == accepted["signature_id"]

    with psycopg.connect(**ops.platform.conn.with_database(sandbox["database"]).psycopg_kwargs()):
        pass  # the restored database exists
    assert Path(sandbox["directory"], "studies").is_dir()

    history = ops.admin.get("/api/v1/restore/history").json()
    assert history["total"] == 1
    op = history["items"][0]
    assert op["id"] == job["target_id"]
    assert op["status"] == "completed"
    assert op["backup_id"] == backup_id
    assert op["validation_results"]["backup"]["ok"] is True
    assert op["metadata"]["signature_id"] == accepted["signature_id"]
    assert op["metadata"]["job_id"] == accepted["job_id"]
    [signature] = op["signatures"]
    assert signature["id"] == accepted["signature_id"]
    assert signature["meaning"] == "Approved restore"
    assert signature["printed_name"] == "Ada Admin"
    assert signature["operation"]["target"] == sandbox
    submitted = ops.events("job.submit")[-1]
    assert submitted.details["params"]["signature_id"] == accepted["signature_id"]


def test_presigned_granular_restore_of_one_study(ops: Ops) -> None:
    backup_id = ops.backup()["result"]["backup_id"]
    study = ops.platform.summary.study_codes[0]
    body: dict[str, Any] = {
        "backup_id": backup_id,
        "scope": "study",
        "ids": [study],
        "safety_backup": False,
        "confirm": True,
    }
    operation = {
        "action": "restore.execute",
        "target_type": "backup",
        "target_id": backup_id,
        "scope": "study",
        "ids": [study],
        "target": {"database": None, "directory": None},
        "options": {"safety_backup": False},
    }
    presigned = ops.admin.post(
        "/api/v1/signatures",
        json={"operation": operation, "signature": ops.signature("Approved restore")},
    ).json()
    answer = _execute(ops, {**body, "signature_id": presigned["id"]})
    assert answer.status_code == 202, answer.text
    job = ops.wait_job(answer.json()["job_id"])
    assert job["status"] == "completed", job
    assert job["result"]["scope"] == "study"
    reused = _execute(ops, {**body, "signature_id": presigned["id"]})
    assert reused.status_code == 403  # single use
    [op] = ops.admin.get("/api/v1/restore/history").json()["items"]
    assert [s["id"] for s in op["signatures"]] == [presigned["id"]]
