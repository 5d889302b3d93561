"""The study file tree of the sample platform: what the platform keeps on disk next to its database.

A real platform stores mostly incompressible documents (scanned PDFs, images, DICOM) and a
smaller share of text (CSV exports, notes, JSON metadata). Backup speed and compression ratio
depend on that mix, so the generator reproduces it: about 12 % of the bytes are text.

Everything is deterministic for a seed (same names, bytes and modification times) and written
in chunks of at most 1 MiB, so a tree of several gigabytes needs no more memory than a small
one. Each file has its own ``random.Random``, seeded by the seed and the path, so no two files
share content and compressors cannot find long-range repeats that a real tree would not have.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final, Literal

from clinvault.errors import ConflictError

FILE_ROOTS: Final[tuple[str, ...]] = ("studies", "uploads")
CHUNK_SIZE: Final = 1 << 20
TEXT_SHARE: Final = 0.12
AVERAGE_BINARY_FILE: Final = 400 << 10
MIN_FILE_SIZE: Final = 256
RANDOM_POOL_SIZE: Final = 4 * CHUNK_SIZE

FileKind = Literal["pdf", "png", "jpeg", "dicom", "csv", "text", "json"]

CONTENT_TYPES: Final[dict[FileKind, str]] = {
    "pdf": "application/pdf",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "dicom": "application/dicom",
    "csv": "text/csv",
    "text": "text/plain",
    "json": "application/json",
}
_TEXT_KINDS: Final[frozenset[FileKind]] = frozenset({"csv", "text", "json"})
# Median size of each kind before the sizes are fitted to the requested total.
_MEDIAN_SIZE: Final[dict[FileKind, int]] = {
    "pdf": 300 << 10,
    "png": 600 << 10,
    "jpeg": 400 << 10,
    "dicom": 1536 << 10,
    "csv": 256 << 10,
    "text": 8 << 10,
    "json": 2 << 10,
}


@dataclass(frozen=True)
class StudyLayout:
    """What the file tree needs to know about one study of the database."""

    code: str
    organization_code: str
    title: str
    start_date: date
    site_numbers: tuple[str, ...]
    subject_numbers: tuple[str, ...]


@dataclass(frozen=True)
class FileSpec:
    """One file to generate; ``storage_path`` is relative to the files root, POSIX style."""

    storage_path: str
    kind: FileKind
    category: str
    title: str
    size: int
    organization_code: str
    study_code: str | None
    subject_number: str | None
    modified_at: datetime

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.kind]

    @property
    def file_name(self) -> str:
        return self.storage_path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class FileTreePlan:
    """Every file and every deliberately empty directory of a tree."""

    files: tuple[FileSpec, ...]
    empty_directories: tuple[str, ...]

    @property
    def total_bytes(self) -> int:
        return sum(spec.size for spec in self.files)


@dataclass(frozen=True)
class GeneratedFile:
    """A file as written: its real size and SHA-256 (hex)."""

    spec: FileSpec
    size_bytes: int
    sha256: str


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Draft:
    path: str
    kind: FileKind
    category: str
    title: str
    weight: float
    organization_code: str
    study_code: str | None = None
    subject_number: str | None = None
    day: int = 0


def plan_file_tree(
    organization_codes: Sequence[str],
    studies: Sequence[StudyLayout],
    *,
    total_bytes: int,
    seed: int,
) -> FileTreePlan:
    """Lay out the tree: names, kinds and sizes adding up to about ``total_bytes``."""
    if total_bytes <= 0:
        return FileTreePlan((), ())
    rng = random.Random(f"clinvault-files-plan:{seed}")  # noqa: S311 (sample data)
    drafts = [d for study in studies for d in _study_drafts(study, rng)]
    drafts += [d for code in organization_codes for d in _upload_drafts(code, rng)]
    drafts += _subject_drafts(studies, rng, _subject_file_budget(total_bytes, drafts))
    sizes = _fit_sizes(drafts, total_bytes)
    epoch = datetime(2019, 1, 1, tzinfo=UTC)
    files = tuple(
        FileSpec(
            storage_path=d.path,
            kind=d.kind,
            category=d.category,
            title=d.title,
            size=size,
            organization_code=d.organization_code,
            study_code=d.study_code,
            subject_number=d.subject_number,
            modified_at=epoch + timedelta(days=d.day, seconds=rng.randrange(8 * 3600, 19 * 3600)),
        )
        for d, size in zip(drafts, sizes, strict=True)
    )
    empty = tuple(f"studies/{s.code}/archive" for s in studies)
    empty += tuple(f"uploads/{code}/inbox" for code in organization_codes)
    return FileTreePlan(files, empty)


def _weight(kind: FileKind, rng: random.Random) -> float:
    """A log-normal size around the kind's median: most files small, a few large."""
    return _MEDIAN_SIZE[kind] * rng.lognormvariate(0.0, 0.6)


