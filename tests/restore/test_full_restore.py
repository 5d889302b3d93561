"""Full restores of the sample platform: exact round trip, checkpoint, safety backup,
alternate target, preview, files-only scope, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from clinvault.catalog.models import Backup, BackupType, RestoreStatus
from clinvault.services.audit import AuditFilter
from clinvault.services.backup import BackupRequest, BackupService
from clinvault.services.restore import RestoreService
from clinvault.services.restore_ops import RestoreTarget
from tests.restore.conftest import (
    ACTOR,
    change_platform,
    database_names,
    fingerprint,
    table_hashes,
    tree,
)
from tests.services.conftest import Platform

pytestmark = pytest.mark.pg


def _hook(log: Path, stage: str) -> list[str]:
    """A hook that appends its stage and whether it saw any secret-looking variable."""
    script = (
        f'echo "{stage} $CLINVAULT_HOOK_STAGE $CLINVAULT_HOOK_SCOPE '
        f'${{PGPASSWORD:-nopass}} ${{CLINVAULT_CATALOG_URL:-nocatalog}}" >> {log}'
    )
    return ["sh", "-c", script]


def test_full_restore_brings_back_exactly_the_backed_up_state(
    platform: Platform, tmp_path: Path
) -> None:
    log = tmp_path / "hooks.log"
    ctx = platform.context(pre_restore_hook=_hook(log, "pre"), post_restore_hook=_hook(log, "post"))
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    at_backup = fingerprint(platform.conn)
    files_at_backup = tree(platform.files_root)
    change_platform(platform)
    changed = table_hashes(platform.conn)
    files_changed = tree(platform.files_root)

    reports = []
    op = RestoreService(ctx).restore_full_backup(backup.id, ACTOR, on_progress=reports.append)

    assert op.status is RestoreStatus.COMPLETED, op.error
    assert fingerprint(platform.conn) == at_backup
    assert tree(platform.files_root) == files_at_backup
    results = op.validation_results
    assert results["backup"]["ok"] and results["restored"]["ok"]
    assert results["restored"]["files"]["files"] == platform.summary.file_count
    assert results["restored"]["references"]["missing"] == 0
    assert results["restored"]["references"]["checked"] > 0
    assert reports and reports[-1].percent == 100.0
    assert log.read_text().split("\n")[:2] == [
        "pre pre full nopass nocatalog",
        "post post full nopass nocatalog",
    ]

    # The checkpoint is the state just before the restore, kept beside the live one.
    checkpoint = op.metadata_["checkpoint"]
    live = platform.conn.database
    assert database_names(platform.conn, f"{live}__") == [checkpoint["database"]]
    assert table_hashes(platform.conn.with_database(checkpoint["database"])) == changed
    assert tree(Path(checkpoint["directory"])) == {
        k: v for k, v in files_changed.items() if k.split("/")[0] in ("studies", "uploads")
    }
    # ... and the safety backup holds it too, as a regular catalog entry.
    with ctx.catalog.session() as session:
        safety = session.get_one(Backup, op.safety_backup_id)
    assert safety.is_safety_backup and safety.type is BackupType.FULL
    assert safety.metadata_["rows"] == sum(
        int(v.split(":")[0]) for k, v in changed.items() if not k.startswith("sequence")
    )
    actions = [e.action for e in ctx.audit.list(AuditFilter(target_id=str(op.id)))]
    assert "restore.start" in actions and "restore.complete" in actions
    assert ctx.audit.verify().ok


def test_checkpoint_retention_drops_older_checkpoints_and_audits_it(platform: Platform) -> None:
    ctx = platform.context(checkpoint_keep=1)
    backup = BackupService(ctx).create(BackupRequest(BackupType.DATABASE), ACTOR)
    service = RestoreService(ctx)
    first = service.run(backup.id, None, ACTOR, safety_backup=False)
    second = service.run(backup.id, None, ACTOR, safety_backup=False)
    live = platform.conn.database
    assert database_names(platform.conn, f"{live}__") == [
        second.metadata_["checkpoint"]["database"]
    ]
    kept = service.checkpoints()
    assert [c["operation_id"] for c in kept] == [str(second.id)]
    drops = ctx.audit.list(AuditFilter(action="restore.checkpoint_drop"))
    assert [e.target_id for e in drops] == [str(first.id)]
    assert service.drop_checkpoints(ACTOR, keep=0) == [str(second.id)]
    assert database_names(platform.conn, f"{live}__") == []
    assert service.checkpoints() == []


def test_restore_to_an_alternate_target_leaves_the_live_platform_alone(
    platform: Platform, tmp_path: Path
) -> None:
    ctx = platform.context()
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    at_backup = fingerprint(platform.conn)
    files_at_backup = tree(platform.files_root)
    change_platform(platform)
    live_now, live_files = fingerprint(platform.conn), tree(platform.files_root)

    sandbox = f"{platform.conn.database}__sandbox"
    target = RestoreTarget(database=sandbox, directory=str(tmp_path / "sandbox"))
    op = RestoreService(ctx).run(backup.id, "full", ACTOR, target=target)

    assert op.status is RestoreStatus.COMPLETED, op.error
    assert op.safety_backup_id is None  # nothing live changes, nothing to save
    assert fingerprint(platform.conn.with_database(sandbox)) == at_backup
    assert tree(tmp_path / "sandbox") == files_at_backup
    assert fingerprint(platform.conn) == live_now
    assert tree(platform.files_root) == live_files
    assert op.target_database == sandbox
    with pytest.raises(Exception, match="already exists"):
        RestoreService(ctx).run(backup.id, "full", ACTOR, target=target)


def test_preview_reports_what_would_change_and_changes_nothing(platform: Platform) -> None:
    ctx = platform.context()
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    change_platform(platform)
    before = fingerprint(platform.conn), tree(platform.files_root)

    data = RestoreService(ctx).preview(str(backup.id))

    assert fingerprint(platform.conn) == before[0] and tree(platform.files_root) == before[1]
    assert data["validation"]["ok"] and data["method"] == "swap"
    tables = {t["table"]: t for t in data["database"]["tables"]}
    assert tables["public.after_backup"]["action"] == "drop"
    assert tables["public.lab_tests"]["live_rows"] == tables["public.lab_tests"]["backup_rows"] + 1
    adverse = tables["public.adverse_events"]
    assert adverse["live_rows"] == adverse["backup_rows"] - 1
    assert tables["public.subjects"]["modified_after_backup"] == 3
    assert data["database"]["rows_modified_after_backup"] >= 3
    files = data["files"]
    assert (files["to_add"], files["to_replace"], files["to_remove"]) == (1, 1, 1)
    assert files["examples"]["remove"] == ["uploads/new-after-backup.txt"]
    assert data["estimate"]["seconds"] >= 0 and "default" in data["estimate"]["basis"]

    RestoreService(ctx).run(backup.id, "database", ACTOR, safety_backup=False)
    estimate = RestoreService(ctx).preview(str(backup.id))["estimate"]
    assert "earlier restores" in estimate["basis"]


def test_files_scope_restores_only_the_files(platform: Platform) -> None:
    ctx = platform.context()
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    files_at_backup = tree(platform.files_root)
    change_platform(platform)
    database_now = table_hashes(platform.conn)

    op = RestoreService(ctx).restore_files(backup.id, ACTOR)

    assert op.status is RestoreStatus.COMPLETED, op.error
    assert tree(platform.files_root) == files_at_backup
    assert table_hashes(platform.conn) == database_now
    assert "database" not in op.validation_results["restored"]
    assert database_names(platform.conn, f"{platform.conn.database}__") == []


def test_command_line_preview_run_and_history(platform: Platform) -> None:
    ctx = platform.context()
    backup = BackupService(ctx).create(BackupRequest(BackupType.DATABASE), ACTOR)
    at_backup = table_hashes(platform.conn)
    with psycopg.connect(**platform.conn.psycopg_kwargs(), autocommit=True) as db:
        db.execute("DELETE FROM observations")

    refused = platform.cli("restore", "run", str(backup.id), check=False)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    preview = json.loads(platform.cli("restore", "preview", backup.name, "--json").stdout)
    observations = next(
        t for t in preview["database"]["tables"] if t["table"] == "public.observations"
    )
    assert observations["live_rows"] == 0 and observations["backup_rows"] > 0
    ran = json.loads(
        platform.cli(
            "restore", "run", str(backup.id), "--no-safety-backup", "--yes", "--json"
        ).stdout
    )
    assert ran["status"] == "completed" and ran["safety_backup_id"] is None
    assert table_hashes(platform.conn) == at_backup
    history = json.loads(platform.cli("restore", "history", "--json").stdout)
    assert [h["id"] for h in history] == [ran["id"]]
    assert history[0]["validation_results"]["restored"]["ok"] is True
