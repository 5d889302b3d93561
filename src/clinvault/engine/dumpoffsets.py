"""Filling in the data offsets of a custom-format dump that ``pg_dump`` wrote to a pipe.

A custom-format archive starts with a table of contents, and each entry with data has a
field for where that data starts in the file. ``pg_dump`` writing to a pipe cannot go back
to fill the fields in, so they all say "not set", and ``pg_restore``, asked for one table,
reads its way to it through every block before it: one seek per row, because a dump
without compression holds each row in a block of its own (measured at scale 10: 2.9 s of
system time to reach the tables at the end of a 1 GB dump, against none with offsets).

ClinVault writes every byte of the staging copy, so it can see where each entry's data
starts: a data section begins with a block header (block type, then the entry's dump id)
and ends with a zero-length block (a zero integer: ``1 + int size`` zero bytes). The text
of a ``COPY`` or ``INSERT`` section holds no zero byte, so after the table of contents the
first zero run of that length ends a section, and what follows it is the next header. Large
objects are binary and may hold anything, so the search stops at the first large-object
section; entries after it keep their "not set" field, and ``pg_restore`` still finds them
the slow way. Every offset written is checked against the bytes of the file first, and any
archive this module does not fully understand (an unknown format version, a table of
contents it cannot read to its end) is left exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

_MAGIC: Final = b"PGDMP"
_CUSTOM_FORMAT: Final = 1
_OLDEST: Final = (1, 12)  # PostgreSQL 9.5
_NEWEST: Final = (1, 16)  # PostgreSQL 17
_POS_NOT_SET: Final = 1
_POS_SET: Final = 2
_NO_DATA: Final = 3
_BLK_DATA: Final = 1
_BLK_BLOBS: Final = 3
_HEAD_LIMIT: Final = 64 << 20  # a table of contents bigger than this is left alone


class _NeedMoreError(Exception):
    """The buffer ends before the table of contents does."""


class _UnsupportedError(Exception):
    """Not an archive this module understands."""


@dataclass(frozen=True, slots=True)
class _Toc:
    int_size: int
    off_size: int
    end: int  # the first byte after the table of contents
    pending: dict[int, int]  # entries with data but no offset: dump id -> its flag's position


class _Reader:
    """``pg_backup_archiver.c``'s ReadByte, ReadInt and ReadStr over a buffer."""

    def __init__(self, buf: bytes | bytearray) -> None:
        self.buf = buf
        self.pos = 0
        self.int_size = 4

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.buf):
            raise _NeedMoreError
        data = bytes(self.buf[self.pos : end])
        self.pos = end
        return data

    def byte(self) -> int:
        return self.take(1)[0]

    def int(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.take(self.int_size), "little")
        return -value if sign else value

    def str(self) -> bytes | None:
        size = self.int()
        if size < 0:
            return None
        if size > _HEAD_LIMIT:
            raise _UnsupportedError("a string longer than the table of contents may be")
        return self.take(size)


def _read_toc(buf: bytes | bytearray) -> _Toc:
    """Parse the header and table of contents at the start of ``buf``."""
    r = _Reader(buf)
    if r.take(5) != _MAGIC:
        raise _UnsupportedError("not a custom-format archive")
    version = (r.byte(), r.byte())
    r.byte()  # revision
    if not _OLDEST <= version <= _NEWEST:
        raise _UnsupportedError(f"archive version {version}")
    r.int_size = r.byte()
    off_size = r.byte()
    if r.int_size not in (4, 8) or not 4 <= off_size <= 8:
        raise _UnsupportedError("unusual integer or offset size")
    if r.byte() != _CUSTOM_FORMAT:
        raise _UnsupportedError("not the custom format")
    if version >= (1, 15):
        r.byte()  # compression algorithm
    else:
        r.int()  # compression level
    for _ in range(7):  # creation time
        r.int()
    r.str()  # database name
    r.str()  # server version
    r.str()  # pg_dump version
    count = r.int()
    if count < 0:
        raise _UnsupportedError("negative entry count")
    pending: dict[int, int] = {}
    for _ in range(count):
        dump_id = r.int()
        if dump_id <= 0:
            raise _UnsupportedError("entry without a dump id")
        r.int()  # had a data dumper
        for _field in range(3):  # table oid, oid, tag
            r.str()
        r.str()  # description
        r.int()  # section
        for _field in range(5):  # definition, drop, copy, namespace, tablespace
            r.str()
        if version >= (1, 14):
            r.str()  # table access method
        if version >= (1, 16):
            r.int()  # relation kind
        r.str()  # owner
        r.str()  # "with oids"
        while r.str() is not None:  # dependencies, ended by a null string
            pass
        flag_pos = r.pos
        flag = r.byte()
        r.take(off_size)
        if flag not in (_POS_NOT_SET, _POS_SET, _NO_DATA):
            raise _UnsupportedError(f"unknown offset flag {flag}")
        if flag == _POS_NOT_SET:
            pending[dump_id] = flag_pos
    return _Toc(r.int_size, off_size, r.pos, pending)


