"""The files part of a bundle: a PAX tar of the selected file roots, compressed in frames.

The tar is cut into independent zstd frames (or gzip members), never inside a header, and
the index records for every member the compressed offset of the frame its header is in and
where in that frame it starts. So:

- any single file comes back by reading from its frame's offset and decompressing only up
  to the end of that member (granular restore never reads the whole part);
- the whole object is still one valid stream for ``tar --zstd -xf`` or ``tar -xzf``, since
  concatenated zstd frames and gzip members decompress as one stream (disaster recovery
  needs nothing but the standard tools).

Small members share a frame until it reaches ``frame_target`` raw bytes, and frames end
between members. A member bigger than that starts a new frame and is cut, as it is read,
into frames of about ``frame_target`` that no other member shares: cutting it keeps memory
bounded and lets its frames be compressed in parallel like all the others (one huge frame
would leave all but one core idle). Frames are written in order. A member's content is
hashed from the bytes archived (zeros included where a file shrank while it was read): with
its frame, in the compression pool, when it fits in one; as it is read when it spans frames.

The tar is reproducible: members in byte order of their names (parents first), uid and gid
0, no user or group names, and the files' own modes and modification times (to the
nanosecond, in a PAX ``mtime`` record when there is a fraction). Names and link targets that
are long or not ASCII go in PAX ``path``/``linkpath`` records; names that are not valid
UTF-8 are stored as their raw bytes, the way GNU tar itself writes them, so GNU tar extracts
them byte for byte without complaint.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import stat
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, NamedTuple

from clinvault.engine.compression import (
    Codec,
    Sink,
    StreamDecompressor,
    check_codec,
    compress_frame_pieces,
    resolve_level,
)
from clinvault.errors import (
    CancelledError,
    ClinVaultError,
    FormatError,
    IntegrityError,
    InvalidInputError,
)

Kind = Literal["file", "dir", "symlink"]
ReadRange = Callable[[int, int | None], Iterator[bytes]]
ProgressCallback = Callable[[int], None]

DEFAULT_FRAME_TARGET: Final = 8 << 20
_READ_SIZE: Final = 1 << 20
_MIN_READ_SIZE: Final = 64 << 10
_BLOCK: Final = 512
_RECORD: Final = 20 * _BLOCK
_ZERO_BLOCK: Final = bytes(_BLOCK)
_OCTAL_12_LIMIT: Final = 8**11  # a 12-byte octal field holds values below this
_MAX_METADATA: Final = 1 << 20  # larger PAX records or GNU long names are refused as corrupt
_PROGRESS_STEP: Final = 4 << 20
_QUEUE_SLACK: Final = 1
_MAX_PROBLEMS: Final = 1000
_NS: Final = 10**9


class UnreadableFileError(ClinVaultError):
    """A file or directory selected for backup cannot be read (permissions, I/O error)."""

    title = "File cannot be read"


# --- the index -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One member of the files part, as the manifest's file index records it.

    ``path`` is relative to the files root. A name that is not valid UTF-8 on disk keeps its
    raw bytes as surrogate escapes (``os.fsdecode``); ``json.dumps`` with its default
    ``ensure_ascii=True`` writes them as ``\\udcXX`` escapes and ``json.loads`` gives them
    back, so the index stays plain ASCII JSON.
    """

    path: str
    kind: Kind
    size: int
    mode: int
    mtime: float
    sha256: str | None
    link_target: str | None
    tar_offset: int
    frame_offset: int
    frame_member_offset: int

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "kind": self.kind,
            "size": self.size,
            "mode": self.mode,
            "mtime": self.mtime,
            "sha256": self.sha256,
            "link_target": self.link_target,
            "tar_offset": self.tar_offset,
            "frame_offset": self.frame_offset,
            "frame_member_offset": self.frame_member_offset,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> FileEntry:
        """Read an index entry; unknown keys are ignored so later formats can add fields."""
        return cls(
            path=_json_str(data, "path"),
            kind=_json_kind(data),
            size=_json_int(data, "size", 0),
            mode=_json_int(data, "mode", 0),
            mtime=_json_float(data, "mtime", 0.0),
            sha256=_json_optional_str(data, "sha256"),
            link_target=_json_optional_str(data, "link_target"),
            tar_offset=_json_int(data, "tar_offset", 0),
            frame_offset=_json_int(data, "frame_offset", 0),
            frame_member_offset=_json_int(data, "frame_member_offset", 0),
        )