def _study_day(study: StudyLayout, rng: random.Random, spread: int = 540) -> int:
    return (study.start_date - date(2019, 1, 1)).days + rng.randrange(spread)


def _study_drafts(study: StudyLayout, rng: random.Random) -> list[_Draft]:
    """Protocol, amendment, metadata, exports and investigator CVs of one study."""
    base = f"studies/{study.code}"
    day0 = (study.start_date - date(2019, 1, 1)).days

    def draft(path: str, kind: FileKind, category: str, title: str, day: int) -> _Draft:
        return _Draft(
            f"{base}/{path}",
            kind,
            category,
            title,
            _weight(kind, rng),
            study.organization_code,
            study.code,
            day=day,
        )

    drafts = [
        draft("metadata.json", "json", "metadata", study.title, day0),
        draft("protocol/Protocol v1.0 final.pdf", "pdf", "protocol", "Protocol v1.0", day0 - 30),
        draft(
            "protocol/amendments/Protokoll_Änderung_ü.pdf",
            "pdf",
            "amendment",
            "Protokolländerung 1",
            _study_day(study, rng),
        ),
    ]
    for month in (3, 9):
        export_day = day0 + month * 30
        stamp = (date(2019, 1, 1) + timedelta(days=export_day)).strftime("%Y-%m")
        drafts.append(
            draft(
                f"data exports/lab_results_{stamp}.csv",
                "csv",
                "lab_export",
                f"Lab results export {stamp}",
                export_day,
            )
        )
    for site in study.site_numbers:
        drafts.append(
            draft(
                f"sites/{site}/regulatory/résumé investigator.txt",
                "text",
                "investigator_cv",
                f"Investigator CV, site {site}",
                day0 + rng.randrange(60),
            )
        )
    return drafts


def _upload_drafts(organization_code: str, rng: random.Random) -> list[_Draft]:
    """Organization-level uploads: meeting notes, scans and a report with a non-Latin name."""
    base = f"uploads/{organization_code}"
    day = rng.randrange(365, 1800)
    stamp = (date(2019, 1, 1) + timedelta(days=day)).strftime("%Y/%m")
    specs: list[tuple[str, FileKind, str, str]] = [
        (f"{stamp}/Meeting notes Q1 (draft).txt", "text", "notes", "Meeting notes Q1"),
        (f"{stamp}/scan_00012.jpg", "jpeg", "scan", "Scanned correspondence"),
        ("shared/治験概要 report.pdf", "pdf", "report", "Trial overview report"),
    ]
    return [
        _Draft(f"{base}/{p}", kind, cat, title, _weight(kind, rng), organization_code, day=day)
        for p, kind, cat, title in specs
    ]


def _subject_file_budget(total_bytes: int, drafts: Sequence[_Draft]) -> int:
    """How many per-subject files keep the average binary file near its realistic size."""
    binary_bytes = total_bytes * (1 - TEXT_SHARE)
    other_binaries = sum(1 for d in drafts if d.kind not in _TEXT_KINDS)
    return max(0, round(binary_bytes / AVERAGE_BINARY_FILE) - other_binaries)


