"""The files part: read by the standard tools, indexed by frame, verified, reproducible."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import tarfile
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clinvault.engine.archive import (
    ArchiveResult,
    FileEntry,
    UnreadableFileError,
    iter_archive,
    plan_files,
    read_member,
    verify_files_archive,
    write_files_archive,
)
from clinvault.engine.compression import Codec, StreamDecompressor, compress_frame, suffix
from clinvault.errors import (
    CancelledError,
    ClinVaultError,
    FormatError,
    IntegrityError,
    InvalidInputError,
)

CODECS: list[Codec] = ["zstd", "gzip"]
TAR_FLAG = {"zstd": "--zstd", "gzip": "--gzip"}
FRAME = 64 << 10  # small frames, so a modest tree has shared frames and a split member
BIG = "studies/STU-0001/scan.bin"
BAD_DIR = b"studies/STU-0001/bad-\xff\xfe name"
LONG_DIR = "studies/STU-0001/" + "d" * 120
LONG_FILE = LONG_DIR + "/" + "f" * 200 + ".csv"


# --- helpers -------------------------------------------------------------------------------


def _put(root: Path, relative: str | bytes, data: bytes, mode: int = 0o644) -> None:
    path = os.path.join(os.fsencode(root), os.fsencode(relative))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)
    os.chmod(path, mode)


def _odd_tree(tmp_path: Path) -> Path:
    """Every kind of name and entry the archive must carry through a standard tar."""
    root = tmp_path / "files"
    study = "studies/STU-0001"
    _put(root, f"{study}/visits/subject 1.csv", b"subject,visit\n1,2\n" * 50)
    _put(root, f"{study}/ünïcödé résumé.txt", "données cliniques\n".encode() * 20)
    _put(root, f"{study}/new\nline.txt", b"newline in the name")
    _put(root, f"{study}/-leading-dash.csv", b"-x,-y\n")
    _put(root, LONG_FILE, b"a very long path\n")
    _put(root, BAD_DIR + b"/\xe9t\xe9.bin", b"latin-1 names on disk")
    _put(root, f"{study}/private.csv", b"secret,1\n", mode=0o600)
    _put(root, f"{study}/empty.txt", b"")
    for i in range(30):
        _put(root, f"{study}/many/row-{i:03d}.csv", os.urandom(1000) + b"%d\n" % i * 2000)
    _put(root, BIG, os.urandom(5 * FRAME + 123))
    (root / study / "empty-dir").mkdir()
    (root / study / "many").chmod(0o750)
    org = root / "uploads" / "ORG-0001"
    _put(root, "uploads/ORG-0001/report.pdf", os.urandom(10_000))
    os.link(org / "report.pdf", org / "hardlink.pdf")
    (org / "link-inside").symlink_to("../../studies/STU-0001/private.csv")
    (org / "link-outside").symlink_to("/etc/passwd")
    (org / "dangling").symlink_to("does/not/exist")
    os.mkfifo(org / "pipe")
    os.utime(
        root / study / "private.csv", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789)
    )
    return root


def _snapshot(root: Path) -> dict[bytes, tuple[object, ...]]:
    """Everything extraction must reproduce: kinds, modes, bytes, link targets, file mtimes."""
    found: dict[bytes, tuple[object, ...]] = {}
    base = os.fsencode(root)
    for directory, dirs, files in os.walk(base):
        for name in dirs + files:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, base)
            info = os.lstat(path)
            if os.path.islink(path):
                found[relative] = ("symlink", os.readlink(path))
            elif os.path.isdir(path):
                found[relative] = ("dir", info.st_mode & 0o7777)
            elif os.path.isfile(path):
                content = Path(os.fsdecode(path)).read_bytes()
                found[relative] = ("file", info.st_mode & 0o7777, info.st_mtime_ns, content)
    return found


def _write(
    tmp_path: Path,
    root: Path,
    selections: list[str],
    codec: Codec,
    name: str = "files",
    *,
    frame_target: int = FRAME,
    threads: int = 2,
    on_progress: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[Path, ArchiveResult]:
    plan = plan_files(root, selections)
    target = tmp_path / f"{name}.tar{suffix(codec)}"
    with target.open("wb") as sink:
        result = write_files_archive(
            plan,
            sink,
            codec,
            None,
            frame_target=frame_target,
            threads=threads,
            on_progress=on_progress,
            cancel=cancel,
        )
    return target, result


def _tar(codec: Codec, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "LC_ALL": "C"}
    return subprocess.run(["tar", TAR_FLAG[codec], *args], capture_output=True, env=env)


def _listing(codec: Codec, archive: Path) -> list[bytes]:
    """Member names as GNU tar lists them, decoded from its C-style quoting."""
    run = _tar(codec, "-tf", str(archive), "--quoting-style=c")
    assert run.returncode == 0, run.stderr
    return [ast.literal_eval("b" + line) for line in run.stdout.decode("ascii").splitlines()]


def _tar_name(entry: FileEntry) -> bytes:
    return os.fsencode(entry.path) + (b"/" if entry.kind == "dir" else b"")


class _Ranges:
    """A ``read_range`` over bytes in memory that records what was asked and served."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[int, int | None]] = []
        self.served = 0

    def __call__(self, offset: int, length: int | None) -> Iterator[bytes]:
        self.calls.append((offset, length))
        return self._serve(offset)

    def _serve(self, offset: int) -> Iterator[bytes]:
        for start in range(offset, len(self.data), 16_384):
            chunk = self.data[start : start + 16_384]
            self.served += len(chunk)
            yield chunk


