"""File restore engine: verified extraction, refusal of hostile archives, directory swap."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clinvault.engine import bundle
from clinvault.engine.archive import FileEntry, plan_files, write_files_archive
from clinvault.engine.compression import Codec
from clinvault.engine.filerestore import (
    SwapRecord,
    check_tree,
    extract_entries,
    extract_part,
    safe_member_path,
    swap_directories,
    undo_swap,
)
from clinvault.engine.manifest import PartInfo
from clinvault.errors import IntegrityError, InvalidInputError
from clinvault.storage import MemoryStorage, Storage

BACKUP_ID = str(uuid.UUID(int=7))
TOOL = {"zstd": ["zstd", "-q", "-c"], "gzip": ["gzip", "-c"]}


class CountingStorage(MemoryStorage):
    """Memory storage that counts the bytes handed out, to prove partial reads."""

    served = 0

    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        for chunk in super().read(key, offset, length):
            self.served += len(chunk)
            yield chunk


def _tree(root: Path) -> Path:
    (root / "studies" / "STU-0001" / "docs").mkdir(parents=True)
    (root / "studies" / "STU-0002").mkdir(parents=True)
    (root / "uploads").mkdir()
    for i in range(6):
        (root / "studies" / "STU-0001" / "docs" / f"f{i}.bin").write_bytes(os.urandom(40_000))
    (root / "studies" / "STU-0002" / "notes.txt").write_text("second study\n" * 500)
    (root / "uploads" / "run.sh").write_text("#!/bin/sh\necho ok\n")
    (root / "uploads" / "run.sh").chmod(0o750)
    (root / "studies" / "STU-0001" / "latest").symlink_to("docs/f5.bin")
    (root / "studies" / "STU-0002").chmod(0o750)
    os.utime(root / "uploads" / "run.sh", ns=(1_600_000_000_123_456_789,) * 2)
    return root


def _archive(
    storage: MemoryStorage, root: Path, codec: Codec = "zstd"
) -> tuple[PartInfo, list[FileEntry]]:
    plan = plan_files(root, ["studies", "uploads"])
    name = bundle.part_name("files", codec)
    with storage.writer(bundle.object_key(BACKUP_ID, name)) as sink:
        result = write_files_archive(plan, sink, codec, None, frame_target=32 << 10)
    part = PartInfo(
        name=name,
        kind="files",
        codec=codec,
        level=3 if codec == "zstd" else 6,
        size=result.size,
        compressed_size=result.compressed_size,
        sha256=result.sha256,
        raw_sha256=result.raw_sha256,
    )
    return part, result.entries


def _snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    found: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        info = path.lstat()
        if path.is_symlink():
            found[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            found[rel] = ("dir", info.st_mode & 0o7777)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[rel] = ("file", info.st_mode & 0o7777, info.st_mtime_ns // 1000, digest)
    return found


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_whole_part_extraction_reproduces_the_tree(tmp_path: Path, codec: Codec) -> None:
    source = _tree(tmp_path / "source")
    storage = MemoryStorage()
    part, entries = _archive(storage, source, codec)
    progress: list[int] = []
    result = extract_part(
        storage, BACKUP_ID, part, entries, tmp_path / "staged", on_bytes=progress.append
    )
    assert _snapshot(tmp_path / "staged") == _snapshot(source)
    assert (result.files, result.symlinks) == (8, 1)
    assert result.bytes == sum(progress) == sum(e.size for e in entries)
    assert check_tree(tmp_path / "staged", entries, ["studies", "uploads"]).problems == []


def test_a_small_subset_reads_only_its_own_frames(tmp_path: Path) -> None:
    source = _tree(tmp_path / "source")
    storage = CountingStorage()
    part, entries = _archive(storage, source)
    wanted = [e for e in entries if e.path.startswith("studies/STU-0002")]
    storage.served = 0
    result = extract_entries(storage, BACKUP_ID, part, wanted, tmp_path / "staged")
    assert result.files == 1 and result.dirs == 1
    assert storage.served < part.compressed_size / 2
    staged = tmp_path / "staged" / "studies" / "STU-0002"
    assert (staged / "notes.txt").read_text() == "second study\n" * 500
    assert staged.stat().st_mode & 0o777 == 0o750
    assert not (tmp_path / "staged" / "studies" / "STU-0001").exists()


def test_a_large_subset_streams_the_part_once_and_skips_the_rest(tmp_path: Path) -> None:
    source = _tree(tmp_path / "source")
    storage = CountingStorage()
    part, entries = _archive(storage, source)
    wanted = [e for e in entries if e.path.startswith("studies/STU-0001")]
    storage.served = 0
    extract_entries(storage, BACKUP_ID, part, wanted, tmp_path / "staged")
    assert storage.served == part.compressed_size
    assert (tmp_path / "staged" / "studies" / "STU-0001" / "latest").is_symlink()
    assert not (tmp_path / "staged" / "uploads").exists()


def test_a_file_that_does_not_match_its_sha256_is_refused(tmp_path: Path) -> None:
    source = _tree(tmp_path / "source")
    storage = MemoryStorage()
    part, entries = _archive(storage, source)
    forged = [
        FileEntry(**{**e.to_json(), "sha256": "0" * 64})  # type: ignore[arg-type]
        if e.path.endswith("notes.txt")
        else e
        for e in entries
    ]
    with pytest.raises(IntegrityError, match=r"notes.txt.*SHA-256"):
        extract_part(storage, BACKUP_ID, part, forged, tmp_path / "staged")
    with pytest.raises(IntegrityError, match="SHA-256"):
        subset = [e for e in forged if e.path.endswith("notes.txt")]
        extract_entries(storage, BACKUP_ID, part, subset, tmp_path / "staged2")


# --- hostile archives ----------------------------------------------------------------------


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_700_000_000
    return info, data


def hostile_part(
    storage: Storage, members: list[tuple], codec: Codec, backup_id: str = BACKUP_ID
) -> tuple[PartInfo, list[FileEntry]]:
    """A tar built with Python's tarfile and compressed by the real zstd/gzip, with an index
    that agrees with it (an attacker controls both)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    packed = subprocess.run(TOOL[codec], input=raw.getvalue(), capture_output=True, check=True)
    name = bundle.part_name("files", codec)
    storage.write_bytes(bundle.object_key(backup_id, name), packed.stdout)
    with tarfile.open(fileobj=io.BytesIO(raw.getvalue())) as tar:
        offsets = [m.offset for m in tar.getmembers()]
    entries = []
    for (info, data), offset in zip(members, offsets, strict=True):
        kind = "dir" if info.isdir() else "symlink" if info.issym() else "file"
        entries.append(
            FileEntry(
                path=info.name,
                kind=kind,
                size=len(data),
                mode=info.mode,
                mtime=float(info.mtime),
                sha256=hashlib.sha256(data).hexdigest() if kind == "file" else None,
                link_target=info.linkname or None,
                tar_offset=offset,
                frame_offset=0,
                frame_member_offset=offset,
            )
        )
    part = PartInfo(
        name=name,
        kind="files",
        codec=codec,
        level=3,
        size=len(raw.getvalue()),
        compressed_size=len(packed.stdout),
        sha256=hashlib.sha256(packed.stdout).hexdigest(),
        raw_sha256=hashlib.sha256(raw.getvalue()).hexdigest(),
    )
    return part, entries