def _subject_drafts(
    studies: Sequence[StudyLayout], rng: random.Random, budget: int
) -> list[_Draft]:
    """Consent forms, ECGs and images of subjects: at least one per study, then spread evenly."""
    candidates: list[_Draft] = []
    firsts: list[_Draft] = []
    for study in studies:
        for index, subject in enumerate(study.subject_numbers):
            subject_drafts = _one_subject_drafts(study, subject, rng)
            if index == 0:
                firsts.append(subject_drafts[0])
                candidates += subject_drafts[1:]
            else:
                candidates += subject_drafts
    rng.shuffle(candidates)
    chosen = firsts + candidates[: max(0, budget - len(firsts))]
    return sorted(chosen, key=lambda d: d.path)


def _one_subject_drafts(study: StudyLayout, subject: str, rng: random.Random) -> list[_Draft]:
    site = subject.split("-", 1)[0]
    base = f"studies/{study.code}/sites/{site}/subjects/{subject}"
    day = _study_day(study, rng)
    visit = rng.randrange(2, 12)
    specs: list[tuple[str, FileKind, str, str]] = [
        ("consent/informed_consent_signed.pdf", "pdf", "consent", "Signed informed consent"),
        (f"ecg/ECG visit {visit:02d}.png", "png", "ecg", f"ECG, visit {visit}"),
        (f"imaging/visit_{visit:02d}/CT_0001.dcm", "dicom", "imaging", f"CT, visit {visit}"),
    ]
    return [
        _Draft(
            f"{base}/{p}",
            kind,
            cat,
            title,
            _weight(kind, rng),
            study.organization_code,
            study.code,
            subject,
            day,
        )
        for p, kind, cat, title in specs
    ]


def _fit_sizes(drafts: Sequence[_Draft], total_bytes: int) -> list[int]:
    """Scale text and binary weights separately so that text is ``TEXT_SHARE`` of the total."""
    targets = {True: total_bytes * TEXT_SHARE, False: total_bytes * (1 - TEXT_SHARE)}
    sums = {True: 0.0, False: 0.0}
    for d in drafts:
        sums[d.kind in _TEXT_KINDS] += d.weight
    sizes = []
    for d in drafts:
        is_text = d.kind in _TEXT_KINDS
        factor = targets[is_text] / sums[is_text] if sums[is_text] else 0.0
        sizes.append(max(MIN_FILE_SIZE, round(d.weight * factor)))
    return sizes


# --------------------------------------------------------------------------- writing


def check_tree_free(root: Path) -> None:
    """Refuse to generate over an existing tree: the demo never overwrites a platform's files."""
    for name in FILE_ROOTS:
        path = root / name
        if path.is_symlink() or (path.exists() and (not path.is_dir() or any(path.iterdir()))):
            raise ConflictError(f"{path} already exists and is not empty")


def remove_file_tree(root: Path) -> None:
    """Remove the generated roots (after a failed run that passed :func:`check_tree_free`)."""
    for name in FILE_ROOTS:
        shutil.rmtree(root / name, ignore_errors=True)


def write_file_tree(
    root: Path,
    plan: FileTreePlan,
    *,
    seed: int,
    on_progress: Callable[[float], None] | None = None,
) -> list[GeneratedFile]:
    """Write every file of ``plan`` under ``root``, hashing on the fly; return what was written."""
    check_tree_free(root)
    for name in FILE_ROOTS:
        (root / name).mkdir(parents=True, exist_ok=True)
    for directory in plan.empty_directories:
        (root / directory).mkdir(parents=True, exist_ok=True)
    pools = _ContentPools(seed)
    total = max(1, plan.total_bytes)
    done = 0
    written = []
    for spec in plan.files:
        written.append(_write_file(root, spec, seed, pools))
        done += spec.size
        if on_progress is not None:
            on_progress(min(1.0, done / total))
    return written


