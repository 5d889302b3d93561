"""Failures injected at every stage of a restore leave the platform exactly as it was.

Before the first change (bad checksum, a newer dump, pg_restore failing half way, a failing
pre hook, a killed process) nothing live is touched and the record says ``failed``. After
it (a failing post hook, restored data that does not validate, a process killed after the
cut-over) the checkpoint is put back and the record says ``rolled_back``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from clinvault.catalog.models import AuditOutcome, Backup, BackupType, RestoreStatus
from clinvault.engine import bundle
from clinvault.engine.checks import read_manifest
from clinvault.engine.manifest import Manifest, dump_manifest, manifest_checksum
from clinvault.errors import ClinVaultError, ConflictError, IntegrityError, InvalidInputError
from clinvault.services.audit import AuditFilter
from clinvault.services.backup import BackupRequest, BackupService
from clinvault.services.queries import list_backups
from clinvault.services.restore import RestoreService
from tests.restore.conftest import ACTOR, change_platform, database_names, fingerprint, tree
from tests.restore.test_filerestore import hostile_part, member
from tests.services.conftest import Platform

pytestmark = pytest.mark.pg


class State:
    """The live platform's state, to compare before and after a failed restore."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.database, self.files = fingerprint(platform.conn), tree(platform.files_root)

    def unchanged(self) -> bool:
        now = State(self.platform)
        return (now.database, now.files) == (self.database, self.files)


def _leftovers(platform: Platform) -> tuple[list[str], list[Path]]:
    """Derived databases and restore work directories still around."""
    work = platform.files_root.parent / f".{platform.files_root.name}.clinvault-restore"
    staged = platform.home / "staging"
    dirs = [p for p in (work, staged) if p.exists() and any(p.iterdir())]
    return database_names(platform.conn, f"{platform.conn.database}__"), dirs


def _only_op(ctx: object) -> object:
    ops = RestoreService(ctx).history()  # type: ignore[arg-type]
    assert len(ops) == 1
    return ops[0]


@pytest.mark.parametrize("part", ["database.dump.zst", "files.tar.zst"])
def test_bad_checksum_is_refused_before_anything_changes(platform: Platform, part: str) -> None:
    ctx = platform.context()
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    change_platform(platform)
    before = State(platform)
    path = platform.home / "store" / bundle.object_key(str(backup.id), part)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))

    with pytest.raises(IntegrityError, match=part):
        RestoreService(ctx).restore_full_backup(backup.id, ACTOR)

    assert before.unchanged()
    assert _leftovers(platform) == ([], [])
    op = _only_op(ctx)
    assert op.status is RestoreStatus.FAILED and part in op.error  # type: ignore[attr-defined]
    checks = op.validation_results["backup"]["checks"]  # type: ignore[attr-defined]
    assert [c["name"] for c in checks if not c["ok"]] == [f"sha256:{part}"]
    assert [b.id for b in list_backups(ctx)] == [backup.id]  # no safety backup was taken
    failures = ctx.audit.list(AuditFilter(action="restore.fail"))
    assert [e.outcome for e in failures] == [AuditOutcome.FAILURE]


def test_dump_from_a_newer_server_is_refused(platform: Platform) -> None:
    ctx = platform.context()
    backup = BackupService(ctx).create(BackupRequest(BackupType.DATABASE), ACTOR)
    manifest, _ = read_manifest(ctx.storage, str(backup.id))
    raw = manifest.model_dump(mode="json")
    newer = (manifest.source.server_version_num or 0) // 10000 + 1
    raw["source"]["server_version_num"] = newer * 10000
    data = dump_manifest(Manifest.model_validate(raw))
    ctx.storage.write_bytes(bundle.manifest_key(str(backup.id)), data)
    with ctx.catalog.session() as session:
        session.get_one(Backup, backup.id).checksum = manifest_checksum(data)
    before = State(platform)

    with pytest.raises(InvalidInputError, match=f"PostgreSQL {newer}.*older major"):
        RestoreService(ctx).restore_database(backup.id, ACTOR)

    assert before.unchanged() and _leftovers(platform) == ([], [])