HOSTILE = {
    "dotdot": [member("studies", tarfile.DIRTYPE), member("studies/../../evil.txt", data=b"x")],
    "absolute": [member("/tmp/clinvault-evil-abs.txt", data=b"x")],
    "write-through-symlink": [
        member("studies", tarfile.DIRTYPE),
        member("studies/out", tarfile.SYMTYPE, link="../.."),
        member("studies/out/evil.txt", data=b"x"),
    ],
    "device": [member("studies/null", tarfile.CHRTYPE)],
    "fifo": [member("studies/pipe", tarfile.FIFOTYPE)],
    "hardlink": [member("studies/passwd", tarfile.LNKTYPE, link="/etc/passwd")],
    "write-through-absolute-symlink": [
        member("studies", tarfile.DIRTYPE),
        member("studies/etc", tarfile.SYMTYPE, link="/tmp"),
        member("studies/etc/clinvault-evil.txt", data=b"x"),
    ],
}


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_and_nothing_lands_outside(
    tmp_path: Path, case: str, codec: Codec
) -> None:
    storage = MemoryStorage()
    part, entries = hostile_part(storage, HOSTILE[case], codec)
    target = tmp_path / "jail" / "staging"
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(IntegrityError, match="refused"):
        extract_part(storage, BACKUP_ID, part, entries, target)
    with pytest.raises(IntegrityError, match=r"refused|not the indexed file"):
        extract_entries(storage, BACKUP_ID, part, entries, tmp_path / "jail" / "again")
    written = [p for p in tmp_path.rglob("*") if p not in before]
    assert all(p.is_relative_to(tmp_path / "jail") for p in written), written
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/clinvault-evil-abs.txt").exists()
    assert not Path("/tmp/clinvault-evil.txt").exists()
    assert not any(p.name == "evil.txt" for p in written)


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_links_pointing_outside_come_back_as_links_and_nothing_is_written_through_them(
    tmp_path: Path, codec: Codec
) -> None:
    """An absolute link, or one that climbs out of the tree, is the platform's own data: it
    is restored as the link it was, after every file, and never followed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    storage = MemoryStorage()
    part, entries = hostile_part(
        storage,
        [
            member("studies", tarfile.DIRTYPE),
            member("studies/a.txt", data=b"kept"),
            member("studies/etc", tarfile.SYMTYPE, link=str(outside)),
            member("studies/up", tarfile.SYMTYPE, link="../../outside"),
        ],
        codec,
    )
    for extract, target in ((extract_part, "whole"), (extract_entries, "some")):
        root = tmp_path / "jail" / target
        result = extract(storage, BACKUP_ID, part, entries, root)

        assert result.symlinks == 2
        assert os.readlink(root / "studies" / "etc") == str(outside)
        assert os.readlink(root / "studies" / "up") == "../../outside"
        assert (root / "studies" / "a.txt").read_bytes() == b"kept"
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../x", "a/../../x", "a/b/../../../x", "", "a/\x00b", "."]
)
def test_safe_member_path_refuses_escaping_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(IntegrityError):
        safe_member_path(tmp_path, name)


def test_safe_member_path_refuses_a_path_through_an_existing_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert safe_member_path(tmp_path, "./real/a.txt") == tmp_path / "real" / "a.txt"
    with pytest.raises(IntegrityError, match="symbolic link 'link'"):
        safe_member_path(tmp_path, "link/a.txt")


# --- the swap ------------------------------------------------------------------------------


def _live_and_staged(tmp_path: Path) -> tuple[Path, Path, Path]:
    live = tmp_path / "platform"
    (live / "studies" / "S1").mkdir(parents=True)
    (live / "studies" / "S1" / "old.txt").write_text("old")
    (live / "uploads").mkdir()
    (live / "uploads" / "u.txt").write_text("old upload")
    staged = tmp_path / "work" / "staging"
    (staged / "studies" / "S1").mkdir(parents=True)
    (staged / "studies" / "S1" / "new.txt").write_text("new")
    (staged / "extra").mkdir()
    return live, staged, tmp_path / "work" / "checkpoint"


def test_swap_moves_live_to_checkpoint_and_undo_puts_it_back(tmp_path: Path) -> None:
    live, staged, checkpoint = _live_and_staged(tmp_path)
    before = _snapshot(live)
    record = swap_directories(live, staged, ["studies", "uploads", "extra"], checkpoint)
    assert (live / "studies" / "S1" / "new.txt").read_text() == "new"
    assert not (live / "uploads").exists()  # the backup had no uploads
    assert (live / "extra").is_dir()
    assert (checkpoint / "studies" / "S1" / "old.txt").read_text() == "old"
    assert (checkpoint / "uploads" / "u.txt").read_text() == "old upload"

    saved = SwapRecord.from_json(record.to_json())  # as recovery in another process sees it
    undo_swap(saved)
    assert _snapshot(live) == before
    undo_swap(saved)  # idempotent
    assert _snapshot(live) == before
    assert (staged / "studies" / "S1" / "new.txt").read_text() == "new"


def test_a_swap_failing_part_way_leaves_the_live_tree_as_it_was(tmp_path: Path) -> None:
    live, staged, checkpoint = _live_and_staged(tmp_path)
    before = _snapshot(live)
    (live / "more" / "uploads").mkdir(parents=True)
    (live / "more" / "uploads" / "m.txt").write_text("more")
    before = _snapshot(live)
    checkpoint.mkdir(parents=True)
    (checkpoint / "more").write_text("a file where the second move needs a directory")
    with pytest.raises(OSError):
        swap_directories(live, staged, ["studies", "more/uploads"], checkpoint)
    assert _snapshot(live) == before
    assert (staged / "studies" / "S1" / "new.txt").exists()


def test_a_swap_refuses_a_checkpoint_that_already_holds_the_directory(tmp_path: Path) -> None:
    live, staged, checkpoint = _live_and_staged(tmp_path)
    before = _snapshot(live)
    (checkpoint / "uploads").mkdir(parents=True)
    with pytest.raises(InvalidInputError, match="already holds"):
        swap_directories(live, staged, ["studies", "uploads"], checkpoint)
    assert _snapshot(live) == before


def test_nested_study_directory_swap(tmp_path: Path) -> None:
    live, staged, checkpoint = _live_and_staged(tmp_path)
    (live / "studies" / "S2").mkdir()
    (live / "studies" / "S2" / "keep.txt").write_text("untouched")
    swap_directories(live, staged, ["studies/S1"], checkpoint)
    assert (live / "studies" / "S1" / "new.txt").exists()
    assert (live / "studies" / "S2" / "keep.txt").read_text() == "untouched"
    assert (checkpoint / "studies" / "S1" / "old.txt").read_text() == "old"


def test_swap_refuses_overlapping_dirs_and_another_filesystem(tmp_path: Path) -> None:
    live, staged, checkpoint = _live_and_staged(tmp_path)
    with pytest.raises(InvalidInputError, match="overlap"):
        swap_directories(live, staged, ["studies", "studies/S1"], checkpoint)
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem to test with")
    elsewhere = shm / f"clinvault-test-{uuid.uuid4().hex}"
    try:
        with pytest.raises(InvalidInputError, match="same filesystem"):
            swap_directories(live, staged, ["studies"], elsewhere)
        assert (live / "studies" / "S1" / "old.txt").exists()
    finally:
        if elsewhere.exists():
            elsewhere.rmdir()


def test_check_tree_finds_changed_missing_and_extra_files(tmp_path: Path) -> None:
    source = _tree(tmp_path / "source")
    storage = MemoryStorage()
    _part, entries = _archive(storage, source)
    assert check_tree(source, entries, ["studies", "uploads"]).problems == []
    (source / "uploads" / "run.sh").write_text("#!/bin/sh\necho KO\n")
    (source / "studies" / "STU-0002" / "notes.txt").unlink()
    (source / "uploads" / "new.txt").write_text("x")
    problems = check_tree(source, entries, ["studies", "uploads"]).problems
    assert any("run.sh" in p and "SHA-256" in p for p in problems)
    assert any("notes.txt" in p and "not on disk" in p for p in problems)
    assert any("new.txt" in p and "not in the backup" in p for p in problems)
