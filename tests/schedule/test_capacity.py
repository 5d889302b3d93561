"""A backup that would not fit is refused before it starts, with a message that says why."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clinvault.catalog.models import Backup, BackupStatus, BackupType, Scope
from clinvault.errors import InvalidInputError
from clinvault.services.capacity import check_free_space, storage_usage
from clinvault.services.context import ServiceContext


def _completed(ctx: ServiceContext, kind: BackupType, stored: int) -> None:
    with ctx.catalog.session() as session:
        session.add(
            Backup(
                id=uuid.uuid4(),
                name=f"{kind.value}-{uuid.uuid4().hex[:6]}",
                type=kind,
                status=BackupStatus.COMPLETED,
                compression="zstd",
                compression_level=3,
                created_by="test",
                created_at=datetime.now(UTC),
                file_size_compressed=stored,
            )
        )


def test_the_last_backup_of_the_type_sets_the_need(
    ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    _completed(ctx, BackupType.DATABASE, 800 * 1024 * 1024)
    monkeypatch.setattr(type(ctx.storage), "free_bytes", lambda self: 600 * 1024 * 1024)

    with pytest.raises(InvalidInputError) as refused:
        check_free_space(ctx, BackupType.DATABASE)

    message = refused.value.message
    assert "not enough free space" in message and "database backup" in message
    assert "1000.0 MiB needed" in message and "600.0 MiB free" in message
    assert "retention run --dry-run" in message

    monkeypatch.setattr(type(ctx.storage), "free_bytes", lambda self: 2 * 1024**3)
    estimate = check_free_space(ctx, BackupType.DATABASE)
    assert estimate is not None and estimate.bytes == 1000 * 1024 * 1024


def test_a_first_files_backup_is_estimated_from_the_files(
    make_ctx: Callable[..., ServiceContext], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = home / "platform"
    (root / "studies" / "S1").mkdir(parents=True)
    (root / "studies" / "S1" / "a.bin").write_bytes(b"x" * 3000)
    (root / "uploads").mkdir()
    (root / "uploads" / "b.bin").write_bytes(b"y" * 2000)
    ctx = make_ctx(files_root=root)
    monkeypatch.setattr(type(ctx.storage), "free_bytes", lambda self: 4000)

    with pytest.raises(InvalidInputError, match="the size of the files"):
        check_free_space(ctx, BackupType.FILES)
    assert check_free_space(ctx, BackupType.FILES, Scope.STUDY, ("S1",)) is None


def test_backends_that_cannot_tell_are_not_checked(
    make_ctx: Callable[..., ServiceContext],
) -> None:
    ctx = make_ctx(storage_url="memory://capacity")
    _completed(ctx, BackupType.FULL, 10**15)
    assert check_free_space(ctx, BackupType.FULL) is None
    assert storage_usage(ctx) is None