def _entry(result: ArchiveResult, path: str) -> FileEntry:
    return next(entry for entry in result.entries if entry.path == path)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return _odd_tree(tmp_path)


# --- the standard tools read it ------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_standard_tar_extracts_the_tree_exactly(tmp_path: Path, tree: Path, codec: Codec) -> None:
    archive, result = _write(tmp_path, tree, ["studies", "uploads"], codec)
    target = tmp_path / "extracted"
    target.mkdir()

    run = _tar(codec, "-xf", str(archive), "-C", str(target))

    assert run.returncode == 0
    assert run.stderr == b""  # not even a warning about the non-UTF-8 name
    assert _snapshot(target) == _snapshot(tree)  # the named pipe is not in either
    assert result.warnings == ["skipped 'uploads/ORG-0001/pipe': a named pipe cannot be archived"]


@pytest.mark.parametrize("codec", CODECS)
def test_tar_lists_every_entry_in_index_order(tmp_path: Path, tree: Path, codec: Codec) -> None:
    archive, result = _write(tmp_path, tree, ["studies", "uploads"], codec)

    assert _listing(codec, archive) == [_tar_name(entry) for entry in result.entries]
    paths = {os.fsencode(entry.path) for entry in result.entries}
    assert paths == set(_snapshot(tree))
    assert (result.file_count, result.dir_count, result.symlink_count) == (41, 9, 3)
    assert _entry(result, "uploads/ORG-0001/hardlink.pdf").kind == "file"  # not a hard link


def test_python_tarfile_reads_the_same_members(tmp_path: Path, tree: Path) -> None:
    archive, result = _write(tmp_path, tree, ["studies", "uploads"], "gzip")
    with tarfile.open(archive, "r:gz", encoding="utf-8", errors="surrogateescape") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [entry.path for entry in result.entries]
    assert [m.size for m in members] == [entry.size for entry in result.entries]
    private = next(m for m in members if m.name == "studies/STU-0001/private.csv")
    assert private.mtime == pytest.approx(1_700_000_000.123456789)


@pytest.mark.parametrize("codec", CODECS)
def test_result_sizes_and_hashes_describe_the_object(
    tmp_path: Path, tree: Path, codec: Codec
) -> None:
    archive, result = _write(tmp_path, tree, ["studies", "uploads"], codec)
    stored = archive.read_bytes()
    raw = subprocess.run(
        ["zstd" if codec == "zstd" else "gzip", "-dc", str(archive)],
        capture_output=True,
        check=True,
    ).stdout

    assert result.compressed_size == len(stored)
    assert result.sha256 == hashlib.sha256(stored).hexdigest()
    assert result.size == len(raw)
    assert result.raw_sha256 is None  # members and frames carry their own checks
    assert raw.endswith(bytes(1024)) and len(raw) % 10_240 == 0
    for entry in result.entries:
        if entry.kind == "file":
            content = Path(os.fsdecode(os.path.join(os.fsencode(tree), os.fsencode(entry.path))))
            assert entry.sha256 == hashlib.sha256(content.read_bytes()).hexdigest()


