"""The SQL script ``pg_restore --file=-`` writes, read as fast as Python can.

Granular restore replays only the ``TABLE DATA`` entries of a dump and reads their COPY
text itself: the table of contents names the entries, each ``COPY name (columns) FROM
stdin;`` header says which columns the lines hold, and the lines up to ``\\.`` are the
rows. The row loops below are the hot path of a study restore (millions of lines for a
1 GB dump), so they work on raw bytes in pieces of a few MiB: a piece is split into lines
in one call, each line only up to the key column, and for the common case (one key
column, nothing to remember for child tables) the filter runs in ``map`` and
``itertools.compress``, with no Python code per line. Progress and cancellation are
checked once per piece.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import compress
from operator import itemgetter, methodcaller
from pathlib import Path
from typing import IO

from clinvault.engine.copytext import ScriptReader
from clinvault.engine.pgconn import ConnInfo
from clinvault.engine.pgtools import PgTool, run_tool
from clinvault.engine.readahead import read_pipe
from clinvault.engine.scope import TableRef
from clinvault.errors import CancelledError, FormatError, InvalidInputError

_TOC_LINE = re.compile(r"^(\d+); \d+ \d+ (.+)$")
_ENCODING = re.compile(r"^SET client_encoding = '([A-Za-z0-9_]+)';")
_IDENT = re.compile(r'"((?:[^"]|"")*)"|([^\s.,()"]+)')
_NULL = b"\\N"
_BUFFER = 1 << 20
_AHEAD = 16
_PIECE = 4 << 20
# pg_restore only reads the dump and writes a script: it never connects anywhere.
NO_SERVER = ConnInfo("localhost", 5432, "nobody", "nothing")

KeyValue = bytes | tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class TocEntry:
    dump_id: int
    line: str


def toc_lines(
    tool: PgTool, dump: Path, section: str | None = None, *, timeout: float = 600.0
) -> list[str]:
    """The entries of the dump's table of contents (``pg_restore --list``), comments left
    out; with ``section``, only that section's. Names keep their raw bytes (surrogate
    escapes), so lines written back to a list file are the dump's own."""
    args = ["--list", str(dump)]
    if section is not None:
        args.insert(0, f"--section={section}")
    out = run_tool(tool, args, NO_SERVER, timeout=timeout).decode("utf-8", "surrogateescape")
    return [line for line in out.splitlines() if line.strip() and not line.startswith(";")]


def write_list(path: Path, lines: Sequence[str]) -> Path:
    """A ``pg_restore --use-list`` file of ``lines``."""
    path.write_text("".join(f"{line}\n" for line in lines), "utf-8", "surrogateescape")
    return path


def read_table_data_toc(tool: PgTool, dump: Path, *, timeout: float = 600.0) -> list[str]:
    """The ``TABLE DATA`` lines of the dump's table of contents (``pg_restore --list``)."""
    return [line for line in toc_lines(tool, dump, timeout=timeout) if " TABLE DATA " in line]


def find_table_data(toc_lines: Sequence[str], table: TableRef) -> TocEntry:
    """The dump entry holding ``table``'s rows; refused when the backup has no such table."""
    prefix = f"TABLE DATA {table.schema} {table.name} "
    for line in toc_lines:
        match = _TOC_LINE.match(line)
        if match and (match.group(2) + " ").startswith(prefix):
            rest = match.group(2)[len(prefix) :]
            if " " not in rest.strip():
                return TocEntry(int(match.group(1)), line)
    raise InvalidInputError(
        f"the backup has no data for {table}, which the live database has in this scope: "
        "the schema changed since the backup (restore the whole database instead)"
    )


def parse_copy_header(line: str) -> tuple[list[str], list[str]]:
    """Table name parts and column names of a ``COPY name (cols) FROM stdin;`` line."""
    if not line.startswith("COPY ") or not line.rstrip().endswith(" FROM stdin;"):
        raise FormatError(f"unexpected line in pg_restore output: {line[:80]!r}")
    body = line[5 : line.rstrip().rfind(" FROM stdin;")]
    paren = _first_unquoted(body, "(")
    name_text, cols_text = (body, "") if paren < 0 else (body[:paren], body[paren:])
    return _identifiers(name_text), _identifiers(cols_text)