def _json_str(data: Mapping[str, object], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise FormatError(f"file index entry: {key!r} must be a non-empty string")
    return value


def _json_optional_str(data: Mapping[str, object], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise FormatError(f"file index entry: {key!r} must be a string or null")
    return value


def _json_int(data: Mapping[str, object], key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FormatError(f"file index entry: {key!r} must be a non-negative integer")
    return value


def _json_float(data: Mapping[str, object], key: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FormatError(f"file index entry: {key!r} must be a number")
    return float(value)


def _json_kind(data: Mapping[str, object]) -> Kind:
    kind = data.get("kind")
    if kind == "file":
        return "file"
    if kind == "dir":
        return "dir"
    if kind == "symlink":
        return "symlink"
    raise FormatError(f"file index entry: kind must be file, dir or symlink, not {kind!r}")


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    entries: list[FileEntry]
    size: int  # uncompressed tar bytes
    compressed_size: int
    sha256: str  # of the compressed object
    # Not computed for new archives: every member carries its own SHA-256 and every frame a
    # checksum, so a hash of the whole tar would only cost a third pass over the data.
    raw_sha256: str | None
    file_count: int
    dir_count: int
    symlink_count: int
    frame_count: int
    warnings: list[str]


# --- planning ------------------------------------------------------------------------------


class PlannedItem(NamedTuple):
    path: str  # relative to the files root, "/"-separated
    stat: os.stat_result  # lstat at planning time

    @property
    def kind(self) -> Kind:
        return _kind_of(self.stat.st_mode) or "file"


@dataclass(frozen=True, slots=True)
class FilePlan:
    """What will be archived, in archive order, and how many content bytes that is."""

    root: Path
    items: tuple[PlannedItem, ...]
    total_bytes: int
    warnings: tuple[str, ...]


def plan_files(files_root: Path, selections: Sequence[str]) -> FilePlan:
    """Walk the selections under ``files_root`` without following any symbolic link.

    Every selection must be a relative path that stays under the root (``"."`` is the whole
    root). Parents of a selection are included so extraction recreates them; a selection
    that does not exist adds a warning and nothing else; special files are skipped with a
    warning. The order is that of the archive: depth first, names in byte order.
    """
    if isinstance(selections, str):
        raise InvalidInputError("file selections must be a list of paths, not one string")
    root = os.fspath(files_root)
    relatives = [_normalize_selection(selection) for selection in selections]
    found: dict[str, os.stat_result] = {}
    warnings: list[str] = []
    for relative in relatives:
        _plan_selection(root, relative, found, warnings)
    items = tuple(PlannedItem(path, found[path]) for path in sorted(found, key=_sort_key))
    total = sum(item.stat.st_size for item in items if stat.S_ISREG(item.stat.st_mode))
    unique_warnings = tuple(dict.fromkeys(warnings))  # overlapping selections repeat them
    return FilePlan(Path(files_root), items, total, unique_warnings)


def _normalize_selection(selection: str) -> str:
    if not isinstance(selection, str) or not selection or "\0" in selection:
        raise InvalidInputError(f"invalid file selection {selection!r}")
    if selection.startswith("/"):
        raise InvalidInputError(f"file selection {selection!r} must be relative to the files root")
    parts = [part for part in selection.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidInputError(f"file selection {selection!r} must not contain '..'")
    return "/".join(parts)


def _sort_key(path: str) -> list[bytes]:
    """Depth-first order with names compared as bytes, the same on every machine."""
    return os.fsencode(path).split(b"/")


def _plan_selection(
    root: str, relative: str, found: dict[str, os.stat_result], warnings: list[str]
) -> None:
    parts = relative.split("/") if relative else []
    parents: list[tuple[str, os.stat_result]] = []
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        parent_stat = _lstat(root, parent)
        if parent_stat is not None and stat.S_ISLNK(parent_stat.st_mode):
            raise InvalidInputError(
                f"file selection {relative!r} goes through the symbolic link {parent!r}"
            )
        if parent_stat is None or not stat.S_ISDIR(parent_stat.st_mode):
            warnings.append(_missing_selection(relative))
            return
        parents.append((parent, parent_stat))
    target = _lstat(root, relative)
    if target is None:
        warnings.append(_missing_selection(relative))
        return
    found.update(parents)
    _walk(root, relative, target, found, warnings)


def _missing_selection(relative: str) -> str:
    return f"file selection {relative or '.'!r} does not exist; nothing archived"


def _full_path(root: str, relative: str) -> str:
    return f"{root}/{relative}" if relative else root


def _lstat(root: str, relative: str) -> os.stat_result | None:
    try:
        return os.lstat(_full_path(root, relative))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise UnreadableFileError(f"cannot read {relative or '.'!r}: {exc.strerror}") from exc


def _kind_of(mode: int) -> Kind | None:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return None


def _special_name(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _walk(
    root: str,
    relative: str,
    top: os.stat_result,
    found: dict[str, os.stat_result],
    warnings: list[str],
) -> None:
    stack = [(relative, top)]
    while stack:
        path, path_stat = stack.pop()
        if path:  # the files root itself is not a member
            kind = _kind_of(path_stat.st_mode)
            if kind is None:
                name = _special_name(path_stat.st_mode)
                warnings.append(f"skipped {path!r}: a {name} cannot be archived")
                continue
            found[path] = path_stat
            if kind != "dir":
                continue
        stack.extend(_list_dir(root, path, warnings))


def _list_dir(root: str, path: str, warnings: list[str]) -> list[tuple[str, os.stat_result]]:
    prefix = f"{path}/" if path else ""
    children: list[tuple[str, os.stat_result]] = []
    try:
        with os.scandir(_full_path(root, path)) as listing:
            for child in listing:
                with suppress(FileNotFoundError):  # vanished while being listed
                    children.append((prefix + child.name, child.stat(follow_symlinks=False)))
    except FileNotFoundError:
        warnings.append(f"{path or '.'!r} vanished while being listed")
    except OSError as exc:
        raise UnreadableFileError(
            f"cannot list the directory {path or '.'!r}: {exc.strerror}"
        ) from exc
    # Largest first: the walk pops from the end, so it meets entries in archive order.
    children.sort(key=lambda child: _sort_key(child[0]), reverse=True)
    return children


# --- tar headers ---------------------------------------------------------------------------


def _padding(size: int) -> bytes:
    return bytes(-size % _BLOCK)


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _ustar_block(
    name: bytes, mode: int, size: int, mtime: int, typeflag: bytes, link: bytes
) -> bytes:
    block = b"".join(
        (
            name[:100].ljust(100, b"\0"),
            _octal(mode, 8),
            _octal(0, 8),  # uid
            _octal(0, 8),  # gid
            _octal(size, 12),
            _octal(mtime, 12),
            b" " * 8,  # checksum, counted as spaces
            typeflag,
            link[:100].ljust(100, b"\0"),
            b"ustar\x0000",
            bytes(64),  # uname, gname
            _octal(0, 8),  # devmajor
            _octal(0, 8),  # devminor
            bytes(167),  # prefix (unused: long names go in PAX records), padding
        )
    )
    return block[:148] + b"%06o\0" % sum(block) + block[155:]


def _pax_record(key: bytes, value: bytes) -> bytes:
    """``"<length> <key>=<value>\\n"``, where the length counts its own digits."""
    body = len(key) + len(value) + 3
    length = previous = 0
    while True:
        length = body + len(str(previous))
        if length == previous:
            return b"%d %s=%s\n" % (length, key, value)
        previous = length


def _pax_time(ns: int) -> str:
    sign = "-" if ns < 0 else ""
    seconds, fraction = divmod(abs(ns), _NS)
    return f"{sign}{seconds}" + (f".{fraction:09d}".rstrip("0") if fraction else "")


def _member_header(
    name: bytes, typeflag: bytes, size: int, mode: int, mtime_ns: int, link: bytes = b""
) -> bytes:
    """The header blocks of one member: a PAX extended header first when one is needed."""
    records = []
    if len(name) > 100 or not name.isascii():
        records.append(_pax_record(b"path", name))
    if len(link) > 100 or not link.isascii():
        records.append(_pax_record(b"linkpath", link))
    if size >= _OCTAL_12_LIMIT:
        records.append(_pax_record(b"size", b"%d" % size))
    seconds = mtime_ns // _NS
    if mtime_ns % _NS or not 0 <= seconds < _OCTAL_12_LIMIT:
        records.append(_pax_record(b"mtime", _pax_time(mtime_ns).encode()))
    block = _ustar_block(
        name,
        mode,
        size if size < _OCTAL_12_LIMIT else 0,
        seconds if 0 <= seconds < _OCTAL_12_LIMIT else 0,
        typeflag,
        link,
    )
    if not records:
        return block
    data = b"".join(records)
    pax = _ustar_block(b"././@PaxHeader", 0o644, len(data), 0, tarfile.XHDTYPE, b"")
    return pax + data + _padding(len(data)) + block


def _end_of_archive(offset: int) -> bytes:
    """Two zero blocks, then zeros up to a whole 10 KiB record as tar itself writes."""
    end = offset + 2 * _BLOCK
    return bytes(2 * _BLOCK + (-end % _RECORD))


# --- writing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Member:
    """A FileEntry before the compressed offset of its frame is known."""

    path: str
    kind: Kind
    size: int
    mode: int
    mtime_ns: int
    sha256: str | None
    link_target: str | None
    tar_offset: int
    frame_index: int
    frame_member_offset: int

    def entry(self, frame_offsets: Sequence[int], sha256: str | None) -> FileEntry:
        """The index record; ``sha256`` where the content was hashed with its frame."""
        return FileEntry(
            path=self.path,
            kind=self.kind,
            size=self.size,
            mode=self.mode,
            mtime=float(_pax_time(self.mtime_ns)),  # exactly what a tar reader will parse
            sha256=self.sha256 or sha256,
            link_target=self.link_target,
            tar_offset=self.tar_offset,
            frame_offset=frame_offsets[self.frame_index],
            frame_member_offset=self.frame_member_offset,
        )


class _Span(NamedTuple):
    """The content of a member that lies wholly in one frame: hashed with that frame."""

    member: int  # its index among the archive's members
    start: int  # offset in the frame's bytes
    size: int


class _Packed(NamedTuple):
    compressed: tuple[bytes, ...]  # the frame, in pieces
    digests: list[tuple[int, str]]  # (member index, SHA-256 of its content)


def _pack(raw: bytes, codec: Codec, level: int, spans: Sequence[_Span]) -> _Packed:
    """A frame's work off the reading thread: hash the contents it holds, compress it.

    Runs in the compression pool; hashlib and both compressors release the GIL, so frames
    are hashed and compressed in parallel while the reading thread reads on.
    """
    view = memoryview(raw)
    digests = [
        (span.member, hashlib.sha256(view[span.start : span.start + span.size]).hexdigest())
        for span in spans
    ]
    return _Packed(compress_frame_pieces(raw, codec, level), digests)


# What the reading thread hands the writing thread, in archive order.
@dataclass(frozen=True, slots=True)
class _Frame:
    size: int  # of its tar bytes (not the bytes: they go once compressed)
    packed: Future[_Packed]
    progress: int


@dataclass(frozen=True, slots=True)
class _Done:
    members: list[_Member]
    warnings: list[str]
    progress: int


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


_Item = _Frame | _Done | _Failed


class _StoppedError(Exception):
    """The writing side gave up; the reading side just ends."""


class _Channel:
    """Bounded queue from the reading thread to the writing thread (bounds memory)."""

    def __init__(self, size: int) -> None:
        self._queue: queue.Queue[_Item] = queue.Queue(size)
        self._stopped = threading.Event()

    def put(self, item: _Item) -> None:
        while not self._stopped.is_set():
            with suppress(queue.Full):
                self._queue.put(item, timeout=0.05)
                return
        raise _StoppedError

    def get(self) -> _Item:
        return self._queue.get()

    def stop(self) -> None:
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()


class _Producer:
    """The reading thread: stats and reads files, cuts the tar into frames, and hashes the
    members that span frames (the pool hashes the others, frame by frame).

    Each frame goes to the compression pool as soon as it is complete, and to the writing
    thread through the bounded channel, which holds the reading thread back when the
    compressors or the sink fall behind.
    """

    def __init__(
        self,
        plan: FilePlan,
        codec: Codec,
        level: int,
        frame_target: int,
        pool: ThreadPoolExecutor,
        channel: _Channel,
        cancel: threading.Event | None,
    ) -> None:
        self._plan = plan
        self._root = os.fspath(plan.root)
        self._codec = codec
        self._level = level
        self._frame_target = frame_target
        # Big files are cut into frames between reads: read no more than a frame at once.
        self._read_size = min(_READ_SIZE, max(frame_target, _MIN_READ_SIZE))
        self._pool = pool
        self._channel = channel
        self._cancel = cancel
        self._parts: list[bytes] = []
        self._spans: list[_Span] = []
        self._frame_size = 0
        self._frame_index = 0
        self._offset = 0  # in the uncompressed tar
        self._progress = 0  # content bytes read
        self._members: list[_Member] = []
        self._warnings = list(plan.warnings)

    def run(self) -> None:
        try:
            for item in self._plan.items:
                self._check()
                self._add(item)
            self._append(_end_of_archive(self._offset))
            self._close_frame()
            self._channel.put(_Done(self._members, self._warnings, self._progress))
        except _StoppedError:
            return
        except BaseException as exc:  # handed over, and raised by the writing thread
            with suppress(_StoppedError):
                self._channel.put(_Failed(exc))

    def _check(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise CancelledError("writing the files archive was cancelled")
        if self._channel.stopped:
            raise _StoppedError

    def _add(self, item: PlannedItem) -> None:
        if item.kind == "file":
            self._add_file(item.path)
        elif item.kind == "dir":
            self._add_dir(item.path)
        else:
            self._add_symlink(item.path)

    # members

    def _add_dir(self, path: str) -> None:
        found = self._restat(path, stat.S_ISDIR, "directory")
        if found is None:
            return
        name = os.fsencode(path) + b"/"
        header = _member_header(name, tarfile.DIRTYPE, 0, _mode(found), found.st_mtime_ns)
        member = self._member(path, "dir", found, None, None)
        self._append(header)
        self._members.append(member)
        self._maybe_close_frame()

    def _add_symlink(self, path: str) -> None:
        found = self._restat(path, stat.S_ISLNK, "symbolic link")
        if found is None:
            return
        try:
            target = os.readlink(self._full(path))  # noqa: PTH115 - a Path would normalize it
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EINVAL):
                raise UnreadableFileError(f"cannot read {path!r}: {exc.strerror}") from exc
            self._warn(f"skipped {path!r}: it changed before it could be archived")
            return
        name, link = os.fsencode(path), os.fsencode(target)
        header = _member_header(name, tarfile.SYMTYPE, 0, _mode(found), found.st_mtime_ns, link)
        member = self._member(path, "symlink", found, None, target)
        self._append(header)
        self._members.append(member)
        self._maybe_close_frame()

    def _add_file(self, path: str) -> None:
        fd = self._open(path)
        if fd is None:
            return
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):
                self._warn(f"skipped {path!r}: it is no longer a regular file")
                return
            header = _member_header(
                os.fsencode(path),
                tarfile.REGTYPE,
                opened.st_size,
                _mode(opened),
                opened.st_mtime_ns,
            )
            if opened.st_size > self._frame_target:
                self._close_frame()  # a big file starts frames of its own
                self._archive_file(path, fd, opened, header)
                self._close_frame()
            else:
                self._archive_file(path, fd, opened, header)
                self._maybe_close_frame()
        finally:
            os.close(fd)

    def _archive_file(self, path: str, fd: int, opened: os.stat_result, header: bytes) -> None:
        """Header, content and padding into the current frame; content bigger than a frame
        is cut into frames as it is read (and hashed here, in order), so memory stays
        bounded. Content that fits is hashed later with its frame, off this thread."""
        start = (self._offset, self._frame_index, self._frame_size)
        self._append(header)
        sha256: str | None = None
        if opened.st_size > self._frame_target:
            digest = hashlib.sha256()
            for chunk in self._content(path, fd, opened):
                self._maybe_close_frame()
                digest.update(chunk)
                self._append(chunk)
            sha256 = digest.hexdigest()
        else:
            self._spans.append(_Span(len(self._members), self._frame_size, opened.st_size))
            for chunk in self._content(path, fd, opened):
                self._append(chunk)
        self._append(_padding(opened.st_size))
        self._members.append(self._member(path, "file", opened, sha256, None, start))

    def _content(self, path: str, fd: int, opened: os.stat_result) -> Iterator[bytes]:
        """Exactly the size the header announced: zero-padded if the file shrank meanwhile,
        cut if it grew, with a warning either way."""
        remaining = opened.st_size
        while remaining:
            self._check()
            try:
                chunk = os.read(fd, min(remaining, self._read_size))
            except OSError as exc:
                raise UnreadableFileError(f"cannot read {path!r}: {exc.strerror}") from exc
            if not chunk:
                self._warn(
                    f"{path!r} shrank while being read: its last {remaining} bytes were "
                    "archived as zeros"
                )
                self._progress += remaining
                yield from _zeros(remaining)
                return
            remaining -= len(chunk)
            self._progress += len(chunk)
            yield chunk
        after = os.fstat(fd)
        if after.st_size != opened.st_size or after.st_mtime_ns != opened.st_mtime_ns:
            self._warn(f"{path!r} changed while being read: archived as read")

    def _member(
        self,
        path: str,
        kind: Kind,
        found: os.stat_result,
        sha256: str | None,
        link_target: str | None,
        start: tuple[int, int, int] | None = None,
    ) -> _Member:
        """Index record of a member; ``start`` is where its header went (default: next)."""
        tar_offset, frame_index, frame_member_offset = start or (
            self._offset,
            self._frame_index,
            self._frame_size,
        )
        return _Member(
            path=path,
            kind=kind,
            size=found.st_size if kind == "file" else 0,
            mode=_mode(found),
            mtime_ns=found.st_mtime_ns,
            sha256=sha256,
            link_target=link_target,
            tar_offset=tar_offset,
            frame_index=frame_index,
            frame_member_offset=frame_member_offset,
        )

    # files on disk

    def _full(self, path: str) -> str:
        return _full_path(self._root, path)

    def _restat(
        self, path: str, is_kind: Callable[[int], bool], what: str
    ) -> os.stat_result | None:
        """Fresh lstat, or None (with a warning) when the entry vanished or changed kind."""
        try:
            found = os.lstat(self._full(path))
        except (FileNotFoundError, NotADirectoryError):
            self._warn(f"skipped {path!r}: it vanished before it could be archived")
            return None
        except OSError as exc:
            raise UnreadableFileError(f"cannot read {path!r}: {exc.strerror}") from exc
        if not is_kind(found.st_mode):
            self._warn(f"skipped {path!r}: it is no longer a {what}")
            return None
        return found

    def _open(self, path: str) -> int | None:
        """Open without following a link and without blocking on a pipe put there since."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            return os.open(self._full(path), flags)
        except (FileNotFoundError, NotADirectoryError):
            self._warn(f"skipped {path!r}: it vanished before it could be archived")
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO):
                raise UnreadableFileError(f"cannot read {path!r}: {exc.strerror}") from exc
            self._warn(f"skipped {path!r}: it is no longer a regular file")
        return None

    def _warn(self, message: str) -> None:
        self._warnings.append(message)

    # frames

    def _append(self, data: bytes) -> None:
        if data:
            self._parts.append(data)
            self._frame_size += len(data)
            self._offset += len(data)

    def _maybe_close_frame(self) -> None:
        if self._frame_size >= self._frame_target:
            self._close_frame()

    def _close_frame(self) -> None:
        if not self._parts:
            return
        raw = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        packed = self._pool.submit(_pack, raw, self._codec, self._level, self._spans)
        self._parts, self._spans, self._frame_size = [], [], 0
        self._frame_index += 1
        self._channel.put(_Frame(len(raw), packed, self._progress))


def _mode(found: os.stat_result) -> int:
    return found.st_mode & 0o7777


def _zeros(count: int) -> Iterator[bytes]:
    while count > 0:
        size = min(count, _READ_SIZE)
        count -= size
        yield bytes(size)


class _Writer:
    """The writing side, in the caller's thread: frames in order, hashed, into the sink."""

    def __init__(self, sink: Sink, on_progress: ProgressCallback | None) -> None:
        self._sink = sink
        self._on_progress = on_progress
        self._reported = 0
        self.out_hash = hashlib.sha256()
        self.size = 0
        self.compressed_size = 0
        self.frame_offsets: list[int] = []
        self.digests: dict[int, str] = {}

    def consume(self, channel: _Channel, cancel: threading.Event | None) -> _Done:
        while True:
            item = channel.get()
            if cancel is not None and cancel.is_set():
                raise CancelledError("writing the files archive was cancelled")
            if isinstance(item, _Failed):
                raise item.error
            if isinstance(item, _Done):
                self._report(item.progress, force=True)
                return item
            self._write_frame(item)

    def _write_frame(self, frame: _Frame) -> None:
        self.frame_offsets.append(self.compressed_size)
        self.size += frame.size
        pieces, digests = frame.packed.result()
        self.digests.update(digests)
        for piece in pieces:
            if piece:
                self.out_hash.update(piece)
                self.compressed_size += len(piece)
                self._sink.write(piece)
        self._report(frame.progress)

    def _report(self, progress: int, *, force: bool = False) -> None:
        """Pass on the bytes read since the last report, every few MiB and at the end."""
        step = progress - self._reported
        if self._on_progress is not None and (step >= _PROGRESS_STEP or (force and step)):
            self._reported = progress
            self._on_progress(step)


def write_files_archive(
    plan: FilePlan,
    sink: Sink,
    codec: Codec,
    level: int | None,
    *,
    frame_target: int = DEFAULT_FRAME_TARGET,
    threads: int = 2,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> ArchiveResult:
    """Write the planned files as a framed, compressed PAX tar into ``sink``.

    A reading thread reads and hashes files and builds frames; ``threads`` workers compress
    them (zstd and zlib release the GIL); the calling thread hashes and writes them in order,
    so ``sink`` and ``on_progress`` are only ever called from the caller's thread.
    ``on_progress`` gets the content bytes read since its last call, every few MiB; the
    calls add up to about ``plan.total_bytes`` (files may change size meanwhile).
    """
    codec = check_codec(codec)
    level = resolve_level(codec, level)
    if threads < 1:
        raise InvalidInputError(f"compression threads must be at least 1, not {threads}")
    if frame_target < 1:
        raise InvalidInputError(f"frame target must be positive, not {frame_target}")
    channel = _Channel(threads + _QUEUE_SLACK)
    writer = _Writer(sink, on_progress)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="clinvault-compress")
    producer = _Producer(plan, codec, level, frame_target, pool, channel, cancel)
    reader = threading.Thread(target=producer.run, name="clinvault-archive-reader", daemon=True)
    reader.start()
    try:
        done = writer.consume(channel, cancel)
    finally:
        channel.stop()
        reader.join()
        pool.shutdown(wait=True, cancel_futures=True)
    return _result(writer, done)


def _result(writer: _Writer, done: _Done) -> ArchiveResult:
    entries = [
        member.entry(writer.frame_offsets, writer.digests.get(index))
        for index, member in enumerate(done.members)
    ]
    kinds = [entry.kind for entry in entries]
    return ArchiveResult(
        entries=entries,
        size=writer.size,
        compressed_size=writer.compressed_size,
        sha256=writer.out_hash.hexdigest(),
        raw_sha256=None,
        file_count=kinds.count("file"),
        dir_count=kinds.count("dir"),
        symlink_count=kinds.count("symlink"),
        frame_count=len(writer.frame_offsets),
        warnings=done.warnings,
    )


# --- reading -------------------------------------------------------------------------------


class _ByteReader:
    """Exact-size reads over a stream of chunks, without re-copying the chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._chunk = b""
        self._pos = 0
        self.offset = 0  # bytes consumed so far

    def _available(self) -> int:
        while self._pos >= len(self._chunk):
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._chunk, self._pos = chunk, 0
        return len(self._chunk) - self._pos

    def piece(self, limit: int) -> bytes:
        """Up to ``limit`` bytes; empty only at the end of the stream."""
        count = min(limit, self._available())
        start = self._pos
        self._pos += count
        self.offset += count
        if start == 0 and count == len(self._chunk):
            return self._chunk
        return self._chunk[start : start + count]

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes, fewer only at the end of the stream."""
        first = self.piece(size)
        if len(first) == size or not first:
            return first
        parts = [first]
        missing = size - len(first)
        while missing and (part := self.piece(missing)):
            parts.append(part)
            missing -= len(part)
        return b"".join(parts)

    def skip(self, size: int) -> int:
        """Drop up to ``size`` bytes; returns how many were dropped."""
        missing = size
        while missing and (count := min(missing, self._available())):
            self._pos += count
            self.offset += count
            missing -= count
        return size - missing


class _TarWalker:
    """Reads tar members one after another, with PAX and GNU long-name extensions."""

    def __init__(self, reader: _ByteReader) -> None:
        self._reader = reader
        self._content_end = reader.offset
        self._member_end = reader.offset  # content plus padding
        self._generation = 0
        self._globals: dict[str, str] = {}

    def next_member(self) -> tarfile.TarInfo | None:
        """The next member's header, or None at the end-of-archive marker."""
        self._generation += 1
        reader = self._reader
        unread = self._member_end - reader.offset
        if reader.skip(unread) < unread:
            raise FormatError("tar archive truncated inside a member")
        start = reader.offset
        pax = dict(self._globals)
        long_name = long_link = None
        while True:
            block = self._header_block()
            if block == _ZERO_BLOCK:
                self._end_marker(start)
                return None
            info = _parse_header(block, reader.offset - _BLOCK)
            if info.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
                pax.update(self._pax_records(info.size))
            elif info.type == tarfile.XGLTYPE:
                records = self._pax_records(info.size)
                self._globals.update(records)
                pax.update(records)
            elif info.type == tarfile.GNUTYPE_LONGNAME:
                long_name = self._gnu_long(info.size)
            elif info.type == tarfile.GNUTYPE_LONGLINK:
                long_link = self._gnu_long(info.size)
            else:
                break
        _apply_extensions(info, pax, long_name, long_link)
        info.offset, info.offset_data = start, reader.offset
        # Like tarfile: regular files and unknown types carry data, links and dirs do not.
        data_size = info.size if info.isreg() or info.type not in tarfile.SUPPORTED_TYPES else 0
        self._content_end = reader.offset + data_size
        self._member_end = self._content_end + (-data_size % _BLOCK)
        return info

    def content(self) -> Iterator[bytes]:
        """The current member's content in pieces; stops if the walk moves on."""
        generation, end, reader = self._generation, self._content_end, self._reader
        while self._generation == generation and reader.offset < end:
            piece = reader.piece(end - reader.offset)
            if not piece:
                raise FormatError("tar archive truncated inside a member's content")
            yield piece

    def expect_only_zeros(self) -> None:
        """After the end marker: the rest of the stream must be record padding."""
        while piece := self._reader.piece(_RECORD * 100):
            if piece.count(0) != len(piece):
                raise FormatError("data after the tar end-of-archive marker")

    def _header_block(self) -> bytes:
        block = self._reader.read(_BLOCK)
        if not block:
            raise FormatError("tar archive truncated: no end-of-archive marker")
        if len(block) < _BLOCK:
            raise FormatError("tar archive truncated inside a header")
        return block

    def _end_marker(self, start: int) -> None:
        if self._reader.offset - _BLOCK != start:
            raise FormatError(f"tar extension header without its member at byte {start}")
        if self._reader.read(_BLOCK) != _ZERO_BLOCK:
            raise FormatError(f"a lone zero block at byte {start} in the middle of the archive")

    def _metadata(self, size: int) -> bytes:
        if size > _MAX_METADATA:
            raise FormatError(f"tar extension header of {size} bytes refused as corrupt")
        data = self._reader.read(size)
        if len(data) < size or self._reader.skip(-size % _BLOCK) < -size % _BLOCK:
            raise FormatError("tar archive truncated inside an extension header")
        return data

    def _pax_records(self, size: int) -> dict[str, str]:
        return _parse_pax(self._metadata(size))

    def _gnu_long(self, size: int) -> str:
        return self._metadata(size).rstrip(b"\0").decode("utf-8", "surrogateescape")


def _parse_header(block: bytes, offset: int) -> tarfile.TarInfo:
    try:
        return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        raise FormatError(f"bad tar header at byte {offset}: {exc}") from exc


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            length = 0
        end = pos + length
        if space < 0 or length <= 0 or end > len(data) or data[end - 1 : end] != b"\n":
            raise FormatError("malformed PAX extended header")
        key, _, value = data[space + 1 : end - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records


def _apply_extensions(
    info: tarfile.TarInfo, pax: dict[str, str], long_name: str | None, long_link: str | None
) -> None:
    if long_name is not None:
        info.name = long_name
    if long_link is not None:
        info.linkname = long_link
    try:
        for key, value in pax.items():
            if key == "path":
                info.name = value
            elif key == "linkpath":
                info.linkname = value
            elif key in ("size", "uid", "gid"):
                setattr(info, key, int(value))
            elif key == "mtime":
                info.mtime = float(value)
            elif key in ("uname", "gname"):
                setattr(info, key, value)
    except ValueError as exc:
        raise FormatError(f"malformed PAX value in the header of {info.name!r}") from exc
    info.pax_headers = pax
    if info.isdir():
        info.name = info.name.rstrip("/")


def _decompressed(chunks: Iterable[bytes], decoder: StreamDecompressor) -> Iterator[bytes]:
    for chunk in chunks:
        yield from decoder.feed(chunk)
    decoder.finish()


def _walk_archive(raw: Iterator[bytes]) -> Iterator[tuple[tarfile.TarInfo, Iterator[bytes] | None]]:
    walker = _TarWalker(_ByteReader(raw))
    while (info := walker.next_member()) is not None:
        yield info, (walker.content() if info.isreg() else None)
    walker.expect_only_zeros()


def iter_archive(
    chunks: Iterable[bytes], codec: Codec
) -> Iterator[tuple[tarfile.TarInfo, Iterator[bytes] | None]]:
    """Every member in archive order, with its content as chunks for regular files.

    A content iterator left unfinished is skipped when the walk moves on. The walk reads the
    stream to its very end, so every frame's checksum is checked; ``IntegrityError`` for bad
    compression, ``FormatError`` for a bad tar.
    """
    decoder = StreamDecompressor(check_codec(codec))
    yield from _walk_archive(_decompressed(chunks, decoder))


def read_member(read_range: ReadRange, codec: Codec, entry: FileEntry) -> Iterator[bytes]:
    """The content of one file, read from its frame on: nothing before it is fetched, and
    nothing after it is decompressed.

    ``read_range(offset, None)`` yields the compressed object from ``offset`` (for example
    ``functools.partial(storage.read, key)``). The member's name, size and SHA-256 are checked
    against ``entry``; a mismatch raises ``IntegrityError`` (after the last chunk, for the
    hash), so the caller must treat what it wrote as void until the iterator ends cleanly.
    """
    if entry.kind != "file":
        raise InvalidInputError(f"{entry.path!r} is a {entry.kind}, not a file")
    return _read_member(read_range, check_codec(codec), entry)


def _read_member(read_range: ReadRange, codec: Codec, entry: FileEntry) -> Iterator[bytes]:
    chunks = read_range(entry.frame_offset, None)
    try:
        yield from _member_content(chunks, codec, entry)
    except FormatError as exc:
        raise IntegrityError(
            f"{entry.path!r}: the archive does not match its index: {exc}"
        ) from exc
    finally:
        close = getattr(chunks, "close", None)
        if callable(close):
            close()


def _member_content(chunks: Iterator[bytes], codec: Codec, entry: FileEntry) -> Iterator[bytes]:
    reader = _ByteReader(_decompressed(chunks, StreamDecompressor(codec)))
    if reader.skip(entry.frame_member_offset) < entry.frame_member_offset:
        raise IntegrityError(f"{entry.path!r}: its frame ends before the member's offset")
    walker = _TarWalker(reader)
    info = walker.next_member()
    found = None if info is None else info.name
    if info is None or found != entry.path:
        raise IntegrityError(f"the index points {entry.path!r} at the member {found!r}")
    if not info.isreg() or info.size != entry.size:
        raise IntegrityError(f"{entry.path!r}: the archived member is not the indexed file")
    digest = hashlib.sha256()
    for piece in walker.content():
        digest.update(piece)
        yield piece
    if entry.sha256 is not None and digest.hexdigest() != entry.sha256:
        raise IntegrityError(f"{entry.path!r}: content does not match its SHA-256")


# --- verifying -----------------------------------------------------------------------------


def verify_files_archive(
    chunks: Iterable[bytes],
    codec: Codec,
    entries: Sequence[FileEntry],
    on_progress: ProgressCallback | None = None,
    *,
    expected_sha256: str | None = None,
    expected_raw_sha256: str | None = None,
) -> list[str]:
    """Re-read the whole archive against its index; the problems found (empty: all good).

    Checks every member's presence, kind, mode, size, link target and content SHA-256, that
    the index's tar and frame offsets point where they should (granular restore relies on
    them), every frame's checksum, and, when given, the SHA-256 of the stored object and of
    the tar stream. ``on_progress`` gets the content bytes checked since its last call.
    """
    return _Verifier(entries, on_progress).run(
        chunks, check_codec(codec), expected_sha256, expected_raw_sha256
    )


class _Verifier:
    def __init__(self, entries: Sequence[FileEntry], on_progress: ProgressCallback | None) -> None:
        self._problems: list[str] = []
        self._expected: dict[str, FileEntry] = {}
        for entry in entries:
            if entry.path in self._expected:
                self._problems.append(f"{entry.path!r} is in the index twice")
            self._expected[entry.path] = entry
        self._seen: set[str] = set()
        self._on_progress = on_progress
        self._progress = 0
        self._reported = 0

    def run(
        self,
        chunks: Iterable[bytes],
        codec: Codec,
        expected_sha256: str | None,
        expected_raw_sha256: str | None,
    ) -> list[str]:
        stored, raw_hash = hashlib.sha256(), hashlib.sha256()
        if expected_sha256 is not None:
            chunks = _hashed(chunks, stored)
        decoder = StreamDecompressor(codec)
        raw = _decompressed(chunks, decoder)
        if expected_raw_sha256 is not None:
            raw = _hashed(raw, raw_hash)
        try:
            for info, content in _walk_archive(raw):
                self._check_member(info, content)
        except (IntegrityError, FormatError) as exc:
            self._problems.append(f"the archive is damaged: {exc.message}")
            unchecked = len(self._expected.keys() - self._seen)
            if unchecked:
                self._problems.append(f"{unchecked} indexed members could not be checked")
            return self._finish()
        self._check_missing()
        self._check_frames(decoder)
        if expected_sha256 is not None and stored.hexdigest() != expected_sha256:
            self._problems.append("the SHA-256 of the stored archive does not match")
        if expected_raw_sha256 is not None and raw_hash.hexdigest() != expected_raw_sha256:
            self._problems.append("the SHA-256 of the uncompressed tar does not match")
        return self._finish()

    def _check_member(self, info: tarfile.TarInfo, content: Iterator[bytes] | None) -> None:
        name = info.name
        if name in self._seen:
            self._problems.append(f"{name!r} appears more than once in the archive")
        self._seen.add(name)
        entry = self._expected.get(name)
        if entry is None:
            self._problems.append(f"{name!r} is in the archive but not in the index")
            return
        kind = _member_kind(info)
        if kind != entry.kind:
            self._problems.append(f"{name!r}: the index says {entry.kind}, the archive has {kind}")
            return
        self._check_metadata(entry, info)
        if content is not None:
            self._check_content(entry, content)

    def _check_metadata(self, entry: FileEntry, info: tarfile.TarInfo) -> None:
        name = entry.path
        if info.offset != entry.tar_offset:
            self._problems.append(
                f"{name!r}: the index says tar offset {entry.tar_offset}, "
                f"the archive has {info.offset}"
            )
        if info.mode != entry.mode:
            self._problems.append(
                f"{name!r}: the index says mode {entry.mode:o}, the archive has {info.mode:o}"
            )
        if abs(info.mtime - entry.mtime) > 1e-6:
            self._problems.append(f"{name!r}: modification times differ")
        if entry.kind == "symlink" and info.linkname != entry.link_target:
            self._problems.append(f"{name!r}: symbolic link targets differ")
        if entry.kind == "file" and info.size != entry.size:
            self._problems.append(
                f"{name!r}: the index says {entry.size} bytes, the archive has {info.size}"
            )

    def _check_content(self, entry: FileEntry, content: Iterator[bytes]) -> None:
        digest = hashlib.sha256()
        for piece in content:
            digest.update(piece)
            self._progress += len(piece)
            if self._progress - self._reported >= _PROGRESS_STEP:
                self._report()
        if entry.sha256 is not None and digest.hexdigest() != entry.sha256:
            self._problems.append(f"{entry.path!r}: content does not match its SHA-256")

    def _check_missing(self) -> None:
        for path in self._expected:
            if path not in self._seen:
                self._problems.append(f"{path!r} is in the index but missing from the archive")

    def _check_frames(self, decoder: StreamDecompressor) -> None:
        starts = {start.compressed_offset: start.raw_offset for start in decoder.frame_starts}
        for path, entry in self._expected.items():
            if (
                path in self._seen
                and starts.get(entry.frame_offset) != entry.tar_offset - entry.frame_member_offset
            ):
                self._problems.append(
                    f"{path!r}: the index's frame offset {entry.frame_offset} does not lead "
                    "to this member"
                )

    def _report(self) -> None:
        step = self._progress - self._reported
        if self._on_progress is not None and step:
            self._reported = self._progress
            self._on_progress(step)

    def _finish(self) -> list[str]:
        self._report()
        if len(self._problems) > _MAX_PROBLEMS:
            more = len(self._problems) - _MAX_PROBLEMS
            self._problems[_MAX_PROBLEMS:] = [f"... and {more} more problems"]
        return self._problems


def _member_kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    return "special member"


def _hashed(chunks: Iterable[bytes], digest: hashlib._Hash) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk
