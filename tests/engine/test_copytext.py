"""Reading the script ``pg_restore --file=-`` writes: pieces cut at line ends, however the
pipe happens to cut it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clinvault.engine.copytext import ScriptReader, _find_end
from clinvault.errors import FormatError

HEADER = (
    b"--\n-- PostgreSQL database dump\n--\n\n"
    b"SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n\n"
)


def _copy(table: str, rows: list[bytes]) -> bytes:
    body = b"".join(row + b"\n" for row in rows)
    return b"COPY public." + table.encode() + b" (id, v) FROM stdin;\n" + body + b"\\.\n\n\n"


def _rows(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    # Row text may hold escaped newlines and backslashes, and whole lines that look like
    # the end marker but are an escaped backslash and a dot (a one-column row of "\.").
    samples = [b"\\\\.", b"a\\nb", b"\\\\.\\\\.", b"x" * rng.randrange(1, 300), b"\\N"]
    return [
        (f"{i}\t".encode() if rng.random() < 0.7 else b"") + rng.choice(samples)
        for i in range(count)
    ]


def _cut(data: bytes, sizes: Iterator[int]) -> Iterator[bytes]:
    start = 0
    while start < len(data):
        size = next(sizes)
        yield data[start : start + size]
        start += size


def _read(script: ScriptReader, piece: int) -> list[tuple[bytes, bytes]]:
    """(COPY line, rows) for every table, the rows of each joined from its pieces."""
    tables = []
    while (line := script.line()) is not None:
        if line.startswith(b"COPY "):
            pieces = list(script.rows(piece))
            assert all(p.endswith(b"\n") for p in pieces)
            tables.append((line, b"".join(pieces)))
    return tables


@pytest.mark.parametrize("seed", range(6))
def test_tables_come_out_whole_whatever_the_read_sizes(seed: int) -> None:
    big, small = _rows(5000, seed), _rows(3, seed + 100)
    script = HEADER + _copy("big", big) + _copy("empty", []) + _copy("small", small) + b"--\n"
    rng = random.Random(seed)
    sizes = iter(lambda: rng.choice([1, 2, 3, 4, 5, 17, 4096, 65536]), None)

    tables = _read(ScriptReader(_cut(script, sizes)), piece=4096)

    assert [name for name, _ in tables] == [
        b"COPY public.big (id, v) FROM stdin;\n",
        b"COPY public.empty (id, v) FROM stdin;\n",
        b"COPY public.small (id, v) FROM stdin;\n",
    ]
    assert tables[0][1] == b"".join(row + b"\n" for row in big)
    assert tables[1][1] == b""
    assert tables[2][1] == b"".join(row + b"\n" for row in small)


def test_a_big_table_is_cut_into_pieces_of_about_the_piece_size() -> None:
    rows = _rows(20000, 7)
    script = HEADER + _copy("big", rows)
    s = ScriptReader(iter([script[i : i + 65536] for i in range(0, len(script), 65536)]))
    while (line := s.line()) is not None and not line.startswith(b"COPY "):
        pass

    pieces = list(s.rows(100_000))

    whole = b"".join(row + b"\n" for row in rows)
    assert b"".join(pieces) == whole
    # A piece is cut once at least 100 000 bytes are in: it holds at most one read more.
    assert all(len(p) < 100_000 + 65_536 for p in pieces)
    assert len(pieces) >= len(whole) // (100_000 + 65_536)
    assert all(len(p) >= 100_000 - 400 for p in pieces[:-1])


def test_a_script_that_ends_inside_table_data_is_refused() -> None:
    script = HEADER + b"COPY public.t (id) FROM stdin;\n1\n2\n"
    s = ScriptReader(iter([script]))
    while (line := s.line()) is not None and not line.startswith(b"COPY "):
        pass
    with pytest.raises(FormatError, match="ends inside table data"):
        list(s.rows(1024))


@given(st.binary(max_size=60).map(lambda b: bytes(b"ab\\.\n\t"[x % 6] for x in b)), st.data())
def test_the_end_marker_is_found_where_a_plain_search_finds_it(text: bytes, data: Any) -> None:
    start = data.draw(st.integers(min_value=0, max_value=len(text)))
    assert _find_end(bytearray(text), start) == text.find(b"\n\\.\n", start)
