"""Data offsets written into a staged dump: ``pg_restore`` reads exactly what it read
before, reaches a table without reading the ones before it, and anything unusual is left
untouched."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from clinvault.engine.dumpoffsets import DataOffsets
from clinvault.engine.granular_script import NO_SERVER
from clinvault.engine.pgconn import ConnInfo
from clinvault.engine.pgtools import PgTool, run_tool
from tests.restore.conftest import custom_database, dump_through_a_pipe

pytestmark = pytest.mark.pg

EXTRA = r"""
CREATE TABLE "Odd ""Rows"" table" (id serial PRIMARY KEY, "Ünïcode" text, raw bytea);
INSERT INTO "Odd ""Rows"" table" ("Ünïcode", raw)
SELECT 'row ' || g || E'\twith a tab\nand a newline \\ and a backslash',
       decode(lpad(to_hex(g), 8, '0'), 'hex')
FROM generate_series(1, 5000) g;
-- rows of every length around 256 and 2560: their block headers hold the bytes of a tab
-- and of a line end
CREATE TABLE lengths (v text);
INSERT INTO lengths SELECT repeat('x', n) FROM generate_series(1, 3000) n;
CREATE TABLE a_empty (x int);
CREATE TABLE b_empty (x int);
CREATE TABLE zz_after_the_empty_ones (v text);
INSERT INTO zz_after_the_empty_ones VALUES ('last');
SELECT lo_from_bytea(0, decode(repeat('00', 64) || '01000b000000', 'hex'));
"""


def _source(make_database: Callable[[], ConnInfo]) -> ConnInfo:
    source = make_database()
    custom_database(source)
    with psycopg.connect(**source.psycopg_kwargs(), autocommit=True) as db:
        db.execute(EXTRA)
    return source


def _index(dump: Path, chunk: int) -> int:
    offsets = DataOffsets()
    with dump.open("rb") as f:
        while data := f.read(chunk):
            offsets.feed(data)
    return offsets.apply(dump)


def _data_entries(tool: PgTool, dump: Path) -> list[str]:
    listing = run_tool(tool, ["--list", str(dump)], NO_SERVER).decode()
    return [
        line
        for line in listing.splitlines()
        if re.match(r"^\d+; \d+ \d+ (TABLE DATA|BLOBS|LARGE OBJECTS) ", line)
    ]


def _script(tool: PgTool, dump: Path, entries: list[str], listing: Path) -> bytes:
    """The SQL script ``pg_restore`` writes for ``entries``, without the ``\\restrict``
    lines recent versions add with a new random key on each run."""
    listing.write_text("".join(e + "\n" for e in entries))
    script = run_tool(tool, ["--file=-", f"--use-list={listing}", str(dump)], NO_SERVER)
    return re.sub(rb"(?m)^\\(un)?restrict \S+\n", b"", script)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("chunk", [1 << 20, 4096, 17])
def test_offsets_change_nothing_pg_restore_reads(
    make_database: Callable[[], ConnInfo], tmp_path: Path, chunk: int
) -> None:
    plain = tmp_path / "plain.dump"
    tool = dump_through_a_pipe(_source(make_database), plain)
    indexed = tmp_path / "indexed.dump"
    shutil.copyfile(plain, indexed)

    patched = _index(indexed, chunk)

    entries = _data_entries(tool, plain)
    first_lo = next((i for i, e in enumerate(entries) if " TABLE DATA " not in e), None)
    # every section up to the first large-object one (whose content is binary) gets one
    assert patched == (len(entries) if first_lo is None else first_lo + 1)
    assert patched >= 8
    assert _index(indexed, 1 << 20) == 0  # and once set, they stay as they are
    assert run_tool(tool, ["--list", str(indexed)], NO_SERVER) == run_tool(
        tool, ["--list", str(plain)], NO_SERVER
    )
    for entry in entries:  # each section on its own, from both files
        assert _script(tool, indexed, [entry], tmp_path / "a.list") == _script(
            tool, plain, [entry], tmp_path / "b.list"
        ), entry
    backwards = list(reversed(entries))
    assert _script(tool, indexed, backwards, tmp_path / "a.list") == _script(
        tool, plain, backwards, tmp_path / "b.list"
    )


def test_a_dump_with_offsets_or_without_sections_is_left_alone(
    make_database: Callable[[], ConnInfo], tmp_path: Path
) -> None:
    plain = tmp_path / "plain.dump"
    dump_through_a_pipe(_source(make_database), plain)
    indexed = tmp_path / "indexed.dump"
    shutil.copyfile(plain, indexed)
    assert _index(indexed, 1 << 16) > 0
    before = _sha(indexed)

    assert _index(indexed, 1 << 16) == 0  # every offset is set already
    assert _sha(indexed) == before

    empty = tmp_path / "empty.dump"
    dump_through_a_pipe(make_database(), empty)
    before = _sha(empty)
    assert _index(empty, 1 << 16) == 0
    assert _sha(empty) == before


def test_a_stream_it_does_not_understand_is_left_alone(
    make_database: Callable[[], ConnInfo], tmp_path: Path
) -> None:
    plain = tmp_path / "plain.dump"
    dump_through_a_pipe(_source(make_database), plain)
    raw = plain.read_bytes()

    cases = {
        "not a dump": b"PGDMQ" + raw[5:],
        "a newer format version": raw[:5] + bytes([1, 99]) + raw[7:],
        "not the custom format": raw[:10] + bytes([3]) + raw[11:],
        "cut inside the table of contents": raw[:300],
    }
    for name, content in cases.items():
        path = tmp_path / "case.dump"
        path.write_bytes(content)
        assert _index(path, 1 << 16) == 0, name
        assert path.read_bytes() == content, name


def test_a_boundary_that_is_not_a_header_stops_the_search(
    make_database: Callable[[], ConnInfo], tmp_path: Path
) -> None:
    source = make_database()
    with psycopg.connect(**source.psycopg_kwargs(), autocommit=True) as db:
        db.execute(
            "CREATE TABLE a (v text);"
            "INSERT INTO a SELECT 'row ' || g FROM generate_series(1, 50) g;"
            "CREATE TABLE b (v text); INSERT INTO b VALUES ('b');"
            "CREATE TABLE c (v text); INSERT INTO c VALUES ('c');"
        )
    plain = tmp_path / "plain.dump"
    tool = dump_through_a_pipe(source, plain)
    raw = bytearray(plain.read_bytes())
    entries = _data_entries(tool, plain)
    assert len(entries) == 3
    whole = tmp_path / "whole.dump"
    whole.write_bytes(bytes(raw))
    assert _index(whole, 1 << 16) == 3  # the last, one-row section included
    # Break the header of b's section (its block type): a and nothing after it is indexed.
    b_id = int(entries[1].split(";")[0])
    header = b"\x00" * 5 + b"\x01\x00" + b_id.to_bytes(4, "little")
    at = raw.index(header)
    raw[at + 5] = 7
    path = tmp_path / "broken.dump"
    path.write_bytes(bytes(raw))

    assert _index(path, 1 << 16) == 1