# --- frames and the index -------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_frames_start_only_at_members_and_a_big_member_has_frames_of_its_own(
    tmp_path: Path, tree: Path, codec: Codec
) -> None:
    archive, result = _write(tmp_path, tree, ["studies", "uploads"], codec)
    decoder = StreamDecompressor(codec)
    for _ in decoder.feed(archive.read_bytes()):
        pass
    decoder.finish()
    starts = {start.raw_offset for start in decoder.frame_starts}
    big = _entry(result, BIG)
    big_end = big.tar_offset + 3 * 512 + big.size  # PAX header, header, content

    assert len(decoder.frame_starts) == result.frame_count
    assert {entry.tar_offset - entry.frame_member_offset for entry in result.entries} <= starts
    for raw_offset in starts:
        inside_big = big.tar_offset < raw_offset < big_end
        assert inside_big or raw_offset in {entry.tar_offset for entry in result.entries}
    assert big.frame_member_offset == 0
    assert [e.path for e in result.entries if e.frame_offset == big.frame_offset] == [BIG]
    assert sum(big.tar_offset < s < big_end for s in starts) >= 4
    shared = [e for e in result.entries if e.frame_member_offset > 0]
    assert len(shared) > 20


@pytest.mark.parametrize("codec", CODECS)
def test_read_member_reads_only_from_its_frame(tmp_path: Path, tree: Path, codec: Codec) -> None:
    archive, result = _write(tmp_path, tree, ["studies", "uploads"], codec)
    data = archive.read_bytes()
    frame_offsets = sorted({entry.frame_offset for entry in result.entries})
    middle = next(
        entry
        for entry in result.entries
        if entry.kind == "file"
        and entry.frame_member_offset > 0
        and entry.size > 0
        # another member follows it in the same frame
        and any(
            o.frame_offset == entry.frame_offset and o.tar_offset > entry.tar_offset
            for o in result.entries
        )
    )
    others = [
        BIG,
        os.fsdecode(BAD_DIR + b"/\xe9t\xe9.bin"),
        LONG_FILE,
        "studies/STU-0001/empty.txt",
    ]

    for entry in [middle, *(_entry(result, path) for path in others)]:
        ranges = _Ranges(data)
        content = b"".join(read_member(ranges, codec, entry))

        on_disk = os.path.join(os.fsencode(tree), os.fsencode(entry.path))
        assert content == Path(os.fsdecode(on_disk)).read_bytes()
        assert ranges.calls == [(entry.frame_offset, None)]
        if entry is middle:
            frame_end = min(o for o in [*frame_offsets, len(data)] if o > entry.frame_offset)
            assert ranges.served <= frame_end - entry.frame_offset + 16_384
            assert ranges.served < len(data) // 4


@pytest.mark.parametrize("codec", CODECS)
def test_read_member_refuses_an_index_that_does_not_match(
    tmp_path: Path, tree: Path, codec: Codec
) -> None:
    archive, result = _write(tmp_path, tree, ["studies"], codec)
    data = archive.read_bytes()
    entry = _entry(result, "studies/STU-0001/private.csv")

    shifted = dataclasses.replace(entry, frame_member_offset=entry.frame_member_offset + 512)
    with pytest.raises(IntegrityError):
        b"".join(read_member(_Ranges(data), codec, shifted))
    neighbour = dataclasses.replace(entry, path="studies/STU-0001/other.csv")
    with pytest.raises(IntegrityError, match=re.escape("points 'studies/STU-0001/other.csv' at")):
        b"".join(read_member(_Ranges(data), codec, neighbour))
    wrong_hash = dataclasses.replace(entry, sha256="0" * 64)
    with pytest.raises(IntegrityError, match="does not match its SHA-256"):
        b"".join(read_member(_Ranges(data), codec, wrong_hash))
    with pytest.raises(InvalidInputError, match="not a file"):
        read_member(_Ranges(data), codec, _entry(result, "studies"))


def test_iter_archive_walks_every_member_and_skips_unread_content(
    tmp_path: Path, tree: Path
) -> None:
    archive, result = _write(tmp_path, tree, ["studies", "uploads"], "zstd")
    seen: list[str] = []
    big_content = b""
    for info, content in iter_archive([archive.read_bytes()], "zstd"):
        seen.append(info.name)
        assert (content is None) == (not info.isreg())
        if info.name == BIG and content is not None:
            big_content = b"".join(content)
        elif content is not None and info.size > 1000:
            next(content)  # read a little, leave the rest
    assert seen == [entry.path for entry in result.entries]
    assert big_content == (tree / BIG).read_bytes()


