"""The sample platform on a real PostgreSQL: content, keys, determinism, refusals, size."""

from __future__ import annotations

import hashlib
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from clinvault.demo import (
    TABLES,
    DemoSummary,
    create_platform,
    ensure_database,
    platform_exists,
)
from clinvault.demo import files as file_tree
from clinvault.demo.schema import apply_schema
from clinvault.engine.pgconn import ConnInfo
from clinvault.errors import ConflictError, InvalidInputError

pytestmark = pytest.mark.pg

TINY = 0.01
STUDY_OWNED = {
    "studies",
    "study_memberships",
    "sites",
    "subjects",
    "visits",
    "observations",
    "adverse_events",
    "documents",
}


def _create(conn: ConnInfo, root: Path, **kwargs: object) -> DemoSummary:
    return create_platform(conn, root, scale=kwargs.pop("scale", TINY), **kwargs)  # type: ignore[arg-type]


def _rows(conn: ConnInfo, query: str | sql.Composed, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(**conn.psycopg_kwargs()) as pg:
        return pg.execute(query, params or None).fetchall()


def _table_hashes(conn: ConnInfo) -> dict[str, str]:
    """MD5 of each table's rows in a canonical order."""
    hashes = {}
    for table in TABLES:
        query = sql.SQL(
            "SELECT md5(coalesce(string_agg(r, E'\\n' ORDER BY r), '')) "
            "FROM (SELECT t::text AS r FROM {} t) s"
        ).format(sql.Identifier("public", table))
        hashes[table] = str(_rows(conn, query)[0][0])
    return hashes


def _tree(root: Path) -> list[tuple[str, str]]:
    return [
        (
            p.relative_to(root).as_posix(),
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/",
        )
        for p in sorted(root.rglob("*"))
    ]


def _fk_children(conn: ConnInfo) -> dict[str, set[str]]:
    """Referenced table -> tables holding a foreign key to it (public schema)."""
    edges: dict[str, set[str]] = {}
    for child, parent in _rows(
        conn,
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c "
        "WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace",
    ):
        edges.setdefault(str(parent), set()).add(str(child))
    return edges


def _reachable(edges: dict[str, set[str]], root: str) -> set[str]:
    seen, queue = {root}, deque([root])
    while queue:
        for child in edges.get(queue.popleft(), ()):
            if child not in seen:
                seen.add(child)
                queue.append(child)
    return seen


@pytest.fixture
def tiny(database: ConnInfo, workdir: Path) -> tuple[ConnInfo, Path, DemoSummary]:
    root = workdir / "platform"
    return database, root, _create(database, root, files_mb=1)


def test_tiny_platform_fills_every_table(tiny: tuple[ConnInfo, Path, DemoSummary]) -> None:
    conn, _, summary = tiny
    assert set(summary.row_counts) == set(TABLES)
    assert all(count > 0 for count in summary.row_counts.values()), summary.row_counts
    for table, count in summary.row_counts.items():
        assert _rows(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))) == [
            (count,)
        ]
    assert len(summary.organization_codes) >= 2
    assert len(summary.study_codes) >= 3
    assert all(code.startswith("STU-") and len(code) == 8 for code in summary.study_codes)
    per_study = _rows(conn, "SELECT count(*) FROM subjects GROUP BY study_id")
    assert len(per_study) == len(summary.study_codes)
    assert all(3 <= n <= 30 for (n,) in per_study)
    assert summary.row_counts["observations"] == max(summary.row_counts.values())
    size = _rows(conn, "SELECT pg_database_size(current_database())")[0][0]
    assert summary.database_bytes == pytest.approx(size, rel=0.1)


def test_every_document_row_points_at_its_real_file(
    tiny: tuple[ConnInfo, Path, DemoSummary],
) -> None:
    conn, root, summary = tiny
    documents = _rows(conn, "SELECT storage_path, size_bytes, sha256 FROM documents")
    assert len(documents) == summary.file_count
    for storage_path, size, digest in documents:
        data = (root / str(storage_path)).read_bytes()
        assert len(data) == size
        assert hashlib.sha256(data).hexdigest() == digest
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert on_disk == {str(path) for path, _, _ in documents}
    assert sum(int(size) for _, size, _ in documents) == summary.files_bytes
    assert summary.files_bytes == pytest.approx(1 << 20, rel=0.1)


