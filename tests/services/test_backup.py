"""Backups of a real platform: completeness, integrity, standard tools, failures."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from clinvault.catalog.models import AuditOutcome, BackupStatus, BackupType, Scope
from clinvault.engine import bundle
from clinvault.engine.checks import read_manifest
from clinvault.engine.manifest import manifest_checksum
from clinvault.errors import ClinVaultError, ConflictError, InvalidInputError, NotFoundError
from clinvault.services.actor import Actor
from clinvault.services.audit import AuditFilter
from clinvault.services.backup import BackupRequest, BackupService
from clinvault.services.queries import list_backups
from clinvault.services.verify import VerifyService
from tests.services.conftest import Platform

pytestmark = pytest.mark.pg

ACTOR = Actor("u-1", "Test Admin")


def _table_counts(platform: Platform) -> dict[str, int]:
    with psycopg.connect(**platform.conn.psycopg_kwargs()) as db:
        tables = db.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        return {
            f"{s}.{t}": db.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(s, t))
            ).fetchone()[0]  # type: ignore[index]
            for s, t in tables
        }


def test_full_backup_completes_verifies_and_records_exact_counts(platform: Platform) -> None:
    ctx = platform.context()
    reports = []
    row = BackupService(ctx).create(
        BackupRequest(BackupType.FULL), ACTOR, on_progress=reports.append
    )
    assert row.status is BackupStatus.COMPLETED
    manifest, data = read_manifest(ctx.storage, str(row.id))
    assert row.checksum == manifest_checksum(data)
    assert [p.kind for p in manifest.parts] == ["database", "files", "audit"]
    assert manifest.database is not None
    assert manifest.database.tables == _table_counts(platform)
    study_counts = manifest.database.scopes["study"].counts
    assert len(study_counts) == len(platform.summary.study_codes)
    assert manifest.files is not None
    assert manifest.files.file_count == platform.summary.file_count
    assert row.file_size_compressed is not None and row.file_size_bytes is not None
    assert row.file_size_compressed < row.file_size_bytes
    assert reports and reports[-1].percent == 100.0
    stages = {part for r in reports for part in r.stage.split("+")}
    assert {"database", "files", "audit", "finalize"} <= stages
    assert all(a.bytes_done <= b.bytes_done for a, b in itertools.pairwise(reports))

    report = VerifyService(ctx).verify(row.id, ACTOR)
    assert report.ok, report.problems
    events = ctx.audit.list(AuditFilter(target_id=str(row.id)))
    assert {(e.action, e.outcome) for e in events} >= {
        ("backup.start", AuditOutcome.SUCCESS),
        ("backup.create", AuditOutcome.SUCCESS),
        ("backup.verify", AuditOutcome.SUCCESS),
    }
    assert ctx.audit.verify().ok


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x55
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("part", ["database.dump.zst", "files.tar.zst", "audit.jsonl.zst"])
def test_one_flipped_byte_fails_verify_naming_the_part(platform: Platform, part: str) -> None:
    ctx = platform.context()
    row = BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
    path = platform.home / "store" / bundle.object_key(str(row.id), part)
    _flip_byte(path, path.stat().st_size // 2)
    report = VerifyService(ctx).verify(row.id, ACTOR)
    assert not report.ok
    failed = [p.name for p in report.parts if not p.ok]
    assert failed == [part]
    assert all(part in problem for problem in report.problems)
    result = platform.cli("backup", "verify", str(row.id), "--json", check=False)
    assert result.returncode == 7, result.stdout[:3000]
    assert part in result.stdout


def test_edited_manifest_fails_verify_against_the_catalog_checksum(platform: Platform) -> None:
    ctx = platform.context()
    row = BackupService(ctx).create(BackupRequest(BackupType.DATABASE), ACTOR)
    path = platform.home / "store" / bundle.manifest_key(str(row.id))
    path.write_bytes(path.read_bytes().replace(b'"created_by"', b'"created_by" ', 1))
    report = VerifyService(ctx).verify(row.id, ACTOR)
    assert not report.ok
    assert any("manifest.json" in p for p in report.problems)


def test_bundle_without_manifest_is_incomplete(platform: Platform) -> None:
    ctx = platform.context()
    row = BackupService(ctx).create(BackupRequest(BackupType.DATABASE), ACTOR)
    ctx.storage.delete(bundle.manifest_key(str(row.id)))
    report = VerifyService(ctx).verify(row.id, ACTOR)
    assert not report.ok
    assert "incomplete" in report.problems[0]

    fresh = platform.context(catalog_url=f"sqlite:///{platform.home / 'rebuilt.db'}")
    from clinvault.services.maintenance import rebuild_catalog

    rebuilt = rebuild_catalog(fresh, ACTOR)
    assert rebuilt.incomplete == [str(row.id)]
    assert list_backups(fresh) == []


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_parts_open_with_standard_tools(platform: Platform, codec: str, tmp_path: Path) -> None:
    ctx = platform.context()
    row = BackupService(ctx).create(
        BackupRequest(BackupType.FULL, compression=codec),  # type: ignore[arg-type]
        ACTOR,
    )
    ext = "zst" if codec == "zstd" else "gz"
    tool = ["zstd", "-d", "-c", "-q"] if codec == "zstd" else ["gzip", "-d", "-c"]
    store = platform.home / "store" / bundle.bundle_prefix(str(row.id))
    manifest = json.loads((store / "manifest.json").read_text())
    parameters = {p["kind"]: p["parameters"] for p in manifest["parts"]}
    # The dump's zstd search is recorded; gzip, the files and the audit trail use the level's.
    if codec == "zstd":
        assert parameters["database"]["strategy"] == "lazy2"
        assert parameters["database"]["min_match"] == 4
    else:
        assert parameters["database"] is None
    assert parameters["files"] is None and parameters["audit"] is None

    dump = tmp_path / "database.dump"
    with dump.open("wb") as out:
        subprocess.run([*tool, str(store / f"database.dump.{ext}")], stdout=out, check=True)
    pg_restore = ctx.toolkit.find("pg_restore", manifest["source"]["server_version_num"] // 10000)
    listing = subprocess.run(
        [str(pg_restore.path), "--list", str(dump)], capture_output=True, text=True, check=True
    ).stdout
    assert "TABLE DATA public subjects" in listing

    tar_flag = "--zstd" if codec == "zstd" else "-z"
    names = subprocess.run(
        ["tar", tar_flag, "-tf", str(store / f"files.tar.{ext}")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    files = {e["path"] for e in manifest["files"]["entries"] if e["kind"] == "file"}
    assert files <= {n.rstrip("/") for n in names}

    audit = subprocess.run(
        [*tool, str(store / f"audit.jsonl.{ext}")], capture_output=True, check=True
    ).stdout
    assert all(json.loads(line)["hash"] for line in audit.splitlines())


def test_study_files_backup_holds_only_that_study(platform: Platform) -> None:
    ctx = platform.context()
    code = platform.summary.study_codes[1]
    row = BackupService(ctx).create(
        BackupRequest(BackupType.FILES, scope=Scope.STUDY, scope_ids=(code,)), ACTOR
    )
    manifest, _ = read_manifest(ctx.storage, str(row.id))
    assert manifest.files is not None
    paths = [e["path"] for e in manifest.files.entries if e["kind"] == "file"]
    assert paths
    assert all(p.startswith(f"studies/{code}/") for p in paths)
    on_disk = [p for p in (platform.files_root / "studies" / code).rglob("*") if p.is_file()]
    assert len(paths) == len(on_disk)
    assert manifest.database is None
    assert row.scope is Scope.STUDY and len(row.scope_ids) == 1


def test_bad_requests_are_refused_and_change_nothing(platform: Platform) -> None:
    ctx = platform.context()
    service = BackupService(ctx)
    with pytest.raises(InvalidInputError, match="level"):
        service.create(BackupRequest(BackupType.FULL, level=42), ACTOR)
    with pytest.raises(NotFoundError, match="no study 'STU-9999'"):
        service.create(
            BackupRequest(BackupType.FILES, scope=Scope.STUDY, scope_ids=("STU-9999",)), ACTOR
        )
    with pytest.raises(InvalidInputError, match="files backups"):
        service.create(
            BackupRequest(BackupType.DATABASE, scope=Scope.STUDY, scope_ids=("x",)), ACTOR
        )
    service.create(BackupRequest(BackupType.DATABASE, name="nightly"), ACTOR)
    with pytest.raises(ConflictError):
        service.create(BackupRequest(BackupType.DATABASE, name="nightly"), ACTOR)
    assert [r.name for r in list_backups(ctx)] == ["nightly"]


def test_failed_dump_leaves_a_failed_record_and_no_objects(platform: Platform) -> None:
    ctx = platform.context()
    with psycopg.connect(**platform.conn.psycopg_kwargs(), autocommit=True) as db:
        db.execute("CREATE TABLE locked_out (x int)")
        db.execute("CREATE ROLE cv_limited LOGIN")
        db.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO cv_limited")
        db.execute("REVOKE SELECT ON locked_out FROM cv_limited")
    limited = platform.conn.__class__(
        platform.conn.host, platform.conn.port, "cv_limited", platform.conn.database
    )
    try:
        ctx = platform.context(database_url=limited.url())
        with pytest.raises(ClinVaultError, match="permission denied"):
            BackupService(ctx).create(BackupRequest(BackupType.FULL), ACTOR)
        rows = list_backups(ctx)
        assert [r.status for r in rows] == [BackupStatus.FAILED]
        assert rows[0].error
        assert list(ctx.storage.list(bundle.bundle_prefix(str(rows[0].id)))) == []
        failures = ctx.audit.list(AuditFilter(target_id=str(rows[0].id)))
        assert any(e.outcome is AuditOutcome.FAILURE for e in failures)
    finally:
        with psycopg.connect(**platform.conn.psycopg_kwargs(), autocommit=True) as db:
            db.execute("DROP OWNED BY cv_limited")
            db.execute("DROP ROLE cv_limited")


def test_catalog_rebuilt_from_storage_lists_the_same_backups(platform: Platform) -> None:
    ctx = platform.context()
    service = BackupService(ctx)
    made = [
        service.create(BackupRequest(BackupType.FULL), ACTOR),
        service.create(BackupRequest(BackupType.FILES, compression="gzip", level=1), ACTOR),
    ]
    fresh = platform.context(catalog_url=f"sqlite:///{platform.home / 'rebuilt.db'}")
    result = platform.cli("catalog", "rebuild", "--json")
    assert json.loads(result.stdout)["unchanged"] == sorted(str(r.id) for r in made)
    from clinvault.services.maintenance import rebuild_catalog

    report = rebuild_catalog(fresh, ACTOR)
    assert sorted(report.added) == sorted(str(r.id) for r in made)
    rebuilt = {r.id: r for r in list_backups(fresh)}
    for original in made:
        copy = rebuilt[original.id]
        assert (copy.name, copy.type, copy.status, copy.checksum) == (
            original.name,
            original.type,
            BackupStatus.COMPLETED,
            original.checksum,
        )
    assert VerifyService(fresh).verify(made[1].id, ACTOR).ok


def test_cli_create_json_has_the_documented_fields(platform: Platform) -> None:
    result = platform.cli(
        "backup", "create", "--type", "database", "--name", "cli-db", "--level", "5", "--json"
    )
    data = json.loads(result.stdout)
    for key in (
        "id",
        "name",
        "type",
        "status",
        "checksum",
        "file_path",
        "file_size_bytes",
        "file_size_compressed",
        "compression_ratio",
    ):
        assert key in data
    assert data["status"] == "completed"
    assert data["compression_level"] == 5
    uuid.UUID(data["id"])
    listed = json.loads(platform.cli("backup", "list", "--json").stdout)
    assert [b["id"] for b in listed] == [data["id"]]
    shown = json.loads(platform.cli("backup", "show", "cli-db", "--json").stdout)
    assert shown["checksum"] == data["checksum"]
    missing = platform.cli("backup", "show", "nope", check=False)
    assert missing.returncode == 3
    assert "not found" in missing.stderr


def test_killed_backup_leaves_no_completed_record_and_is_cleaned_at_next_start(
    platform: Platform,
) -> None:
    import os
    import signal
    import time

    big = platform.files_root / "studies" / "zz-large.bin"
    with big.open("wb") as out:
        for _ in range(48):
            out.write(os.urandom(4 << 20))
    exe = Path(platform.cli("--version").args[0])
    proc = subprocess.Popen(
        [str(exe), "backup", "create", "--type", "full", "--level", "19"],
        env=platform.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = platform.home / "store" / "backups"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if store.exists() and any(p.is_file() for p in store.rglob("*")):
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the backup never started writing")
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    ctx = platform.context()
    rows = list_backups(ctx)
    assert [r.status for r in rows] == [BackupStatus.IN_PROGRESS]
    assert any(p.is_file() for p in store.rglob("*"))

    listed = json.loads(platform.cli("backup", "list", "--json").stdout)
    assert [b["status"] for b in listed] == ["failed"]
    assert "interrupted" in listed[0]["error"]
    assert not any(p.is_file() for p in store.rglob("*"))
    recovered = ctx.audit.list(AuditFilter(action="backup.recover"))
    assert [e.target_id for e in recovered] == [listed[0]["id"]]


def test_awkward_file_names_survive_backup_and_verify(platform: Platform) -> None:
    import os

    study_dir = platform.files_root / "studies" / platform.summary.study_codes[0]
    odd = [
        os.fsencode(study_dir) + b"/caf\xe9-latin1.txt",
        os.fsencode(study_dir) + "/Ünïcødé ☃ name.txt".encode(),
        os.fsencode(study_dir) + b"/line\nbreak.txt",
        os.fsencode(study_dir) + b"/-leading-dash",
        os.fsencode(study_dir) + b"/" + b"x" * 200 + b".dat",
    ]
    for index, name in enumerate(odd):
        with open(name, "wb") as handle:
            handle.write(f"content {index}".encode())
    ctx = platform.context()
    row = BackupService(ctx).create(BackupRequest(BackupType.FILES), ACTOR)
    manifest, _ = read_manifest(ctx.storage, str(row.id))
    assert manifest.files is not None
    stored = {os.fsencode(e["path"]) for e in manifest.files.entries}
    root = os.fsencode(platform.files_root) + b"/"
    assert {name[len(root) :] for name in odd} <= stored
    assert VerifyService(ctx).verify(row.id, ACTOR).ok


def test_cli_tells_what_a_files_backup_could_not_archive(platform: Platform) -> None:
    pipe = platform.files_root / "uploads" / "a named pipe"
    os.mkfifo(pipe)
    try:
        created = platform.cli("backup", "create", "--type", "files", "--name", "with-a-pipe")
    finally:
        pipe.unlink()
    assert "1 item(s) not archived:" in created.stderr
    assert "skipped 'uploads/a named pipe': a named pipe cannot be archived" in created.stderr
    shown = platform.cli("backup", "show", "with-a-pipe")
    assert "skipped 'uploads/a named pipe'" in shown.stdout
    data = json.loads(platform.cli("backup", "show", "with-a-pipe", "--json").stdout)
    assert data["metadata"]["file_warning_count"] == 1
    clean = platform.cli("backup", "create", "--type", "files", "--name", "without")
    assert "not archived" not in clean.stderr
