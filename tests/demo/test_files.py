"""The study file tree generator, on its own (no database)."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
import zlib
from datetime import date
from pathlib import Path

import pytest

from clinvault.demo.files import (
    TEXT_SHARE,
    FileTreePlan,
    StudyLayout,
    check_tree_free,
    plan_file_tree,
    write_file_tree,
)
from clinvault.errors import ConflictError

MIB = 1 << 20


def _studies(count: int = 3, subjects: int = 12) -> list[StudyLayout]:
    return [
        StudyLayout(
            code=f"STU-{i:04d}",
            organization_code=f"ORG-{i % 2 + 1:03d}",
            title=f"Study {i}",
            start_date=date(2021, i, 1),
            site_numbers=("101", "102"),
            subject_numbers=tuple(f"{101 + j % 2}-{j:04d}" for j in range(1, subjects + 1)),
        )
        for i in range(1, count + 1)
    ]


def _plan(total_bytes: int = 2 * MIB, seed: int = 7) -> FileTreePlan:
    return plan_file_tree(["ORG-001", "ORG-002"], _studies(), total_bytes=total_bytes, seed=seed)


def _tree_digest(root: Path) -> list[tuple[str, int, str, int]]:
    """Every file and directory under root: path, size, SHA-256, mtime (ns)."""
    entries = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            entries.append((rel + "/", 0, "", 0))
        else:
            data = path.read_bytes()
            entries.append(
                (rel, len(data), hashlib.sha256(data).hexdigest(), path.stat().st_mtime_ns)
            )
    return entries


def test_plan_adds_up_to_the_requested_size_with_a_realistic_text_share() -> None:
    plan = _plan(total_bytes=64 * MIB)
    assert plan.total_bytes == pytest.approx(64 * MIB, rel=0.02)
    text = sum(
        f.size for f in plan.files if f.content_type.startswith(("text/", "application/json"))
    )
    assert text / plan.total_bytes == pytest.approx(TEXT_SHARE, abs=0.02)
    assert len({f.storage_path for f in plan.files}) == len(plan.files)


def test_plan_has_awkward_names_nesting_and_empty_directories() -> None:
    paths = [f.storage_path for f in _plan().files]
    assert any(" " in p for p in paths)
    assert any("Protokoll_Änderung_ü.pdf" in p for p in paths)
    assert any(p.endswith("résumé investigator.txt") for p in paths)
    assert any("治験概要" in p for p in paths)
    assert max(p.count("/") for p in paths) >= 6
    assert all(p.startswith(("studies/STU-", "uploads/ORG-")) for p in paths)
    plan = _plan()
    assert "studies/STU-0001/archive" in plan.empty_directories
    assert "uploads/ORG-001/inbox" in plan.empty_directories


def test_every_study_has_subject_files_even_in_a_tiny_tree() -> None:
    plan = _plan(total_bytes=MIB)
    with_subject = {f.study_code for f in plan.files if f.subject_number is not None}
    assert with_subject == {"STU-0001", "STU-0002", "STU-0003"}


def test_written_files_match_their_records_and_the_plan(tmp_path: Path) -> None:
    plan = _plan()
    written = write_file_tree(tmp_path, plan, seed=7)
    assert [w.spec for w in written] == list(plan.files)
    for item in written:
        data = (tmp_path / item.spec.storage_path).read_bytes()
        assert len(data) == item.size_bytes
        assert hashlib.sha256(data).hexdigest() == item.sha256
        assert (
            os.stat(tmp_path / item.spec.storage_path).st_mtime == item.spec.modified_at.timestamp()
        )
    for directory in plan.empty_directories:
        assert (tmp_path / directory).is_dir()
        assert not any((tmp_path / directory).iterdir())


def test_binary_files_have_real_headers_and_do_not_compress(tmp_path: Path) -> None:
    written = write_file_tree(tmp_path, _plan(total_bytes=8 * MIB), seed=7)
    magic = {
        "application/pdf": b"%PDF-1.4",
        "image/png": b"\x89PNG\r\n\x1a\n",
        "image/jpeg": b"\xff\xd8\xff",
        "application/dicom": b"\x00" * 128 + b"DICM",
    }
    for item in written:
        data = (tmp_path / item.spec.storage_path).read_bytes()
        if item.spec.content_type in magic:
            assert data.startswith(magic[item.spec.content_type])
            if len(data) > 64 << 10:
                assert len(zlib.compress(data, 6)) > 0.99 * len(data)


def test_text_files_compress_and_keep_whole_lines(tmp_path: Path) -> None:
    written = write_file_tree(tmp_path, _plan(total_bytes=8 * MIB), seed=7)
    csvs = [w for w in written if w.spec.content_type == "text/csv"]
    assert csvs
    for item in csvs:
        data = (tmp_path / item.spec.storage_path).read_bytes()
        assert data.endswith(b"\n")
        assert {line.count(b",") for line in data.splitlines()} == {8}
        assert len(zlib.compress(data, 6)) < len(data) / 3


def test_same_seed_same_tree_other_seed_other_bytes(tmp_path: Path) -> None:
    write_file_tree(tmp_path / "a", _plan(seed=1), seed=1)
    write_file_tree(tmp_path / "b", _plan(seed=1), seed=1)
    write_file_tree(tmp_path / "c", _plan(seed=2), seed=2)
    first = _tree_digest(tmp_path / "a")
    assert first == _tree_digest(tmp_path / "b")
    digests = {sha for _, _, sha, _ in first if sha}
    other = {sha for _, _, sha, _ in _tree_digest(tmp_path / "c") if sha}
    assert digests.isdisjoint(other)


def test_large_files_are_written_in_bounded_memory(tmp_path: Path) -> None:
    plan = plan_file_tree(["ORG-001"], _studies(1, 2), total_bytes=96 * MIB, seed=3)
    assert max(f.size for f in plan.files) > 16 * MIB
    tracemalloc.start()
    try:
        write_file_tree(tmp_path, plan, seed=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * MIB


def test_refuses_to_write_over_an_existing_tree(tmp_path: Path) -> None:
    check_tree_free(tmp_path)  # absent roots are fine
    (tmp_path / "studies").mkdir()
    check_tree_free(tmp_path)  # so are empty ones
    (tmp_path / "studies" / "keep.txt").write_text("platform data")
    with pytest.raises(ConflictError):
        check_tree_free(tmp_path)
    with pytest.raises(ConflictError):
        write_file_tree(tmp_path, _plan(), seed=7)
    assert (tmp_path / "studies" / "keep.txt").read_text() == "platform data"


def test_zero_bytes_plans_no_files() -> None:
    assert _plan(total_bytes=0).files == ()