def test_documents_belong_to_the_right_study_and_organization(
    tiny: tuple[ConnInfo, Path, DemoSummary],
) -> None:
    conn, _, _ = tiny
    mismatches = _rows(
        conn,
        "SELECT d.storage_path FROM documents d "
        "JOIN organizations o ON o.id = d.organization_id "
        "LEFT JOIN studies s ON s.id = d.study_id "
        "LEFT JOIN subjects su ON su.id = d.subject_id "
        "WHERE CASE WHEN d.study_id IS NULL "
        "  THEN d.storage_path NOT LIKE 'uploads/' || o.code || '/%' "
        "  ELSE d.storage_path NOT LIKE 'studies/' || s.code || '/%' "
        "       OR s.organization_id <> d.organization_id "
        "       OR (su.id IS NOT NULL AND (su.study_id <> s.id "
        "           OR d.storage_path NOT LIKE '%/subjects/' || su.subject_number || '/%')) END",
    )
    assert mismatches == []
    assert _rows(conn, "SELECT count(*) > 0 FROM documents WHERE subject_id IS NOT NULL") == [
        (True,)
    ]


def test_owned_tables_are_reachable_by_foreign_keys(
    tiny: tuple[ConnInfo, Path, DemoSummary],
) -> None:
    conn, _, _ = tiny
    edges = _fk_children(conn)
    assert _reachable(edges, "studies") == STUDY_OWNED
    assert _reachable(edges, "organizations") == set(TABLES) - {"lab_tests"}
    # The global lab catalog is referenced, never owned.
    assert "lab_tests" in edges and "lab_tests" not in _reachable(edges, "organizations")


def test_schema_uses_realistic_constraints_and_types(
    tiny: tuple[ConnInfo, Path, DemoSummary],
) -> None:
    conn, _, _ = tiny
    enums = {name for (name,) in _rows(conn, "SELECT typname FROM pg_type WHERE typtype = 'e'")}
    assert {"study_status", "lab_flag", "ae_severity"} <= enums
    with pytest.raises(psycopg.errors.CheckViolation):
        _rows(conn, "UPDATE studies SET code = 'bad' WHERE id = 1 RETURNING id")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        _rows(conn, "INSERT INTO visits (subject_id, visit_number, visit_name, scheduled_date, "
              "status) VALUES (-1, 1, 'x', '2020-01-01', 'scheduled') RETURNING id")  # fmt: skip
    unvalidated = _rows(conn, "SELECT conname FROM pg_constraint WHERE NOT convalidated")
    assert unvalidated == []


def test_same_seed_same_platform_other_seed_other_data(
    make_database: Callable[[], ConnInfo], workdir: Path
) -> None:
    first, second, third = make_database(), make_database(), make_database()
    _create(first, workdir / "a", seed=7)
    _create(second, workdir / "b", seed=7)
    _create(third, workdir / "c", seed=8)
    hashes = _table_hashes(first)
    assert hashes == _table_hashes(second)
    assert _tree(workdir / "a") == _tree(workdir / "b")
    other = _table_hashes(third)
    assert other["lab_tests"] == hashes["lab_tests"]  # reference data does not depend on the seed
    for table in ("organizations", "users", "studies", "subjects", "observations", "documents"):
        assert other[table] != hashes[table], table
    assert _tree(workdir / "c") != _tree(workdir / "a")


def test_refuses_to_overwrite_a_populated_platform(
    tiny: tuple[ConnInfo, Path, DemoSummary], workdir: Path
) -> None:
    conn, root, summary = tiny
    before = _table_hashes(conn)
    with pytest.raises(ConflictError):
        _create(conn, workdir / "elsewhere")
    assert _table_hashes(conn) == before
    assert not (workdir / "elsewhere" / "studies").exists()
    assert len(_tree(root)) > summary.file_count


