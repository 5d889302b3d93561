"""Bringing files back from the files part: safe extraction, verified content, directory swap.

A restore never writes into the live tree. Members are extracted into a staging directory on
the same filesystem, each file's SHA-256 is checked against its index entry as it is
written, and only then are whole directories swapped in with ``rename`` (atomic per
directory); the live directories they replace become the checkpoint, so undoing the swap is
two renames per directory.

Archives are not trusted: a name that is absolute or climbs with ``..``, a path through a
symbolic link, and anything but regular files, directories and symbolic links (devices,
FIFOs, hard links) are refused with ``IntegrityError``. Symbolic links come back as they
were archived, wherever they point (an absolute target, or one outside the tree, is the
platform's own data, and refusing it would make the whole backup unrestorable): they are
created last, after every file and directory, so no write can ever be redirected through
one, and nothing later follows them (the swap renames, the clean-up unlinks).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import stat
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from clinvault.engine import bundle
from clinvault.engine.archive import FileEntry, iter_archive, read_member
from clinvault.engine.compression import check_codec
from clinvault.engine.manifest import PartInfo
from clinvault.errors import CancelledError, IntegrityError, InvalidInputError
from clinvault.storage.base import Storage

BytesCallback = Callable[[int], None]
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Reading only the members' own frames pays off while they are a small share of the part.
_SUBSET_SHARE = 4


@dataclass(frozen=True, slots=True)
class ExtractResult:
    files: int
    dirs: int
    symlinks: int
    bytes: int


# --- names ---------------------------------------------------------------------------------


def _relative_parts(member_name: str) -> list[str]:
    """The components of a member name, refusing every form that leaves the tree."""
    if not member_name or "\x00" in member_name:
        raise IntegrityError(f"archive member name {member_name!r} is empty or holds a NUL byte")
    if member_name.startswith("/"):
        raise IntegrityError(f"archive member {member_name!r} has an absolute path; refused")
    parts = [p for p in member_name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise IntegrityError(f"archive member {member_name!r} climbs out with '..'; refused")
    if not parts:
        raise IntegrityError(f"archive member {member_name!r} names the target root itself")
    return parts


def safe_member_path(target_root: Path, member_name: str) -> Path:
    """Where ``member_name`` goes under ``target_root``, or ``IntegrityError`` if it escapes.

    Refused: absolute names, ``..`` components, and names whose parent directories already
    exist as symbolic links under ``target_root`` (writing through them could land anywhere).
    """
    parts = _relative_parts(member_name)
    path = target_root
    for part in parts[:-1]:
        path = path / part
        if path.is_symlink():
            raise IntegrityError(
                f"archive member {member_name!r} goes through the symbolic link "
                f"{path.relative_to(target_root).as_posix()!r}; refused"
            )
    return target_root.joinpath(*parts)


# --- extraction ----------------------------------------------------------------------------


@dataclass
class _Extractor:
    """Writes members under ``root``; directories' modes and all links are applied at the end."""

    root: Path
    on_bytes: BytesCallback | None
    cancel: threading.Event | None
    files: int = 0
    byte_count: int = 0
    dirs: list[FileEntry] = field(default_factory=list)
    links: list[FileEntry] = field(default_factory=list)
    link_paths: set[tuple[str, ...]] = field(default_factory=set)
    exact_ns: dict[str, int] = field(default_factory=dict)  # from PAX records, when streamed

    def member_path(self, name: str) -> Path:
        """``safe_member_path``, also refusing a path through a link still to be created."""
        parts = tuple(_relative_parts(name))
        for depth in range(1, len(parts)):
            if parts[:depth] in self.link_paths:
                raise IntegrityError(
                    f"archive member {name!r} goes through the symbolic link "
                    f"{'/'.join(parts[:depth])!r}; refused"
                )
        return safe_member_path(self.root, name)

    def mtime_ns(self, entry: FileEntry) -> int:
        """The entry's modification time; the index's float loses the last nanoseconds."""
        found = self.exact_ns.get(entry.path)
        return found if found is not None else round(entry.mtime * 1_000_000_000)

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError("file restore cancelled")

    def make_dir(self, entry: FileEntry) -> None:
        path = self.member_path(entry.path)
        path.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or not path.is_dir():
            raise IntegrityError(f"archive member {entry.path!r} is not a plain directory")
        self.dirs.append(entry)

    def defer_link(self, entry: FileEntry) -> None:
        """Check a link now, create it in ``finish``: its target may be anything a link can
        hold (not empty, no NUL byte)."""
        self.member_path(entry.path)
        if not entry.link_target or "\x00" in entry.link_target:
            raise IntegrityError(f"symbolic link {entry.path!r} has no usable target; refused")
        self.links.append(entry)
        self.link_paths.add(tuple(_relative_parts(entry.path)))

    def write_file(self, entry: FileEntry, chunks: Iterable[bytes]) -> None:
        path = self.member_path(entry.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, _OPEN_FLAGS, 0o600)
        except FileExistsError:
            raise IntegrityError(f"archive member {entry.path!r} appears twice; refused") from None
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                self.check_cancel()
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if self.on_bytes is not None:
                    self.on_bytes(len(chunk))
            if size != entry.size:
                raise IntegrityError(
                    f"{entry.path!r}: {size} bytes extracted, the index says {entry.size}"
                )
            if entry.sha256 is not None and digest.hexdigest() != entry.sha256:
                raise IntegrityError(f"{entry.path!r}: content does not match its SHA-256")
            out.flush()
            os.fchmod(out.fileno(), _safe_mode(entry.mode))
            os.utime(out.fileno(), ns=(self.mtime_ns(entry),) * 2)
        self.files += 1
        self.byte_count += size

    def finish(self) -> ExtractResult:
        """Create the links, then fix directory metadata."""
        for entry in self.links:
            self.check_cancel()
            path = safe_member_path(self.root, entry.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            assert entry.link_target is not None
            try:
                path.symlink_to(entry.link_target)
            except FileExistsError:
                raise IntegrityError(
                    f"archive member {entry.path!r} appears twice; refused"
                ) from None
            with contextlib.suppress(NotImplementedError, OSError):
                os.utime(path, ns=(self.mtime_ns(entry),) * 2, follow_symlinks=False)
        for entry in sorted(self.dirs, key=lambda e: e.path.count("/"), reverse=True):
            path = safe_member_path(self.root, entry.path)
            path.chmod(_safe_mode(entry.mode), follow_symlinks=False)
            os.utime(path, ns=(self.mtime_ns(entry),) * 2, follow_symlinks=False)
        return ExtractResult(self.files, len(self.dirs), len(self.links), self.byte_count)


def _safe_mode(mode: int) -> int:
    """Permission bits only; set-user-id is never restored from an archive."""
    return stat.S_IMODE(mode) & ~stat.S_ISUID


def _pax_ns(info: tarfile.TarInfo) -> int | None:
    text = info.pax_headers.get("mtime")
    if text is None:
        return None
    try:
        return int(Decimal(text).scaleb(9).to_integral_value())
    except ArithmeticError:
        return None


def _unique(entries: Sequence[FileEntry]) -> dict[str, FileEntry]:
    wanted: dict[str, FileEntry] = {}
    for entry in entries:
        name = "/".join(_relative_parts(entry.path))
        if name in wanted:
            raise IntegrityError(f"{entry.path!r} is listed twice")
        wanted[name] = entry
    return wanted


def extract_entries(
    storage: Storage,
    backup_id: str,
    part: PartInfo,
    entries: Sequence[FileEntry],
    staging_root: Path,
    *,
    on_bytes: BytesCallback | None = None,
    cancel: threading.Event | None = None,
) -> ExtractResult:
    """Extract the given index entries (files, directories, links) into ``staging_root``.

    When the entries' files are a small share of the part, only their own frames are read
    (``read_member``); otherwise the part is streamed once and the other members skipped.
    Every file's size and SHA-256 must match its entry; modes and modification times are
    set from the entry. Raises ``IntegrityError`` for anything unsafe or mismatched; the
    caller discards ``staging_root`` then.
    """
    wanted = _unique(entries)
    selected = sum(e.size for e in wanted.values() if e.kind == "file")
    staging_root.mkdir(parents=True, exist_ok=True)
    extractor = _Extractor(staging_root, on_bytes, cancel)
    if selected * _SUBSET_SHARE < part.size:
        _extract_by_member(storage, backup_id, part, wanted, extractor)
    else:
        _extract_stream(storage, backup_id, part, wanted, extractor, strict=False)
    return extractor.finish()


def extract_part(
    storage: Storage,
    backup_id: str,
    part: PartInfo,
    entries: Sequence[FileEntry],
    staging_root: Path,
    *,
    on_bytes: BytesCallback | None = None,
    cancel: threading.Event | None = None,
) -> ExtractResult:
    """Extract the whole files part in one streaming pass; ``entries`` is its full index.

    Stricter than :func:`extract_entries`: every member must be in the index, and the
    stored object's SHA-256 must match ``part``.
    """
    wanted = _unique(entries)
    staging_root.mkdir(parents=True, exist_ok=True)
    extractor = _Extractor(staging_root, on_bytes, cancel)
    _extract_stream(storage, backup_id, part, wanted, extractor, strict=True)
    return extractor.finish()


def _extract_by_member(
    storage: Storage,
    backup_id: str,
    part: PartInfo,
    wanted: Mapping[str, FileEntry],
    extractor: _Extractor,
) -> None:
    key = bundle.object_key(backup_id, part.name)
    read_range = functools.partial(storage.read, key)
    codec = check_codec(part.codec)
    for name in sorted(wanted):
        extractor.check_cancel()
        _place(extractor, wanted[name], None, lambda e: read_member(read_range, codec, e))


def _place(
    extractor: _Extractor,
    entry: FileEntry,
    content: Iterator[bytes] | None,
    fetch: Callable[[FileEntry], Iterator[bytes]] | None = None,
) -> None:
    if entry.kind == "dir":
        extractor.make_dir(entry)
    elif entry.kind == "symlink":
        extractor.defer_link(entry)
    else:
        chunks = content if content is not None else (fetch(entry) if fetch else iter(()))
        extractor.write_file(entry, chunks)


def _stored_chunks(
    storage: Storage, key: str, digest: Any, cancel: threading.Event | None
) -> Iterator[bytes]:
    for chunk in storage.read(key):
        if cancel is not None and cancel.is_set():
            raise CancelledError("file restore cancelled")
        digest.update(chunk)
        yield chunk


def _extract_stream(
    storage: Storage,
    backup_id: str,
    part: PartInfo,
    wanted: Mapping[str, FileEntry],
    extractor: _Extractor,
    *,
    strict: bool,
) -> None:
    key = bundle.object_key(backup_id, part.name)
    digest = hashlib.sha256()
    seen: set[str] = set()
    chunks = _stored_chunks(storage, key, digest, extractor.cancel)
    for info, content in iter_archive(chunks, check_codec(part.codec)):
        extractor.check_cancel()
        name = "/".join(_relative_parts(info.name))
        _check_member_type(info)
        entry = wanted.get(name)
        if entry is None:
            if strict:
                raise IntegrityError(f"archive member {info.name!r} is not in the index")
            continue
        if _member_kind(info) != entry.kind:
            raise IntegrityError(f"{name!r}: the index says {entry.kind}, the archive differs")
        if entry.kind == "symlink" and info.linkname != entry.link_target:
            raise IntegrityError(f"{name!r}: symbolic link target differs from the index")
        seen.add(name)
        exact = _pax_ns(info)
        if exact is not None and abs(exact / 1e9 - entry.mtime) < 1e-3:
            extractor.exact_ns[entry.path] = exact
        _place(extractor, entry, content)
    missing = sorted(set(wanted) - seen)
    if missing:
        raise IntegrityError(
            f"{len(missing)} indexed entries are missing from the archive, e.g. {missing[0]!r}"
        )
    if strict and digest.hexdigest() != part.sha256:
        raise IntegrityError(f"{part.name}: SHA-256 of the stored object does not match")


def _member_kind(info: tarfile.TarInfo) -> str:
    return "file" if info.isreg() else "dir" if info.isdir() else "symlink"


def _check_member_type(info: tarfile.TarInfo) -> None:
    if info.isreg() or info.isdir() or info.issym():
        return
    kind = (
        "hard link"
        if info.islnk()
        else "device file"
        if info.ischr() or info.isblk()
        else "FIFO"
        if info.isfifo()
        else "special member"
    )
    raise IntegrityError(f"archive member {info.name!r} is a {kind}; refused")


# --- the directory swap --------------------------------------------------------------------


@dataclass
class SwapRecord:
    """What a swap moved, enough to undo it even from another process (``to_json``).

    ``dirs`` holds each swapped directory and whether a live one existed before; undoing
    reads the filesystem's state, so it is safe after a partial swap and when repeated.
    """

    live_root: Path
    staged_root: Path
    checkpoint_root: Path
    dirs: list[tuple[str, bool]]
    created: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "live_root": str(self.live_root),
            "staged_root": str(self.staged_root),
            "checkpoint_root": str(self.checkpoint_root),
            "dirs": [[rel, had] for rel, had in self.dirs],
            "created": list(self.created),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SwapRecord:
        return cls(
            Path(data["live_root"]),
            Path(data["staged_root"]),
            Path(data["checkpoint_root"]),
            [(str(rel), bool(had)) for rel, had in data["dirs"]],
            [str(c) for c in data.get("created", [])],
        )


def _check_relative_dirs(relative_dirs: Sequence[str]) -> list[str]:
    rels = ["/".join(_relative_parts(rel)) for rel in relative_dirs]
    for rel in rels:
        for other in rels:
            if other != rel and other.startswith(rel + "/"):
                raise InvalidInputError(f"directories to swap overlap: {rel!r} and {other!r}")
    if len(set(rels)) != len(rels):
        raise InvalidInputError("a directory to swap is listed twice")
    return rels


def _device(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return probe.stat().st_dev


def check_same_filesystem(live_root: Path, *others: Path) -> None:
    """Refuse when a staging or checkpoint directory is not on the live tree's filesystem."""
    device = _device(live_root)
    for other in others:
        if _device(other) != device:
            raise InvalidInputError(
                f"{other} is not on the same filesystem as {live_root}: a directory swap "
                "needs both on one filesystem (set restore_work_dir to a directory there)"
            )


def plan_swap(
    live_root: Path, staged_root: Path, relative_dirs: Sequence[str], checkpoint_root: Path
) -> SwapRecord:
    """The record of a swap about to happen (persist it first to undo after a crash)."""
    rels = _check_relative_dirs(relative_dirs)
    return SwapRecord(
        live_root, staged_root, checkpoint_root, [(r, os.path.lexists(live_root / r)) for r in rels]
    )


def swap_directories(
    live_root: Path, staged_root: Path, relative_dirs: Sequence[str], checkpoint_root: Path
) -> SwapRecord:
    """Move each live directory to the checkpoint and the staged one into its place.

    All three roots must be on one filesystem (renames, not copies). A failure part way
    undoes what was done before raising. A staged directory that does not exist leaves its
    live counterpart absent (the backup did not have it).
    """
    record = plan_swap(live_root, staged_root, relative_dirs, checkpoint_root)
    for rel, _had_live in record.dirs:
        if os.path.lexists(checkpoint_root / rel):
            raise InvalidInputError(f"the checkpoint {checkpoint_root} already holds {rel!r}")
    checkpoint_root.mkdir(parents=True, exist_ok=True)
    check_same_filesystem(live_root, staged_root, checkpoint_root)
    os.sync()  # the staged tree is on disk before it becomes the live one
    try:
        for rel, had_live in record.dirs:
            live, staged = live_root / rel, staged_root / rel
            if had_live:
                saved = checkpoint_root / rel
                saved.parent.mkdir(parents=True, exist_ok=True)
                live.rename(saved)
            if os.path.lexists(staged):
                record.created.extend(_make_parents(live_root, rel))
                staged.rename(live)
        _fsync_dirs(live_root, checkpoint_root)
    except BaseException:
        undo_swap(record)
        raise
    return record


def _make_parents(root: Path, rel: str) -> list[str]:
    created: list[str] = []
    parts = rel.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        sub = "/".join(parts[:depth])
        if not os.path.lexists(root / sub):
            (root / sub).mkdir()
            created.append(sub)
    return created


def undo_swap(record: SwapRecord) -> None:
    """Put every live directory back from the checkpoint; idempotent, fine after a partial
    swap. The restored directories are moved back under the staged root."""
    for rel, had_live in reversed(record.dirs):
        live, saved = record.live_root / rel, record.checkpoint_root / rel
        if had_live and not os.path.lexists(saved):
            continue  # never moved out, or already put back
        if os.path.lexists(live):
            _move_aside(live, record.staged_root, rel)
        if had_live:
            live.parent.mkdir(parents=True, exist_ok=True)
            saved.rename(live)
    for sub in reversed(record.created):
        with contextlib.suppress(OSError):
            (record.live_root / sub).rmdir()
    _fsync_dirs(record.live_root)


def _move_aside(path: Path, staged_root: Path, rel: str) -> None:
    dest = staged_root / rel
    n = 0
    while os.path.lexists(dest):
        n += 1
        dest = staged_root / f".undone-{n}" / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    path.rename(dest)


def _fsync_dirs(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything under it, even read-only directories."""

    def retry(func: Callable[[str], object], target: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            Path(target).parent.chmod(0o700)
        func(target)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=retry)


# --- reading a tree back -------------------------------------------------------------------


def walk_tree(root: Path, selections: Sequence[str]) -> dict[str, os.stat_result]:
    """Every path under the selections of ``root`` (relative, '/'-separated) with its lstat;
    symbolic links are listed, never followed."""
    found: dict[str, os.stat_result] = {}
    for selection in selections:
        rel = "/".join(_relative_parts(selection))
        top = root / rel
        try:
            info = top.lstat()
        except FileNotFoundError:
            continue
        found[rel] = info
        if stat.S_ISDIR(info.st_mode):
            _walk_into(root, rel, found)
    return found


def _walk_into(root: Path, rel: str, found: dict[str, os.stat_result]) -> None:
    with os.scandir(root / rel) as it:
        children = [(f"{rel}/{e.name}", e.stat(follow_symlinks=False)) for e in it]
    for child, info in children:
        found[child] = info
        if stat.S_ISDIR(info.st_mode):
            _walk_into(root, child, found)


def entries_under(entries: Iterable[FileEntry], selections: Sequence[str]) -> list[FileEntry]:
    """The index entries that lie in one of ``selections`` (the selection itself included)."""
    rels = ["/".join(_relative_parts(s)) for s in selections]
    return [e for e in entries if any(e.path == r or e.path.startswith(r + "/") for r in rels)]


@dataclass
class TreeCheck:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "dirs": self.dirs,
            "symlinks": self.symlinks,
            "bytes": self.bytes,
            "ok": not self.problems,
            "problems": self.problems[:50],
            "problem_count": len(self.problems),
        }


def check_tree(
    root: Path,
    entries: Sequence[FileEntry],
    selections: Sequence[str],
    *,
    on_bytes: BytesCallback | None = None,
    cancel: threading.Event | None = None,
) -> TreeCheck:
    """Compare the tree on disk with the index: same paths and kinds, every file's size and
    SHA-256 (re-read from disk), every link's target."""
    expected = {e.path: e for e in entries_under(entries, selections)}
    found = walk_tree(root, selections)
    check = TreeCheck()
    for path in sorted(set(found) - set(expected)):
        check.problems.append(f"{path!r} is on disk but not in the backup")
    for path, entry in sorted(expected.items()):
        if cancel is not None and cancel.is_set():
            raise CancelledError("file validation cancelled")
        info = found.get(path)
        if info is None:
            check.problems.append(f"{path!r} is in the backup but not on disk")
            continue
        problem = _compare(root / path, entry, info, on_bytes)
        if problem:
            check.problems.append(problem)
            continue
        if entry.kind == "file":
            check.files += 1
            check.bytes += entry.size
        elif entry.kind == "dir":
            check.dirs += 1
        else:
            check.symlinks += 1
    return check


def _compare(
    path: Path, entry: FileEntry, info: os.stat_result, on_bytes: BytesCallback | None
) -> str | None:
    kind = _stat_kind(info)
    if kind != entry.kind:
        return f"{entry.path!r}: the backup has a {entry.kind}, the disk a {kind}"
    if kind == "symlink":
        target = os.readlink(path)  # noqa: PTH115 (Path.readlink would normalise the target)
        return None if target == entry.link_target else f"{entry.path!r}: link target differs"
    if kind == "file":
        if info.st_size != entry.size:
            return f"{entry.path!r}: {info.st_size} bytes on disk, {entry.size} in the backup"
        if entry.sha256 is not None and file_sha256(path, on_bytes) != entry.sha256:
            return f"{entry.path!r}: content does not match its SHA-256"
    return None


def _stat_kind(info: os.stat_result) -> str:
    if stat.S_ISREG(info.st_mode):
        return "file"
    if stat.S_ISDIR(info.st_mode):
        return "dir"
    if stat.S_ISLNK(info.st_mode):
        return "symlink"
    return "special file"


def file_sha256(path: Path, on_bytes: BytesCallback | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return digest.hexdigest()