def test_iter_archive_refuses_a_tar_without_end_marker() -> None:
    info = tarfile.TarInfo("a.txt")
    info.size = 3
    raw = info.tobuf(tarfile.PAX_FORMAT) + b"abc" + bytes(509)
    with pytest.raises(FormatError, match="no end-of-archive marker"):
        list(iter_archive([compress_frame(raw, "zstd", 3)], "zstd"))


# --- verification ----------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_verify_passes_a_good_archive_and_reports_progress(
    tmp_path: Path, tree: Path, codec: Codec
) -> None:
    archive, result = _write(tmp_path, tree, ["studies", "uploads"], codec)
    steps: list[int] = []

    problems = verify_files_archive(
        [archive.read_bytes()],
        codec,
        result.entries,
        steps.append,
        expected_sha256=result.sha256,
        expected_raw_sha256=result.raw_sha256,
    )

    assert problems == []
    assert sum(steps) == sum(entry.size for entry in result.entries)


@pytest.mark.parametrize("codec", CODECS)
def test_verify_detects_a_flipped_byte(tmp_path: Path, tree: Path, codec: Codec) -> None:
    archive, result = _write(tmp_path, tree, ["studies", "uploads"], codec)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01

    problems = verify_files_archive([bytes(data)], codec, result.entries)

    assert problems
    assert problems[0].startswith("the archive is damaged")


@pytest.mark.parametrize("codec", CODECS)
def test_verify_detects_index_mismatches(tmp_path: Path, tree: Path, codec: Codec) -> None:
    archive, result = _write(tmp_path, tree, ["studies"], codec)
    data = archive.read_bytes()
    private = _entry(result, "studies/STU-0001/private.csv")
    ghost = dataclasses.replace(private, path="studies/STU-0001/ghost.csv")
    entries = [
        dataclasses.replace(e, sha256="0" * 64) if e == private else e
        for e in result.entries
        if e.path != "studies/STU-0001/empty.txt"
    ]

    problems = verify_files_archive([data], codec, [*entries, ghost], expected_sha256="f" * 64)

    assert problems == [
        "'studies/STU-0001/empty.txt' is in the archive but not in the index",
        "'studies/STU-0001/private.csv': content does not match its SHA-256",
        "'studies/STU-0001/ghost.csv' is in the index but missing from the archive",
        "the SHA-256 of the stored archive does not match",
    ]


def test_verify_detects_a_frame_offset_that_leads_elsewhere(tmp_path: Path, tree: Path) -> None:
    archive, result = _write(tmp_path, tree, ["studies"], "zstd")
    target = max(
        (e for e in result.entries if e.frame_member_offset > 0), key=lambda e: e.frame_offset
    )
    assert target.frame_offset > 0
    moved = [dataclasses.replace(e, frame_offset=0) if e == target else e for e in result.entries]

    problems = verify_files_archive([archive.read_bytes()], "zstd", moved)

    assert problems == [f"{target.path!r}: the index's frame offset 0 does not lead to this member"]


# --- selections ------------------------------------------------------------------------------