def _first_unquoted(text: str, char: str) -> int:
    quoted = False
    for index, current in enumerate(text):
        if current == '"':
            quoted = not quoted
        elif current == char and not quoted:
            return index
    return -1


def _identifiers(text: str) -> list[str]:
    return [
        m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2)
        for m in _IDENT.finditer(text)
    ]


class RestoreScript:
    """Reads the SQL script ``pg_restore --file=-`` writes: COPY headers and their rows.

    Rows come in pieces of whole lines (``pieces``); the loops below split a piece into
    lines in one call and filter them with C-level ``map`` and ``compress`` where they can.
    """

    def __init__(
        self,
        stream: IO[bytes],
        on_bytes: Callable[[int], None] | None,
        cancel: threading.Event | None,
    ) -> None:
        self._reader = ScriptReader(read_pipe(stream, _BUFFER, _AHEAD))
        self._reported = 0
        self._on_bytes = on_bytes
        self._cancel = cancel
        self.encoding: str | None = None

    def next_header(self) -> str:
        while (raw := self._reader.line()) is not None:
            line = raw.decode("utf-8", "replace")
            if line.startswith("COPY "):
                self.tick()
                return line
            found = _ENCODING.match(line)
            if found:
                self.encoding = found.group(1)
        raise FormatError("pg_restore ended before all scope tables were read")

    def pieces(self) -> Iterator[list[bytes]]:
        """The lines (without their newlines) of the current table, a piece at a time."""
        for piece in self._reader.rows(_PIECE):
            self.tick()
            lines = piece.split(b"\n")
            lines.pop()  # after the last newline
            yield lines

    def close(self) -> None:
        self._reader.close()

    def drain(self) -> None:
        """Read the script's tail, so pg_restore never writes into a closed pipe."""
        while self._reader.line() is not None:
            pass
        self.tick()

    def tick(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise CancelledError("granular restore cancelled while reading the dump")
        done = self._reader.read
        if self._on_bytes is not None and done > self._reported:
            self._on_bytes(done - self._reported)
        self._reported = done


def key_value(fields: list[bytes], positions: list[int]) -> KeyValue | None:
    """The key at ``positions``, or None when a part is NULL (it then references nothing)."""
    if len(positions) == 1:
        single = fields[positions[0]]
        return None if single == _NULL else single
    parts = tuple(fields[p] for p in positions)
    return None if _NULL in parts else parts


def _joined(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


def keep_by_key(
    script: RestoreScript, position: int, wanted: set[KeyValue], write: Callable[[bytes], None]
) -> int:
    """The hot loop for leaf tables, one key column: no Python code runs per line."""
    split = methodcaller("split", b"\t", position + 1)
    pick = itemgetter(position)
    kept = 0
    for lines in script.pieces():
        keep = list(compress(lines, map(wanted.__contains__, map(pick, map(split, lines)))))
        if keep:
            kept += len(keep)
            write(_joined(keep))
    return kept


def keep_matching(
    script: RestoreScript,
    key_pos: list[int],
    split: int,
    wanted: set[KeyValue],
    collectors: list[tuple[list[int], set[KeyValue]]],
    write: Callable[[bytes], None],
) -> int:
    """The general loop: composite keys, and keys remembered for the children."""
    kept = 0
    for lines in script.pieces():
        out: list[bytes] = []
        for line in lines:
            fields = line.split(b"\t", split)
            if key_value(fields, key_pos) not in wanted:
                continue
            out.append(line)
            for positions, found in collectors:
                value = key_value(fields, positions)
                if value is not None:
                    found.add(value)
        if out:
            kept += len(out)
            write(_joined(out))
    return kept


def keep_all(script: RestoreScript, write: Callable[[bytes], None]) -> int:
    """Every row, for tables whose keys the server must match."""
    kept = 0
    for lines in script.pieces():
        if lines:
            kept += len(lines)
            write(_joined(lines))
    return kept
