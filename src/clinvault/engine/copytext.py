"""Reading the SQL script ``pg_restore --file=-`` writes, in big blocks.

The script is a few lines of settings and comments around each table's
``COPY name (columns) FROM stdin;`` line, its rows (one line each: COPY text escapes
newlines inside values), and the end-of-data line ``\\.``. Row text is never split into
lines here: the end of a table's rows is found with one search per block, and pieces are
cut at the last line end in them, so millions of rows cost a few hundred searches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from clinvault.errors import FormatError

_END_LINE: Final = b"\\.\n"
_END_AFTER_ROW: Final = b"\n\\.\n"
_BACKSLASH_TRIES: Final = 8


class ScriptReader:
    """Lines outside table data, and table data in pieces of whole lines, from ``chunks``
    (any sizes, cut anywhere). ``read`` counts the bytes taken from ``chunks`` so far."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = bytearray()
        self.read = 0

    def close(self) -> None:
        """Stop reading (a generator source is closed, which stops its reading thread)."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    def _more(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self._buf += chunk
        self.read += len(chunk)
        return True

    def line(self) -> bytes | None:
        """The next line (with its newline), or None at the end of the script."""
        scanned = 0
        while True:
            end = self._buf.find(b"\n", scanned)
            if end >= 0:
                line = bytes(self._buf[: end + 1])
                del self._buf[: end + 1]
                return line
            scanned = len(self._buf)
            if not self._more():
                if not self._buf:
                    return None
                line = bytes(self._buf)
                self._buf.clear()
                return line

    def rows(self, piece: int) -> Iterator[bytes]:
        """The rows of the COPY whose header was just read, in pieces of about ``piece``
        bytes cut at line ends, up to the end-of-data line (consumed)."""
        buf = self._buf
        scanned = 0
        while True:
            # buf always starts at a line start, so the end marker may be right there
            if buf.startswith(_END_LINE):
                del buf[: len(_END_LINE)]
                return
            end = _find_end(buf, max(0, scanned - len(_END_AFTER_ROW) + 1))
            if end >= 0:
                yield bytes(buf[: end + 1])
                del buf[: end + len(_END_AFTER_ROW)]
                return
            scanned = len(buf)
            if len(buf) >= piece:
                cut = buf.rfind(b"\n")
                if cut >= 0:
                    yield bytes(buf[: cut + 1])
                    del buf[: cut + 1]
                    scanned = len(buf)
                    continue
            if not self._more():
                raise FormatError("pg_restore output ends inside table data")


def _find_end(buf: bytearray, start: int) -> int:
    """Where the first ``\\n\\.\\n`` at or after ``start`` begins, or -1.

    Row text rarely holds a backslash (COPY writes one only to escape something), so the
    marker's backslash is looked for first, with a single-byte search that runs at memory
    speed; a four-byte search costs ten times as much, as its first byte, the line end,
    comes once a row. Text full of escapes gets the plain search after a few misses.
    """
    at = start
    for _ in range(_BACKSLASH_TRIES):
        slash = buf.find(b"\\", at + 1)
        if slash < 0:
            return -1
        if buf[slash - 1] == 0x0A and buf[slash + 1 : slash + 3] == b".\n":
            return slash - 1
        at = slash
    return buf.find(_END_AFTER_ROW, at)