def _write_file(root: Path, spec: FileSpec, seed: int, pools: _ContentPools) -> GeneratedFile:
    """Stream one file to disk, hashing each chunk as it goes (nothing is read back)."""
    path = root / spec.storage_path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"clinvault-file:{seed}:{spec.storage_path}")  # noqa: S311
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as fh:
        for chunk in _content(spec, rng, pools):
            digest.update(chunk)
            fh.write(chunk)
            size += len(chunk)
    stamp = int(spec.modified_at.timestamp() * 1_000_000_000)
    os.utime(path, ns=(stamp, stamp))
    return GeneratedFile(spec, size, digest.hexdigest())


def _content(spec: FileSpec, rng: random.Random, pools: _ContentPools) -> Iterator[bytes]:
    if spec.kind == "json":
        yield _json_metadata(spec)
    elif spec.kind == "csv":
        yield from _text_stream(spec.size, pools.csv_header, pools.csv_block, rng)
    elif spec.kind == "text":
        yield from _text_stream(spec.size, pools.text_header(spec), pools.prose_block, rng)
    else:
        header, trailer = _binary_frame(spec.kind, rng)
        yield header
        yield from pools.random_stream(rng, max(0, spec.size - len(header) - len(trailer)))
        yield trailer


def _binary_frame(kind: FileKind, rng: random.Random) -> tuple[bytes, bytes]:
    """Plausible magic numbers and trailers, so tools identify the files as what they claim."""
    if kind == "pdf":
        return (
            b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Filter /DCTDecode >>\nstream\n",
            b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n",
        )
    if kind == "png":
        ihdr = struct.pack(
            ">IIBBBBB", rng.randrange(800, 2400), rng.randrange(600, 1800), 8, 2, 0, 0, 0
        )
        chunk = b"IHDR" + ihdr
        header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk
        header += struct.pack(">I", zlib.crc32(chunk)) + b"\x00\x00\x00\x00IDAT"
        return header, b"\x00\x00\x00\x00IEND\xaeB`\x82"
    if kind == "jpeg":
        return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00", b"\xff\xd9"
    return b"\x00" * 128 + b"DICM\x02\x00\x10\x00UI\x14\x001.2.840.10008.1.2.1\x00", b""


def _json_metadata(spec: FileSpec) -> bytes:
    document = {
        "study": spec.study_code,
        "organization": spec.organization_code,
        "title": spec.title,
        "schema_version": 3,
        "retention": {"years": 25, "regulation": "21 CFR 312.62"},
        "modified_at": spec.modified_at.isoformat(),
    }
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()


def _text_stream(
    size: int,
    header: bytes,
    block: Callable[[random.Random, int], bytes],
    rng: random.Random,
) -> Iterator[bytes]:
    """Header then generated lines, cut at a line end so that no line is truncated."""
    yield header
    remaining = size - len(header)
    while remaining > 0:
        data = block(rng, min(CHUNK_SIZE, remaining))
        if len(data) > remaining:
            cut = data.rfind(b"\n", 0, remaining)
            data = data[: cut + 1] if cut >= 0 else b""
        if not data:
            return
        yield data
        remaining -= len(data)


_LAB_ROWS: Final = (
    ("HGB", "g/dL", 12.0, 17.5),
    ("WBC", "10^9/L", 4.0, 11.0),
    ("PLT", "10^9/L", 150, 400),
    ("NA", "mmol/L", 135, 145),
    ("K", "mmol/L", 3.5, 5.1),
    ("CREAT", "mg/dL", 0.6, 1.3),
    ("ALT", "U/L", 7, 56),
    ("AST", "U/L", 10, 40),
    ("GLUC", "mg/dL", 70, 99),
    ("CRP", "mg/L", 0, 10),
)

