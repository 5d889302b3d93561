"""Restoring one study: its rows and files come back exactly, and nothing else changes."""

from __future__ import annotations

import pytest

from clinvault.catalog.models import AuditOutcome, BackupType, RestoreStatus
from clinvault.engine.checks import read_manifest
from clinvault.engine.filerestore import remove_tree
from clinvault.errors import IntegrityError, NotFoundError
from clinvault.services.actor import Actor
from clinvault.services.backup import BackupRequest, BackupService
from clinvault.services.granular import GranularRestoreService
from clinvault.services.granular_run import GranularJob
from clinvault.services.queries import get_backup
from tests.granular.helpers import (
    audit_actions,
    database_state,
    except_keys,
    execute,
    live_counts,
    of_keys,
    operations,
    outside,
    scope_keys,
    tree_state,
    under,
)
from tests.services.conftest import Platform

pytestmark = pytest.mark.pg

ACTOR = Actor("u-1", "Test Admin")
STUDY_DIR = "studies/STU-0002"
FIRST_VISIT_OF_STU_0001 = """
UPDATE visits SET visit_name = 'changed after the backup' WHERE id = (
    SELECT min(v.id) FROM visits v JOIN subjects s ON s.id = v.subject_id
    JOIN studies st ON st.id = s.study_id WHERE st.code = 'STU-0001')
"""


def test_deleted_study_comes_back_exactly_and_nothing_else_changes(platform: Platform) -> None:
    ctx = platform.context()
    scope, root = ctx.settings.scope, platform.files_root
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    key = scope_keys(platform.conn, scope, "study")["STU-0002"]
    rows_at_backup, files_at_backup = (
        database_state(platform.conn, scope, "study"),
        tree_state(root),
    )

    execute(platform.conn, "DELETE FROM studies WHERE code = 'STU-0002'")
    remove_tree(root / STUDY_DIR)
    execute(platform.conn, FIRST_VISIT_OF_STU_0001)
    (root / "studies/STU-0001/added-after-backup.txt").write_text("stays\n")
    rows_before, files_before = database_state(platform.conn, scope, "study"), tree_state(root)
    assert of_keys(rows_before, {key}) != of_keys(rows_at_backup, {key})

    op = GranularRestoreService(ctx).run(str(backup.id), "study", ["STU-0002"], ACTOR)

    rows_after, files_after = database_state(platform.conn, scope, "study"), tree_state(root)
    assert of_keys(rows_after, {key}) == of_keys(rows_at_backup, {key})
    assert except_keys(rows_after, {key}) == except_keys(rows_before, {key})
    assert under(files_after, {STUDY_DIR}) == under(files_at_backup, {STUDY_DIR})
    assert under(files_after, {STUDY_DIR})
    assert outside(files_after, {STUDY_DIR}) == outside(files_before, {STUDY_DIR})

    manifest, _ = read_manifest(ctx.storage, str(backup.id))
    assert manifest.database is not None
    expected = manifest.database.scopes["study"].counts[key]["tables"]
    assert live_counts(rows_after, key) == expected
    assert op.status is RestoreStatus.COMPLETED
    assert op.scope_ids == [key]
    assert op.validation_results["counts_match"] is True
    assert op.validation_results["files"]["check"]["ok"] is True
    assert op.safety_backup_id is not None
    assert get_backup(ctx, str(op.safety_backup_id)).is_safety_backup
    assert audit_actions(ctx, op.id) == {
        ("restore.start", AuditOutcome.SUCCESS),
        ("restore.complete", AuditOutcome.SUCCESS),
    }
    assert ctx.audit.verify().ok


EDIT_STU_0002 = """
UPDATE studies SET title = 'Renamed after the backup' WHERE code = 'STU-0002';
UPDATE subjects SET arm = 'changed' WHERE id IN (
    SELECT s.id FROM subjects s JOIN studies st ON st.id = s.study_id
    WHERE st.code = 'STU-0002' ORDER BY s.id LIMIT 3);
DELETE FROM observations WHERE id IN (
    SELECT o.id FROM observations o JOIN visits v ON v.id = o.visit_id
    JOIN subjects s ON s.id = v.subject_id JOIN studies st ON st.id = s.study_id
    WHERE st.code = 'STU-0002' ORDER BY o.id LIMIT 25);
DELETE FROM visits WHERE id = (
    SELECT max(v.id) FROM visits v JOIN subjects s ON s.id = v.subject_id
    JOIN studies st ON st.id = s.study_id WHERE st.code = 'STU-0002');
WITH new_subject AS (
    INSERT INTO subjects (study_id, site_id, subject_number, sex, birth_year, arm, status,
                          enrolled_on)
    SELECT study_id, site_id, 'ADDED-1', 'F', 1980, arm, 'enrolled', enrolled_on
    FROM subjects WHERE study_id = (SELECT id FROM studies WHERE code = 'STU-0002') LIMIT 1
    RETURNING id)
INSERT INTO visits (subject_id, visit_number, visit_name, scheduled_date, status)
SELECT id, 1, 'Screening', DATE '2025-01-01', 'scheduled' FROM new_subject;
"""


