"""Restoring one organization: its rows, its studies' rows and all their files."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinvault.catalog.models import AuditOutcome, BackupType, RestoreStatus
from clinvault.engine.checks import read_manifest
from clinvault.engine.filerestore import remove_tree
from clinvault.engine.pginspect import connect
from clinvault.errors import IntegrityError
from clinvault.services.actor import Actor
from clinvault.services.backup import BackupRequest, BackupService
from clinvault.services.granular import GranularRestoreService
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

CHANGE_ORG_001 = """
DELETE FROM studies WHERE code = '{first_study}';
UPDATE users SET full_name = 'Renamed After Backup' WHERE id = (
    SELECT min(u.id) FROM users u JOIN organizations o ON o.id = u.organization_id
    WHERE o.code = 'ORG-001');
INSERT INTO studies (organization_id, code, title, phase, therapeutic_area, arms, is_blinded,
                     target_enrollment, start_date)
SELECT id, 'STU-0099', 'Started after the backup', 'phase_1', 'oncology', ARRAY['A'], false,
       10, DATE '2025-01-01'
FROM organizations WHERE code = 'ORG-001';
"""
CHANGE_ORG_002 = """
UPDATE visits SET visit_name = 'other organization, after the backup' WHERE id = (
    SELECT min(v.id) FROM visits v JOIN subjects s ON s.id = v.subject_id
    JOIN studies st ON st.id = s.study_id JOIN organizations o ON o.id = st.organization_id
    WHERE o.code = 'ORG-002');
"""


def _studies_of(platform: Platform, org: str) -> list[str]:
    with connect(platform.conn) as db:
        rows = db.execute(
            "SELECT st.code FROM studies st JOIN organizations o ON o.id = st.organization_id"
            " WHERE o.code = %s ORDER BY 1",
            (org,),
        ).fetchall()
    return [str(r[0]) for r in rows]


def _org_dirs(study_codes: list[str]) -> set[str]:
    return {"uploads/ORG-001", *(f"studies/{code}" for code in study_codes)}


def test_organization_restore_brings_back_its_studies_and_files_only(platform: Platform) -> None:
    ctx = platform.context()
    scope, root = ctx.settings.scope, platform.files_root
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    orgs = scope_keys(platform.conn, scope, "organization")
    key, other = orgs["ORG-001"], orgs["ORG-002"]
    rows_at_backup = database_state(platform.conn, scope, "organization")
    studies_at_backup = database_state(platform.conn, scope, "study")
    files_at_backup = tree_state(root)
    codes = _studies_of(platform, "ORG-001")
    assert len(codes) >= 2
    dirs = _org_dirs([*codes, "STU-0099"])

    execute(platform.conn, CHANGE_ORG_001.format(first_study=codes[0]))
    execute(platform.conn, CHANGE_ORG_002)
    remove_tree(root / f"studies/{codes[0]}")
    (root / "studies/STU-0099").mkdir()
    (root / "studies/STU-0099/protocol.txt").write_text("new study\n")
    next(p for p in (root / "uploads/ORG-001").rglob("*") if p.is_file()).write_text("edited")
    (root / "uploads/ORG-002/after-backup.txt").write_text("stays\n")
    rows_before = database_state(platform.conn, scope, "organization")
    studies_before = database_state(platform.conn, scope, "study")
    files_before = tree_state(root)

    op = GranularRestoreService(ctx).run(
        str(backup.id), "organization", ["ORG-001"], ACTOR, safety_backup=False
    )

    rows_after = database_state(platform.conn, scope, "organization")
    assert of_keys(rows_after, {key}) == of_keys(rows_at_backup, {key})
    assert except_keys(rows_after, {key}) == except_keys(rows_before, {key})
    assert of_keys(rows_after, {other}) != of_keys(rows_at_backup, {other})  # kept its change
    studies = scope_keys(platform.conn, scope, "study")
    own = {studies[code] for code in codes}
    others = {studies[code] for code in _studies_of(platform, "ORG-002")}
    studies_after = database_state(platform.conn, scope, "study")
    assert of_keys(studies_after, own) == of_keys(studies_at_backup, own)
    assert of_keys(studies_after, others) == of_keys(studies_before, others)
    assert studies_after["public.lab_tests"] == studies_before["public.lab_tests"]
    assert "STU-0099" not in studies

    files_after = tree_state(root)
    assert under(files_after, dirs) == under(files_at_backup, dirs)
    assert outside(files_after, dirs) == outside(files_before, dirs)

    manifest, _ = read_manifest(ctx.storage, str(backup.id))
    assert manifest.database is not None
    assert (
        live_counts(rows_after, key)
        == manifest.database.scopes["organization"].counts[key]["tables"]
    )
    assert op.status is RestoreStatus.COMPLETED
    checkpoint = op.metadata_["checkpoint"]["directory"]
    assert (Path(checkpoint) / "studies/STU-0099/protocol.txt").is_file()
    assert set(op.validation_results["files"]["directories"]) == dirs


def test_organization_restore_refuses_to_orphan_another_organizations_rows(
    platform: Platform,
) -> None:
    """A membership in another organization's study names a user added after the backup."""
    ctx = platform.context()
    scope, root = ctx.settings.scope, platform.files_root
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    execute(
        platform.conn,
        """
        WITH late AS (
            INSERT INTO users (organization_id, email, full_name, role)
            SELECT id, 'late@example.org', 'Late User', 'viewer' FROM organizations
            WHERE code = 'ORG-001' RETURNING id)
        INSERT INTO study_memberships (study_id, user_id, role, granted_at)
        SELECT st.id, late.id, 'reader', now() FROM late, studies st WHERE st.code = %s
        """,
        (_studies_of(platform, "ORG-002")[0],),
    )
    execute(platform.conn, CHANGE_ORG_001.format(first_study=_studies_of(platform, "ORG-001")[0]))
    rows_before, files_before = (
        database_state(platform.conn, scope, "organization"),
        tree_state(root),
    )

    with pytest.raises(IntegrityError, match="study_memberships_user_fk"):
        GranularRestoreService(ctx).run(
            str(backup.id), "organization", ["ORG-001"], ACTOR, safety_backup=False
        )

    assert database_state(platform.conn, scope, "organization") == rows_before
    assert tree_state(root) == files_before
    (record,) = operations(ctx)
    assert record.status is RestoreStatus.ROLLED_BACK
    assert ("restore.rollback", AuditOutcome.FAILURE) in audit_actions(ctx, record.id)


def test_deleted_organization_comes_back_with_all_its_studies(platform: Platform) -> None:
    ctx = platform.context()
    scope, root = ctx.settings.scope, platform.files_root
    full = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    key = scope_keys(platform.conn, scope, "organization")["ORG-002"]
    codes = _studies_of(platform, "ORG-002")
    dirs = _org_dirs(codes) - {"uploads/ORG-001"} | {"uploads/ORG-002"}
    rows_at_backup = database_state(platform.conn, scope, "organization")
    files_at_backup = tree_state(root)
    execute(platform.conn, "DELETE FROM organizations WHERE code = 'ORG-002'")
    for directory in dirs:
        remove_tree(root / directory)
    rows_before = database_state(platform.conn, scope, "organization")

    GranularRestoreService(ctx).run(
        str(full.id), "organization", ["ORG-002"], ACTOR, safety_backup=False
    )

    rows_after = database_state(platform.conn, scope, "organization")
    assert of_keys(rows_after, {key}) == of_keys(rows_at_backup, {key})
    assert except_keys(rows_after, {key}) == except_keys(rows_before, {key})
    assert under(tree_state(root), dirs) == under(files_at_backup, dirs)