def test_refuses_to_write_over_existing_files_and_leaves_the_database_empty(
    tiny: tuple[ConnInfo, Path, DemoSummary], make_database: Callable[[], ConnInfo]
) -> None:
    _, root, _ = tiny
    fresh = make_database()
    tree = _tree(root)
    with pytest.raises(ConflictError):
        _create(fresh, root)
    assert _tree(root) == tree
    assert not platform_exists(fresh)
    assert _rows(fresh, "SELECT to_regclass('public.studies')") == [(None,)]


def test_replaces_an_empty_leftover_schema(database: ConnInfo, workdir: Path) -> None:
    with psycopg.connect(**database.psycopg_kwargs()) as pg:
        apply_schema(pg.cursor())
    assert not platform_exists(database)
    summary = _create(database, workdir / "platform")
    assert platform_exists(database)
    assert summary.row_counts["studies"] >= 3
    assert _rows(database, "SELECT min(id) FROM studies") == [(1,)]


def test_a_failure_midway_leaves_neither_rows_nor_files(
    database: ConnInfo, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(file_tree, "write_file_tree", broken)
    with pytest.raises(OSError, match="disk full"):
        _create(database, workdir / "platform")
    assert _rows(database, "SELECT to_regclass('public.studies')") == [(None,)]
    assert not any((workdir / "platform").glob("*/*"))


def test_database_grows_in_proportion_to_scale(
    make_database: Callable[[], ConnInfo], workdir: Path
) -> None:
    small, large = make_database(), make_database()
    small_summary = _create(small, workdir / "s", scale=0.01, files_mb=0)
    large_summary = _create(large, workdir / "l", scale=0.05, files_mb=0)

    def heap_bytes(conn: ConnInfo) -> int:
        """Table data without indexes and free-space maps, whose fixed size blurs the ratio."""
        query = (
            "SELECT sum(pg_relation_size(c.oid)) FROM pg_class c "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'"
        )
        return int(_rows(conn, query)[0][0])

    assert 3.5 < heap_bytes(large) / heap_bytes(small) < 6.5
    ratio = large_summary.row_counts["observations"] / small_summary.row_counts["observations"]
    assert 4.0 < ratio < 6.0
    assert large_summary.database_bytes > small_summary.database_bytes + 2 * heap_bytes(small)
    assert small_summary.file_count == 0


def test_progress_is_monotonic_and_ends_at_one(database: ConnInfo, workdir: Path) -> None:
    seen: list[tuple[str, float]] = []
    _create(database, workdir / "p", on_progress=lambda stage, f: seen.append((stage, f)))
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions)
    assert seen[-1] == ("done", 1.0)
    assert {"observations", "files", "constraints"} <= {stage for stage, _ in seen}


@pytest.mark.parametrize(
    "kwargs",
    [{"scale": 0}, {"scale": -1}, {"scale": float("nan")}, {"files_mb": -1}, {"seed": -5}],
)
def test_rejects_invalid_arguments_before_any_work(
    workdir: Path, kwargs: dict[str, object]
) -> None:
    # Nothing listens on port 1: reaching the database would raise DatabaseError instead.
    unreachable = ConnInfo.from_url("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(InvalidInputError):
        _create(unreachable, workdir / "x", **kwargs)
    assert not (workdir / "x").exists()


@pytest.fixture
def database_name(pg_server: ConnInfo) -> Iterator[str]:
    name = f"cvdemo_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(**pg_server.psycopg_kwargs(), autocommit=True) as pg:
        pg.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def test_ensure_database_creates_once_and_reuses(pg_server: ConnInfo, database_name: str) -> None:
    created = ensure_database(pg_server, database_name)
    assert created == pg_server.with_database(database_name)
    assert ensure_database(pg_server, database_name) == created
    encoding = "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = %s"
    assert _rows(created, encoding, database_name) == [("UTF8",)]
    assert not platform_exists(created)
