"""The preview: exact figures of what a study restore would change, and no change at all."""

from __future__ import annotations

import json

import pytest

from clinvault.catalog.models import BackupType
from clinvault.services.actor import Actor
from clinvault.services.backup import BackupRequest, BackupService
from clinvault.services.granular import GranularRestoreService
from clinvault.services.queries import list_backups
from tests.granular.helpers import database_state, execute, operations, tree_state
from tests.granular.test_study_restore import EDIT_STU_0002, STUDY_DIR, _edit_files
from tests.services.conftest import Platform

pytestmark = pytest.mark.pg

ACTOR = Actor("u-1", "Test Admin")


def _tables(report: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {t["table"].removeprefix("public."): t for t in report["database"]["tables"]}


def test_preview_gives_exact_changes_and_changes_nothing(platform: Platform) -> None:
    ctx = platform.context()
    scope, root = ctx.settings.scope, platform.files_root
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    execute(platform.conn, EDIT_STU_0002)
    _edit_files(root)
    rows_before, files_before = database_state(platform.conn, scope, "study"), tree_state(root)
    service = GranularRestoreService(ctx)

    report = service.preview(str(backup.id), "study", ["STU-0002"])

    assert database_state(platform.conn, scope, "study") == rows_before
    assert tree_state(root) == files_before
    assert operations(ctx) == [] and len(list_backups(ctx)) == 1
    json.dumps(report)
    assert report["scope"] == "study" and report["targets"][0]["label"] == "STU-0002"
    assert report["can_restore"] and report["validation"]["ok"]
    tables = _tables(report)
    assert (tables["studies"]["to_update"], tables["studies"]["action"]) == (1, "replace")
    assert (tables["subjects"]["to_delete"], tables["subjects"]["to_update"]) == (1, 3)
    assert (tables["visits"]["to_delete"], tables["visits"]["to_insert"]) == (1, 1)
    assert tables["observations"]["to_insert"] >= 25
    assert tables["sites"]["action"] == "unchanged"
    # updated_at moved on the renamed study and three subjects; one subject, one visit new
    assert tables["subjects"]["modified_after_backup"] == 4
    assert tables["studies"]["modified_after_backup"] == 1
    assert report["database"]["rows_modified_after_backup"] == 6
    assert report["database"]["broken_references"] == []
    files = report["files"]
    assert files["directories"] == [STUDY_DIR]
    assert (files["to_add"], files["to_replace"], files["to_remove"]) == (1, 1, 1)
    assert report["estimate"]["seconds"] > 0
    assert "default" in report["estimate"]["basis"]

    service.run(str(backup.id), "study", ["STU-0002"], ACTOR, safety_backup=False)
    again = service.preview(str(backup.id), "study", ["STU-0002"])

    assert {t["action"] for t in again["database"]["tables"]} == {"unchanged"}
    assert (again["files"]["to_add"], again["files"]["to_replace"]) == (0, 0)
    assert again["files"]["to_remove"] == 0
    assert "last 1 granular" in again["estimate"]["basis"]


def test_preview_reports_references_that_would_break(platform: Platform) -> None:
    """A document outside the study points at a subject the restore would remove, and a
    member of the study in the backup is a user deleted since."""
    ctx = platform.context()
    backup = BackupService(ctx).create(BackupRequest(BackupType.DATABASE), ACTOR)
    execute(platform.conn, EDIT_STU_0002)
    execute(
        platform.conn,
        """
        UPDATE documents SET subject_id = (SELECT id FROM subjects WHERE subject_number =
            'ADDED-1') WHERE id = (SELECT d.id FROM documents d JOIN studies st
            ON st.id = d.study_id WHERE st.code = 'STU-0003' ORDER BY d.id LIMIT 1)
        """,
    )

    execute(
        platform.conn,
        """
        DELETE FROM users WHERE id = (SELECT min(sm.user_id) FROM study_memberships sm
            JOIN studies st ON st.id = sm.study_id WHERE st.code = 'STU-0002')
        """,
    )

    report = GranularRestoreService(ctx).preview(str(backup.id), "study", ["STU-0002"])

    assert not report["can_restore"]
    missing = {m["constraint"] for m in report["database"]["missing_parents"]}
    assert "study_memberships_user_fk" in missing
    (broken,) = report["database"]["broken_references"]
    assert broken == {
        "constraint": "documents_subject_fk",
        "table": "public.documents",
        "references": "public.subjects",
        "rows": 1,
    }
    assert report["validation"]["problems"]
    assert report["files"]["directories"] == []
    assert "no files part" in report["warnings"][0]