@pytest.mark.parametrize("method", ["swap", "in_place"])
def test_pg_restore_failing_half_way_leaves_the_live_database(
    platform: Platform, method: str
) -> None:
    """The dump grants a role that no longer exists: pg_restore loads the tables and data,
    then fails at the privileges, near the end."""
    role = f"cv_gone_{uuid.uuid4().hex[:8]}"
    ctx = platform.context(restore_method=method)
    with psycopg.connect(**platform.conn.psycopg_kwargs(), autocommit=True) as db:
        db.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
        db.execute(sql.SQL("GRANT SELECT ON subjects TO {}").format(sql.Identifier(role)))
        backup = BackupService(ctx).create(BackupRequest(BackupType.DATABASE), ACTOR)
        db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    change_platform(platform)
    before = State(platform)

    with pytest.raises(ClinVaultError, match=f'pg_restore failed.*"{role}" does not exist'):
        RestoreService(ctx).restore_database(backup.id, ACTOR)

    assert before.unchanged()
    assert _leftovers(platform) == ([], [])
    op = _only_op(ctx)
    assert op.status is RestoreStatus.FAILED  # type: ignore[attr-defined]
    assert op.metadata_["method"] == method  # type: ignore[attr-defined]


def test_failing_pre_hook_aborts_with_nothing_changed(platform: Platform, tmp_path: Path) -> None:
    marker = tmp_path / "post-hook-ran"
    ctx = platform.context(
        pre_restore_hook=["sh", "-c", "echo stopping the web app; exit 3"],
        post_restore_hook=["touch", str(marker)],
    )
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    change_platform(platform)
    before = State(platform)

    with pytest.raises(ClinVaultError, match=r"exit 3.*stopping the web app"):
        RestoreService(ctx).restore_full_backup(backup.id, ACTOR)

    assert before.unchanged()
    assert _leftovers(platform) == ([], [])
    op = _only_op(ctx)
    assert op.status is RestoreStatus.FAILED  # type: ignore[attr-defined]
    assert marker.exists()  # the post hook restarts what the pre hook may have stopped


@pytest.mark.parametrize(
    ("method", "database_undo"),
    [
        ("swap", "the database is back as it was"),
        ("in_place", "the database was restored from the safety backup"),
    ],
)
def test_failure_after_the_cut_over_rolls_back_database_and_files(
    platform: Platform, method: str, database_undo: str
) -> None:
    ctx = platform.context(
        restore_method=method, post_restore_hook=["sh", "-c", "echo cannot start; exit 1"]
    )
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    change_platform(platform)
    before = State(platform)

    with pytest.raises(ClinVaultError, match="post-restore hook"):
        RestoreService(ctx).restore_full_backup(backup.id, ACTOR)

    assert before.unchanged()
    assert _leftovers(platform) == ([], [])
    op = _only_op(ctx)
    assert op.status is RestoreStatus.ROLLED_BACK  # type: ignore[attr-defined]
    assert op.error.startswith("rolled back: ") and "cannot start" in op.error  # type: ignore[attr-defined]
    assert op.metadata_["rollback"] == [  # type: ignore[attr-defined]
        "the files are back as they were",
        database_undo,
    ]
    rollbacks = ctx.audit.list(AuditFilter(action="restore.rollback"))
    assert [(e.outcome, e.target_id) for e in rollbacks] == [(AuditOutcome.SUCCESS, str(op.id))]  # type: ignore[attr-defined]


def test_restored_data_failing_validation_is_rolled_back(platform: Platform) -> None:
    """A document row whose file was already missing when the backup was taken: the restored
    platform would be inconsistent, so the restore is undone."""
    with psycopg.connect(**platform.conn.psycopg_kwargs()) as db:
        row = db.execute("SELECT storage_path FROM documents ORDER BY 1 LIMIT 1").fetchone()
    assert row is not None
    (platform.files_root / row[0]).unlink()
    ctx = platform.context()
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    change_platform(platform)
    before = State(platform)

    with pytest.raises(IntegrityError, match=f"files named in public.documents.*{row[0]}"):
        RestoreService(ctx).restore_full_backup(backup.id, ACTOR)

    assert before.unchanged() and _leftovers(platform) == ([], [])
    op = _only_op(ctx)
    assert op.status is RestoreStatus.ROLLED_BACK  # type: ignore[attr-defined]
    references = op.validation_results["restored"]["references"]  # type: ignore[attr-defined]
    assert references["missing_examples"] == [row[0]]


def test_one_restore_at_a_time_and_no_backup_beside_it(platform: Platform, tmp_path: Path) -> None:
    started = tmp_path / "started"
    ctx = platform.context(pre_restore_hook=["sh", "-c", f"touch {started}; sleep 2"])
    backup = BackupService(ctx).create(BackupRequest(BackupType.DATABASE), ACTOR)
    outcome: list[object] = []
    worker = threading.Thread(
        target=lambda: outcome.append(RestoreService(ctx).run(backup.id, None, ACTOR))
    )
    worker.start()
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        with pytest.raises(ConflictError, match="already running"):
            RestoreService(platform.context()).run(backup.id, None, ACTOR)
        with pytest.raises(ConflictError, match="restore is running"):
            BackupService(platform.context()).create(BackupRequest(BackupType.FULL), ACTOR)
    finally:
        worker.join()
    assert outcome and outcome[0].status is RestoreStatus.COMPLETED  # type: ignore[attr-defined]