def _study_tree(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    _put(root, "studies/STU-0001/a.csv", b"a")
    _put(root, "studies/STU-0001/sub/b.csv", b"b")
    _put(root, "studies/STU-0002/c.csv", b"c")
    _put(root, "uploads/ORG-0001/d.pdf", b"d")
    _put(root, "top.txt", b"t")
    return root


def test_one_study_selection_brings_its_parents_and_nothing_else(tmp_path: Path) -> None:
    root = _study_tree(tmp_path)
    expected = [
        "studies",
        "studies/STU-0001",
        "studies/STU-0001/a.csv",
        "studies/STU-0001/sub",
        "studies/STU-0001/sub/b.csv",
    ]

    plan = plan_files(root, ["studies/STU-0001", "./studies/STU-0001/"])
    archive, result = _write(tmp_path, root, ["studies/STU-0001"], "zstd")

    assert [item.path for item in plan.items] == expected
    assert plan.total_bytes == 2
    assert [entry.path for entry in result.entries] == expected
    assert _listing("zstd", archive) == [_tar_name(entry) for entry in result.entries]


def test_whole_root_selection(tmp_path: Path) -> None:
    root = _study_tree(tmp_path)
    paths = [item.path for item in plan_files(root, ["."]).items]
    assert paths[0] == "studies" and paths[-1] == "uploads/ORG-0001/d.pdf"
    assert "top.txt" in paths and len(paths) == 11


@pytest.mark.parametrize(
    "selection", ["../outside", "/etc", "studies/../../x", "studies/..", "", "a\0b"]
)
def test_selections_escaping_the_root_are_refused(tmp_path: Path, selection: str) -> None:
    with pytest.raises(InvalidInputError):
        plan_files(_study_tree(tmp_path), ["studies", selection])


def test_selection_through_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    root = _study_tree(tmp_path)
    (root / "linked").symlink_to(tmp_path)
    with pytest.raises(InvalidInputError, match="symbolic link 'linked'"):
        plan_files(root, ["linked/files"])
    with pytest.raises(InvalidInputError, match="list of paths"):
        plan_files(root, "studies")


def test_missing_selection_is_a_warning(tmp_path: Path) -> None:
    root = _study_tree(tmp_path)
    archive, result = _write(tmp_path, root, ["studies/STU-9999"], "gzip")
    assert result.entries == []
    assert result.warnings == ["file selection 'studies/STU-9999' does not exist; nothing archived"]
    assert result.frame_count == 1
    assert _listing("gzip", archive) == []


# --- reproducibility, change, failure ------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_same_tree_gives_identical_bytes(tmp_path: Path, tree: Path, codec: Codec) -> None:
    first, first_result = _write(tmp_path, tree, ["studies", "uploads"], codec, "one")
    second, second_result = _write(tmp_path, tree, ["uploads", "studies"], codec, "two", threads=3)
    assert first.read_bytes() == second.read_bytes()
    assert first_result == second_result


def test_vanished_file_is_skipped_before_its_header(tmp_path: Path) -> None:
    root = _study_tree(tmp_path)
    plan = plan_files(root, ["studies"])
    (root / "studies/STU-0001/a.csv").unlink()
    target = tmp_path / "files.tar.zst"
    with target.open("wb") as sink:
        result = write_files_archive(plan, sink, "zstd", 3)

    assert "studies/STU-0001/a.csv" not in [entry.path for entry in result.entries]
    assert b"studies/STU-0001/a.csv" not in _listing("zstd", target)
    assert result.warnings == [
        "skipped 'studies/STU-0001/a.csv': it vanished before it could be archived"
    ]
    assert verify_files_archive([target.read_bytes()], "zstd", result.entries) == []


def _change_during_first_read(monkeypatch: pytest.MonkeyPatch, path: Path, change: str) -> None:
    """Shrink or grow ``path`` right after the archiver's first read of it."""
    real_read, inode = os.read, path.stat().st_ino
    changed = threading.Event()

    def read(fd: int, size: int) -> bytes:
        data = real_read(fd, size)
        if not changed.is_set() and os.fstat(fd).st_ino == inode:
            changed.set()
            if change == "shrink":
                os.truncate(path, 3 << 19)
            else:
                with path.open("ab") as out:
                    out.write(b"appended")
        return data

    monkeypatch.setattr(os, "read", read)


@pytest.mark.parametrize("frame_target", [FRAME, 8 << 20])
def test_file_that_shrinks_while_read_is_padded_with_zeros(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frame_target: int
) -> None:
    root = tmp_path / "files"
    original = os.urandom(3 << 20)
    _put(root, "studies/scan.bin", original)
    _change_during_first_read(monkeypatch, root / "studies/scan.bin", "shrink")

    archive, result = _write(tmp_path, root, ["studies"], "zstd", frame_target=frame_target)

    archived = original[: 3 << 19] + bytes(3 << 19)
    entry = _entry(result, "studies/scan.bin")
    assert entry.size == len(original)
    assert entry.sha256 == hashlib.sha256(archived).hexdigest()
    assert b"".join(read_member(_Ranges(archive.read_bytes()), "zstd", entry)) == archived
    assert result.warnings == [
        f"'studies/scan.bin' shrank while being read: its last {3 << 19} bytes were "
        "archived as zeros"
    ]


def test_file_that_grows_while_read_is_cut_at_its_announced_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "files"
    original = os.urandom(3 << 20)
    _put(root, "studies/scan.bin", original)
    _change_during_first_read(monkeypatch, root / "studies/scan.bin", "grow")

    archive, result = _write(tmp_path, root, ["studies"], "gzip")

    entry = _entry(result, "studies/scan.bin")
    assert (entry.size, entry.sha256) == (len(original), hashlib.sha256(original).hexdigest())
    assert result.warnings == ["'studies/scan.bin' changed while being read: archived as read"]
    assert verify_files_archive([archive.read_bytes()], "gzip", result.entries) == []


def test_unreadable_file_fails_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _study_tree(tmp_path)
    real_open = os.open

    def deny(path: str, flags: int, *args: int, **kwargs: int) -> int:
        if str(path).endswith("sub/b.csv"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(
        UnreadableFileError, match=re.escape("'studies/STU-0001/sub/b.csv'")
    ) as raised:
        _write(tmp_path, root, ["studies"], "zstd")
    assert isinstance(raised.value, ClinVaultError)
    assert "Permission denied" in raised.value.message


def test_cancel_stops_the_archive_and_its_threads(tmp_path: Path) -> None:
    root = tmp_path / "files"
    _put(root, "studies/big.bin", os.urandom(24 << 20))
    cancel = threading.Event()

    with pytest.raises(CancelledError):
        _write(
            tmp_path,
            root,
            ["studies"],
            "zstd",
            frame_target=1 << 20,
            cancel=cancel,
            on_progress=lambda _: cancel.set(),
        )

    assert cancel.is_set()
    assert not [t for t in threading.enumerate() if t.name.startswith("clinvault-")]
    with pytest.raises(CancelledError):
        _write(tmp_path, root, ["studies"], "gzip", cancel=cancel)


def test_memory_stays_bounded_for_a_big_file(tmp_path: Path) -> None:
    root = tmp_path / "files"
    _put(root, "studies/big.bin", os.urandom(64 << 20))
    plan = plan_files(root, ["studies"])

    class Counter:
        written = 0

        def write(self, data: bytes) -> int:
            self.written += len(data)
            return len(data)

    sink = Counter()
    tracemalloc.start()
    try:
        result = write_files_archive(plan, sink, "zstd", 1, frame_target=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert sink.written == result.compressed_size > 64 << 20
    assert peak < 24 << 20


# --- the index entry ---------------------------------------------------------------------------


def test_file_entry_json_round_trip_keeps_raw_names() -> None:
    entry = FileEntry(
        path=os.fsdecode(b"studies/\xe9t\xe9 1.bin"),
        kind="file",
        size=12,
        mode=0o640,
        mtime=1_700_000_000.5,
        sha256="ab" * 32,
        link_target=None,
        tar_offset=1536,
        frame_offset=77,
        frame_member_offset=1536,
    )
    text = json.dumps(entry.to_json())
    assert text.isascii()
    assert FileEntry.from_json(json.loads(text)) == entry
    assert os.fsencode(FileEntry.from_json(json.loads(text)).path) == b"studies/\xe9t\xe9 1.bin"


def test_file_entry_from_json_defaults_and_refusals() -> None:
    minimal = FileEntry.from_json({"path": "studies", "kind": "dir", "part": "files.tar.zst"})
    assert minimal == FileEntry("studies", "dir", 0, 0, 0.0, None, None, 0, 0, 0)
    refused: list[dict[str, object]] = [
        {"path": "x", "kind": "pipe"},
        {"path": "x", "kind": "file", "size": "12"},
        {"path": "x", "kind": "file", "size": True},
        {"kind": "file"},
        {"path": "x", "kind": "symlink", "link_target": 5},
    ]
    for bad in refused:
        with pytest.raises(FormatError):
            FileEntry.from_json(bad)


def test_a_sink_that_fails_midway_fails_the_archive_and_leaves_no_thread(
    tmp_path: Path, tree: Path
) -> None:
    class _FullDisk:
        def __init__(self) -> None:
            self.written = 0

        def write(self, data: bytes, /) -> int:
            if self.written >= 2:
                raise OSError(28, "No space left on device")
            self.written += 1
            return len(data)

    before = set(threading.enumerate())
    sink = _FullDisk()

    with pytest.raises(OSError, match="No space left"):
        write_files_archive(
            plan_files(tree, ["studies", "uploads"]), sink, "zstd", None, frame_target=FRAME
        )

    assert sink.written == 2
    assert set(threading.enumerate()) <= before
