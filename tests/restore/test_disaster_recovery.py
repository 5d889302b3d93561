"""The disaster-recovery playbook, followed to the letter with standard tools only.

The shell blocks marked ``<!-- playbook -->`` in ``docs/DISASTER_RECOVERY.md`` run, as
written, with a PATH that holds the system tools and ``pg_restore`` but no ClinVault, after
the platform database, its files and the catalog are gone. The result must equal the state
at backup time; then the catalog is rebuilt from storage alone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from clinvault.catalog.models import BackupType
from clinvault.engine import bundle
from clinvault.engine.pgconn import ConnInfo
from clinvault.services.backup import BackupRequest, BackupService
from clinvault.services.maintenance import rebuild_catalog
from clinvault.services.queries import list_backups
from tests.restore.conftest import ACTOR, fingerprint, tree
from tests.services.conftest import Platform

pytestmark = pytest.mark.pg

PLAYBOOK = Path(__file__).resolve().parents[2] / "docs" / "DISASTER_RECOVERY.md"
_BLOCK = re.compile(r"<!-- playbook -->\n```sh\n(.*?)```", re.DOTALL)


def playbook_script() -> str:
    blocks = _BLOCK.findall(PLAYBOOK.read_text())
    assert len(blocks) >= 3, "the playbook lost its marked steps"
    return "\n".join(blocks)


def _standard_tools_path(pg_restore: Path) -> str:
    """The system's tool directories and pg_restore's, and nothing of ClinVault's."""
    dirs = [str(pg_restore.parent)]
    for tool in ("zstd", "gzip", "tar", "sha256sum", "awk"):
        found = shutil.which(tool, path="/usr/local/bin:/usr/bin:/bin")
        assert found is not None, f"{tool} is needed by the playbook"
        dirs.append(str(Path(found).parent))
    return ":".join(dict.fromkeys(dirs))


def _lose_everything(platform: Platform, server: ConnInfo) -> None:
    with psycopg.connect(**server.psycopg_kwargs(), autocommit=True) as db:
        db.execute(f'DROP DATABASE "{platform.conn.database}" WITH (FORCE)')
    shutil.rmtree(platform.files_root)
    (platform.home / "catalog.db").unlink()


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_playbook_rebuilds_the_platform_with_standard_tools_only(
    platform: Platform, pg_server: ConnInfo, tmp_path: Path, codec: str
) -> None:
    ctx = platform.context()
    backup = BackupService(ctx).create(
        BackupRequest(BackupType.FULL, compression=codec),  # type: ignore[arg-type]
        ACTOR,
    )
    expected_database, expected_files = fingerprint(platform.conn), tree(platform.files_root)
    pg_restore = ctx.toolkit.find(
        "pg_restore", int(backup.metadata_["source"]["server_version_num"]) // 10000
    )
    _lose_everything(platform, pg_server)

    env = {
        **platform.conn.libpq_env(),
        "PATH": _standard_tools_path(pg_restore.path),
        "HOME": str(tmp_path),
        "BUNDLE": str(platform.home / "store" / bundle.bundle_prefix(str(backup.id))),
        "WORK": str(tmp_path / "dr-work"),
        "FILES_ROOT": str(platform.files_root),
    }
    env.pop("PGDATABASE")
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", playbook_script()],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr

    assert fingerprint(platform.conn) == expected_database
    assert tree(platform.files_root) == expected_files
    ext = "zst" if codec == "zstd" else "gz"
    lines = run.stdout.splitlines()
    for checked in ("database.dump", "files.tar", "audit.jsonl"):
        assert f"{checked}.{ext}: OK" in lines
    assert f"{tmp_path / 'dr-work' / 'database.dump'}: OK" in lines
    assert f"files: OK ({platform.summary.file_count} files)" in lines
    assert (tmp_path / "dr-work" / "audit.jsonl").read_text().strip()

    rebuilt = platform.context()  # a new, empty catalog at the same place
    report = rebuild_catalog(rebuilt, ACTOR)
    assert report.added == [str(backup.id)]
    assert [(b.name, b.checksum) for b in list_backups(rebuilt)] == [(backup.name, backup.checksum)]
