"""Reading pg_restore's table of contents and COPY headers, names that need quoting included."""

from __future__ import annotations

import pytest

from clinvault.engine.granular_script import find_table_data, parse_copy_header
from clinvault.engine.scope import TableRef
from clinvault.errors import FormatError, InvalidInputError

TOC = [
    "3561; 0 17314 TABLE DATA public visits postgres",
    "3562; 0 17320 TABLE DATA public visits_archive postgres",
    "3570; 0 17400 TABLE DATA trial Sample Log clinical owner",
    "3580; 0 0 SEQUENCE SET public visits_id_seq postgres",
]


def test_table_data_entries_are_found_by_exact_name() -> None:
    assert find_table_data(TOC, TableRef("public", "visits")).dump_id == 3561
    assert find_table_data(TOC, TableRef("public", "visits_archive")).dump_id == 3562
    with pytest.raises(InvalidInputError, match="schema changed"):
        find_table_data(TOC, TableRef("public", "subjects"))


def test_copy_headers_give_names_and_columns() -> None:
    line = 'COPY trial."Sample Log" ("Entry No", sample_id, "Logged (UTC)", "select") FROM stdin;\n'
    assert parse_copy_header(line) == (
        ["trial", "Sample Log"],
        ["Entry No", "sample_id", "Logged (UTC)", "select"],
    )
    quoted = 'COPY "we.ird"."a ""b"" (c)" ("x, y", z) FROM stdin;\n'
    assert parse_copy_header(quoted) == (["we.ird", 'a "b" (c)'], ["x, y", "z"])
    assert parse_copy_header("COPY public.empty  FROM stdin;\n") == (["public", "empty"], [])
    with pytest.raises(FormatError):
        parse_copy_header("SET search_path = '';\n")