class DataOffsets:
    """Watches a custom-format dump stream by, then writes its data offsets into the file.

    ``feed`` every chunk in order while the file is written; ``apply`` to the finished
    file. Anything not understood leaves the file unchanged.
    """

    def __init__(self) -> None:
        self._head: bytearray | None = bytearray()
        self._next_parse = 0  # parse the head again once it is this long
        self._toc: _Toc | None = None
        self._pos = 0  # stream position of the next chunk
        self._carry = b""  # the stream's last bytes, where a boundary may start
        self._int_size = 4
        self._zeros = b""
        self._need = 0
        self._found: dict[int, int] = {}
        self._done = False

    def feed(self, chunk: bytes) -> None:
        if self._done:
            return
        if self._head is not None:
            self._feed_head(chunk)
            return
        self._scan(chunk)

    def apply(self, path: Path) -> int:
        """Write the offsets found into ``path``; returns how many entries got one."""
        if self._head is not None:  # the whole stream was shorter than one attempt
            self._feed_head(b"", force=True)
        if self._carry and not self._done:  # the stream's last few bytes
            self._search(self._carry, self._pos - len(self._carry), 0, final=True)
        toc = self._toc
        if toc is None or not self._found:
            return 0
        with path.open("r+b") as f:
            for dump_id, offset in self._found.items():
                f.seek(offset)
                header = f.read(2 + toc.int_size)
                if header[0] not in (_BLK_DATA, _BLK_BLOBS) or header[1:] != _int_bytes(
                    dump_id, toc.int_size
                ):
                    return 0
                f.seek(toc.pending[dump_id])
                if f.read(1) != bytes([_POS_NOT_SET]):
                    return 0
            for dump_id, offset in self._found.items():
                f.seek(toc.pending[dump_id])
                f.write(bytes([_POS_SET]) + offset.to_bytes(toc.off_size, "little"))
        return len(self._found)

    def _feed_head(self, chunk: bytes, *, force: bool = False) -> None:
        head = self._head
        assert head is not None
        head += chunk
        if len(head) < self._next_parse and not force:
            return
        try:
            toc = _read_toc(head)
        except _NeedMoreError:
            if len(head) > _HEAD_LIMIT:
                self._stop()
            self._next_parse = 2 * len(head)
            return
        except _UnsupportedError:
            self._stop()
            return
        self._head = None
        if not toc.pending:
            self._stop()
            return
        self._toc = toc
        self._int_size = toc.int_size
        self._zeros = bytes(1 + toc.int_size)
        # the longest run of zeros (see _scan) and a whole header after it
        self._need = 2 * len(self._zeros) + 1 + toc.int_size
        # The first section follows the table of contents with no end block before it:
        # pretend there was one, so the first header is found like all the others.
        self._carry = self._zeros
        self._pos = toc.end
        self._scan(bytes(head[toc.end :]))

    def _scan(self, data: bytes) -> None:
        """Find the section boundaries in ``data``.

        What may start a boundary at the end of a chunk but does not hold it whole is
        carried over and searched again with the start of the next chunk, in a window of a
        few bytes (joining whole chunks would cost a fresh gigabyte of memory per gigabyte).
        """
        carry, self._carry = self._carry, b""
        pos = self._pos
        self._pos += len(data)
        if len(data) < self._need:
            self._search(carry + data, pos - len(carry), 0)
            return
        skip = 0
        if carry:
            window = carry + data[: self._need]
            skip = self._search(window, pos - len(carry), 0, len(carry)) - len(carry)
        if not self._done:
            self._search(data, pos, max(skip, 0))

    def _search(
        self, buf: bytes, base: int, start: int, starts_before: int = -1, *, final: bool = False
    ) -> int:
        """Read the boundaries that start in ``buf[start:starts_before]`` and fit in ``buf``;
        returns where the search stopped. Without ``starts_before``, the search runs to the
        end of ``buf`` and what it could not decide is carried over; ``final`` says the
        stream ends with ``buf``, so there is nothing more to wait for.

        A run of zeros can be longer than an end block: an empty section's header ends in
        the zero high bytes of its dump id, right before its end block. The next header
        starts after the whole run, which is never longer than those two together.
        """
        limit = len(buf) if starts_before < 0 else starts_before
        zeros = len(self._zeros)
        longest = zeros + self._int_size
        while not self._done:
            at = buf.find(self._zeros, start)
            if at < 0 or at >= limit or (at + self._need > len(buf) and not final):
                break
            end = at + zeros
            while end < len(buf) and buf[end] == 0 and end - at < longest:
                end += 1
            if end + 2 + self._int_size > len(buf):
                break
            self._header(buf, end, base)
            start = end
        if starts_before < 0 and not self._done and not final:
            self._carry = buf[max(start, len(buf) - self._need + 1) :]
        return start

    def _header(self, buf: bytes, at: int, base: int) -> None:
        toc = self._toc
        assert toc is not None
        kind, sign = buf[at], buf[at + 1]
        dump_id = int.from_bytes(buf[at + 2 : at + 2 + self._int_size], "little")
        expected = kind in (_BLK_DATA, _BLK_BLOBS) and sign == 0 and dump_id in toc.pending
        if not expected or dump_id in self._found:
            self._stop()  # not what a section boundary looks like: trust nothing further
            return
        self._found[dump_id] = base + at
        if kind == _BLK_BLOBS or len(self._found) == len(toc.pending):
            self._stop()

    def _stop(self) -> None:
        self._done = True
        self._head = None
        self._carry = b""


def _int_bytes(value: int, int_size: int) -> bytes:
    return bytes([0]) + value.to_bytes(int_size, "little")