_SENTENCES: Final = (
    "The monitoring visit confirmed source data verification for all enrolled subjects.",
    "Two protocol deviations were noted and escalated to the sponsor.",
    "The site coordinator will upload the missing laboratory certificates by Friday.",
    "Investigator training on the amended protocol was completed and documented.",
    "Drug accountability logs were reviewed; no discrepancies were found.",
    "The data management plan requires query resolution within ten working days.",
    "Next interim analysis is planned after the last subject completes week 24.",
    "Ethics committee approval for amendment 2 was received on schedule.",
    "Temperature excursions in the pharmacy fridge were reported and assessed.",
    "Die Schulung des Prüfpersonals wurde erfolgreich abgeschlossen.",
    "Les données de laboratoire ont été vérifiées par l'équipe de monitoring.",
    "Serious adverse events were reported to the safety desk within 24 hours.",
)


class _ContentPools:
    """Material from which content is assembled quickly, built once per tree.

    Text: pre-rendered fragments joined by random indices, which runs at a few hundred MB/s
    in pure Python and compresses like real exports (about 5-8x), unlike a repeated block.

    Joining pre-rendered fragments picked by random indices runs at a few hundred MB/s in
    pure Python and compresses like real exports (about 5-8x), unlike repeating one block.
    """

    csv_header = (
        b"subject_number,visit,collected_at,value,test_code,unit,reference_low,"
        b"reference_high,flag\n"
    )

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"clinvault-text-pools:{seed}")  # noqa: S311
        self.prefixes = [
            f"{rng.randrange(101, 130)}-{rng.randrange(1, 400):04d},V{rng.randrange(1, 15):02d},"
            f"20{rng.randrange(19, 25)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
            f"T{rng.randrange(7, 12):02d}:{rng.randrange(60):02d}:00Z,"
            for _ in range(256)
        ]
        self.values = [f"{rng.uniform(0, 250):.{rng.randrange(0, 3)}f}" for _ in range(4096)]
        self.suffixes = [
            f",{code},{unit},{low},{high},{flag}\n"
            for code, unit, low, high in _LAB_ROWS
            for flag in ("N", "N", "N", "N", "H", "L")
        ][:64]
        self.sentences = [s + (" " if i % 5 else "\n") for i, s in enumerate(_SENTENCES * 4)]
        self.random_pool = rng.randbytes(RANDOM_POOL_SIZE)

    def random_stream(self, rng: random.Random, size: int) -> Iterator[bytes]:
        """Incompressible bytes at over 1 GB/s: a random slice of the pool, bytes permuted.

        ``randbytes`` alone runs at about 450 MB/s. A slice of a random pool passed through a
        random byte permutation is still uniformly random, and two chunks never share a byte
        sequence a compressor could match (the permutations differ), so it stays as
        incompressible as fresh randomness at three times the speed.
        """
        pool = self.random_pool
        while size > 0:
            step = min(CHUNK_SIZE, size)
            start = rng.randrange(len(pool) - step + 1)
            table = bytes(rng.sample(range(256), 256))
            yield pool[start : start + step].translate(table)
            size -= step

    def text_header(self, spec: FileSpec) -> bytes:
        return f"{spec.title}\n{'=' * len(spec.title)}\n\n".encode()

    def csv_block(self, rng: random.Random, size: int) -> bytes:
        lines = size // 60 + 1
        raw = rng.randbytes(lines * 4)
        prefixes = map(self.prefixes.__getitem__, raw[:lines])
        values = map(
            self.values.__getitem__, (i & 4095 for i in memoryview(raw[2 * lines :]).cast("H"))
        )
        suffixes = map(
            self.suffixes.__getitem__, (i % len(self.suffixes) for i in raw[lines : 2 * lines])
        )
        return "".join(
            itertools.chain.from_iterable(zip(prefixes, values, suffixes, strict=True))
        ).encode()

    def prose_block(self, rng: random.Random, size: int) -> bytes:
        count = size // 60 + 1
        picks = (i % len(self.sentences) for i in rng.randbytes(count))
        return "".join(map(self.sentences.__getitem__, picks)).encode()