DOCUMENT_OF_STU_0003_ON_ADDED_SUBJECT = """
INSERT INTO documents (id, organization_id, study_id, subject_id, category, title, file_name,
                       storage_path, content_type, size_bytes, sha256)
SELECT gen_random_uuid(), d.organization_id, d.study_id,
       (SELECT id FROM subjects WHERE subject_number = 'ADDED-1'), 'notes', 'x', 'x.txt',
       'studies/STU-0003/x.txt', 'text/plain', 0, repeat('0', 64)
FROM documents d JOIN studies st ON st.id = d.study_id WHERE st.code = 'STU-0003' LIMIT 1
"""


def _edit_files(root: object) -> None:
    study = root / STUDY_DIR  # type: ignore[operator]
    files = sorted(p for p in study.rglob("*") if p.is_file())
    files[0].write_bytes(b"overwritten after the backup\n")
    files[1].unlink()
    (study / "added-after-backup.txt").write_text("goes away\n")


@pytest.mark.parametrize("replica", [True, False], ids=["replica", "ordered"])
def test_edited_study_is_restored_exactly(
    platform: Platform, replica: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both modes: with triggers and foreign-key actions off (replica), and the fallback
    with foreign keys enforced (ordered); ``updated_at`` values come back as backed up."""
    if not replica:
        monkeypatch.setattr("clinvault.engine.granular_apply._can_use_replica", lambda db: False)
    ctx = platform.context()
    scope, root = ctx.settings.scope, platform.files_root
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    key = scope_keys(platform.conn, scope, "study")["STU-0002"]
    rows_at_backup, files_at_backup = (
        database_state(platform.conn, scope, "study"),
        tree_state(root),
    )
    execute(platform.conn, EDIT_STU_0002)
    _edit_files(root)
    rows_before, files_before = database_state(platform.conn, scope, "study"), tree_state(root)
    assert of_keys(rows_before, {key}) != of_keys(rows_at_backup, {key})

    op = GranularRestoreService(ctx).run(str(backup.id), "study", [key], ACTOR, safety_backup=False)

    rows_after, files_after = database_state(platform.conn, scope, "study"), tree_state(root)
    assert of_keys(rows_after, {key}) == of_keys(rows_at_backup, {key})
    assert except_keys(rows_after, {key}) == except_keys(rows_before, {key})
    assert under(files_after, {STUDY_DIR}) == under(files_at_backup, {STUDY_DIR})
    assert outside(files_after, {STUDY_DIR}) == outside(files_before, {STUDY_DIR})
    database = op.validation_results["database"]
    assert database["mode"] == ("replica" if replica else "ordered")
    assert database["deleted"]["public.subjects"] == 1
    assert database["inserted"]["public.observations"] >= 25
    assert database["updated"]["public.studies"] == 1
    assert op.safety_backup_id is None


def test_conflicting_outside_reference_rolls_back_with_nothing_changed(
    platform: Platform,
) -> None:
    """A document of another study points at a subject added after the backup: restoring
    STU-0002 would remove that subject, so the whole restore is rolled back, files too."""
    ctx = platform.context()
    scope, root = ctx.settings.scope, platform.files_root
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    execute(platform.conn, EDIT_STU_0002)
    execute(platform.conn, DOCUMENT_OF_STU_0003_ON_ADDED_SUBJECT)
    _edit_files(root)
    rows_before, files_before = database_state(platform.conn, scope, "study"), tree_state(root)

    with pytest.raises(IntegrityError, match="documents"):
        GranularRestoreService(ctx).run(
            str(backup.id), "study", ["STU-0002"], ACTOR, safety_backup=False
        )

    assert database_state(platform.conn, scope, "study") == rows_before
    assert tree_state(root) == files_before
    (record,) = operations(ctx)
    assert record.status is RestoreStatus.ROLLED_BACK
    assert "documents_subject_fk" in (record.error or "")
    assert audit_actions(ctx, record.id) == {
        ("restore.start", AuditOutcome.SUCCESS),
        ("restore.rollback", AuditOutcome.FAILURE),
    }


def test_missing_study_is_refused_before_anything_changes(platform: Platform) -> None:
    ctx = platform.context()
    scope, root = ctx.settings.scope, platform.files_root
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    execute(platform.conn, EDIT_STU_0002)
    rows_before, files_before = database_state(platform.conn, scope, "study"), tree_state(root)

    with pytest.raises(NotFoundError, match="STU-9999"):
        GranularRestoreService(ctx).run(str(backup.id), "study", ["STU-0002", "STU-9999"], ACTOR)

    assert database_state(platform.conn, scope, "study") == rows_before
    assert tree_state(root) == files_before
    (record,) = operations(ctx)
    assert record.status is RestoreStatus.FAILED
    assert record.safety_backup_id is None
    assert audit_actions(ctx, record.id) == {
        ("restore.start", AuditOutcome.SUCCESS),
        ("restore.fail", AuditOutcome.FAILURE),
    }


def test_a_swap_left_in_place_is_undone_by_recovery(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If putting the old directories back fails (or the process dies after the swap),
    the journal keeps the swap, and recovery puts the live tree back as it was."""
    ctx = platform.context()
    root = platform.files_root
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    execute(platform.conn, EDIT_STU_0002)
    execute(platform.conn, DOCUMENT_OF_STU_0003_ON_ADDED_SUBJECT)
    _edit_files(root)
    files_before = tree_state(root)

    def broken_undo(record: object) -> None:
        raise OSError("disk went away")

    with monkeypatch.context() as patch:
        patch.setattr("clinvault.services.granular_run.undo_swap", broken_undo)
        with pytest.raises(IntegrityError):
            GranularRestoreService(ctx).run(
                str(backup.id), "study", ["STU-0002"], ACTOR, safety_backup=False
            )
    (record,) = operations(ctx)
    assert record.status is RestoreStatus.FAILED
    assert "could not be undone" in (record.error or "")
    assert tree_state(root) != files_before

    assert GranularRestoreService(ctx).recover_interrupted() == [str(record.id)]

    assert tree_state(root) == files_before
    (record,) = operations(ctx)
    assert record.status is RestoreStatus.ROLLED_BACK
    assert GranularRestoreService(ctx).recover_interrupted() == []


@pytest.mark.parametrize("stop", ["before_commit", "after_commit"])
def test_a_process_that_died_is_settled_by_the_transaction_outcome(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, stop: str
) -> None:
    """Dying just before the commit leaves nothing committed: the swap is undone. Dying
    just after it leaves the restore done: the swap stays and the record completes."""
    ctx = platform.context()
    scope, root = ctx.settings.scope, platform.files_root
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    key = scope_keys(platform.conn, scope, "study")["STU-0002"]
    rows_at_backup = database_state(platform.conn, scope, "study")
    files_at_backup = tree_state(root)
    execute(platform.conn, EDIT_STU_0002)
    _edit_files(root)
    rows_before, files_before = database_state(platform.conn, scope, "study"), tree_state(root)

    def die(*args: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        # a dead process records nothing and puts nothing back
        patch.setattr(GranularJob, "_fail", lambda self, exc: None)
        patch.setattr(GranularJob, "_undo_swap", lambda self: None)
        if stop == "before_commit":
            original = GranularJob._committing

            def commit_then_die(self: GranularJob, xid: int) -> None:
                original(self, xid)
                raise KeyboardInterrupt

            patch.setattr(GranularJob, "_committing", commit_then_die)
        else:
            patch.setattr(GranularJob, "_complete", die)
        with pytest.raises(KeyboardInterrupt):
            GranularRestoreService(ctx).run(
                str(backup.id), "study", ["STU-0002"], ACTOR, safety_backup=False
            )
    (record,) = operations(ctx)
    assert record.status is RestoreStatus.IN_PROGRESS
    assert record.metadata_["journal"]["phase"] == (
        "committing" if stop == "before_commit" else "committed"
    )
    monkeypatch.setattr("clinvault.services.granular.worker_is_dead", lambda worker: True)

    assert GranularRestoreService(ctx).recover_interrupted() == [str(record.id)]

    (record,) = operations(ctx)
    rows_after, files_after = database_state(platform.conn, scope, "study"), tree_state(root)
    if stop == "before_commit":
        assert record.status is RestoreStatus.ROLLED_BACK
        assert (rows_after, files_after) == (rows_before, files_before)
    else:
        assert record.status is RestoreStatus.COMPLETED
        assert of_keys(rows_after, {key}) == of_keys(rows_at_backup, {key})
        assert under(files_after, {STUDY_DIR}) == under(files_at_backup, {STUDY_DIR})