def _big_files(platform: Platform) -> None:
    big = platform.files_root / "uploads" / "big"
    big.mkdir()
    for i in range(2):
        (big / f"scan-{i}.bin").write_bytes(os.urandom(24 << 20))


def _start_cli_restore(
    platform: Platform, backup_id: uuid.UUID, **env: str
) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "clinvault"
    return subprocess.Popen(
        [str(exe), "restore", "run", str(backup_id), "--no-safety-backup", "--yes"],
        env={**platform.env(), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for(condition: object, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"the restore never reached {what}")


def test_restore_killed_during_staging_leaves_everything_and_is_recovered(
    platform: Platform,
) -> None:
    _big_files(platform)
    ctx = platform.context()
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL, level=1), ACTOR)
    change_platform(platform)
    before = State(platform)
    work = platform.files_root.parent / f".{platform.files_root.name}.clinvault-restore"

    proc = _start_cli_restore(platform, backup.id)
    _wait_for(lambda: any(work.glob("*/staging/uploads/big/*")), proc, "file staging")
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    assert before.unchanged()
    assert [o.status for o in RestoreService(ctx).history()] == [RestoreStatus.IN_PROGRESS]
    assert _leftovers(platform) != ([], [])  # staging was under way

    history = json.loads(platform.cli("restore", "history", "--json").stdout)
    assert [h["status"] for h in history] == ["failed"]
    assert history[0]["error"].startswith("interrupted")
    assert before.unchanged()
    assert _leftovers(platform) == ([], [])
    recovered = ctx.audit.list(AuditFilter(action="restore.recover"))
    assert [e.target_id for e in recovered] == [history[0]["id"]]


def test_restore_killed_after_the_cut_over_is_rolled_back_at_next_start(
    platform: Platform, tmp_path: Path
) -> None:
    pidfile = tmp_path / "hook.pid"
    hook = ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"]
    ctx = platform.context()
    backup = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    change_platform(platform)
    before = State(platform)

    proc = _start_cli_restore(platform, backup.id, CLINVAULT_POST_RESTORE_HOOK=json.dumps(hook))
    _wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), proc, "the post hook")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    os.kill(int(pidfile.read_text()), signal.SIGKILL)  # the orphaned hook, by its own pid
    assert not before.unchanged()  # the restored data was live when the process died

    history = json.loads(platform.cli("restore", "history", "--json").stdout)

    assert [h["status"] for h in history] == ["rolled_back"]
    assert "rolled back" in history[0]["error"]
    assert before.unchanged()
    assert _leftovers(platform) == ([], [])


def test_hostile_bundle_is_refused_and_nothing_is_written_outside(
    platform: Platform, tmp_path: Path
) -> None:
    """A files part and manifest that agree with each other (someone with write access to
    the storage made both): validation passes, extraction refuses the escaping link."""
    ctx = platform.context()
    backup = BackupService(ctx).create(BackupRequest(BackupType.FILES), ACTOR)
    members = [
        member("uploads", tarfile.DIRTYPE),
        member("uploads/escape", tarfile.SYMTYPE, link="../../../outside"),
        member("uploads/escape/planted.txt", data=b"planted"),
        member("uploads/../../planted.txt", data=b"planted"),
    ]
    part, entries = hostile_part(ctx.storage, members, "zstd", str(backup.id))
    manifest, _ = read_manifest(ctx.storage, str(backup.id))
    raw = manifest.model_dump(mode="json")
    raw["parts"] = [p if p["kind"] != "files" else part.model_dump() for p in raw["parts"]]
    raw["files"]["entries"] = [{**e.to_json(), "part": part.name} for e in entries]
    data = dump_manifest(Manifest.model_validate(raw))
    ctx.storage.write_bytes(bundle.manifest_key(str(backup.id)), data)
    with ctx.catalog.session() as session:
        session.get_one(Backup, backup.id).checksum = manifest_checksum(data)
    before = State(platform)
    outside = sorted(tmp_path.parent.iterdir())

    with pytest.raises(IntegrityError, match="refused"):
        RestoreService(ctx).restore_files(backup.id, ACTOR, safety_backup=False)

    assert before.unchanged() and _leftovers(platform) == ([], [])
    assert sorted(tmp_path.parent.iterdir()) == outside
    assert not list(tmp_path.rglob("planted.txt")) and not (tmp_path / "outside").exists()
