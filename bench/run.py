"""``make bench``: ClinVault against the standard tools, side by side, in one run.

Builds (once, then reuses) a sample platform of the given scale in ``.bench/`` on the
embedded PostgreSQL, then times each ClinVault operation next to its baseline and prints
times, sizes, ratios, peak RSS and whether each target is met. Results are also written to
``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.harness import (
    Measurement,
    interleaved,
    mb,
    median_of,
    paired_ratio,
    run_timed,
    table,
)
from clinvault.config import Settings
from clinvault.demo import platform_exists
from clinvault.engine.pginspect import connect, server_facts
from clinvault.services.context import ServiceContext

ROOT = Path(__file__).resolve().parent.parent
CLI = str(ROOT / ".venv" / "bin" / "clinvault")
RUNS = 3  # default: each time reported is the median of this many runs


@dataclass
class Report:
    rows: list[list[str]] = field(
        default_factory=lambda: [["operation", "time", "size", "peak RSS", "vs baseline"]]
    )
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    data: dict[str, object] = field(default_factory=dict)
    runs: int = RUNS

    def add(self, m: Measurement, note: str = "") -> None:
        self.rows.append(
            [m.label, f"{m.seconds:.2f} s", mb(m.size_bytes), f"{m.peak_rss_mb:.0f} MB", note]
        )
        self.data[m.label] = {
            "seconds": m.seconds,
            "samples": list(m.samples),
            "size": m.size_bytes,
            "peak_rss_mb": m.peak_rss_mb,
        }

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))

    def render(self) -> str:
        lines = [table(self.rows), "", "targets:"]
        lines += [
            f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}" for name, ok, detail in self.checks
        ]
        return "\n".join(lines)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINVAULT_")}
    env["CLINVAULT_DATA_DIR"] = str(home)
    return env


def _clinvault(label: str, home: Path, *args: str) -> tuple[Measurement, dict[str, object]]:
    m = run_timed(label, [CLI, *args, "--json"], env=_env(home))
    return m, json.loads(m.stdout)


class _ClinVaultRun:
    """One ClinVault command, measured as often as it is called; keeps what it printed."""

    def __init__(self, label: str, home: Path, *args: str) -> None:
        self.label, self.home, self.args = label, home, args
        self.printed: dict[str, object] = {}

    def __call__(self) -> Measurement:
        m, self.printed = _clinvault(self.label, self.home, *self.args)
        return m


def _clinvault_median(
    runs: int, label: str, home: Path, *args: str, between: Callable[[], None] | None = None
) -> tuple[Measurement, dict[str, object]]:
    """The median of ``runs`` runs (``between`` before each but the first), and the JSON the
    last one printed."""
    command = _ClinVaultRun(label, home, *args)

    def once() -> Measurement:
        if between is not None and command.printed:
            between()
        return command()

    return median_of(runs, once), command.printed


def prepare(home: Path, scale: float, files_mb: int) -> ServiceContext:
    ctx = ServiceContext(Settings(data_dir=home))
    if not platform_exists(ctx.platform):
        print(
            f"creating the sample platform: scale {scale}, {files_mb} MB of files ...", flush=True
        )
        m = run_timed(
            "demo-data",
            [CLI, "demo-data", "--scale", str(scale), "--files-mb", str(files_mb), "--json"],
            env=_env(home),
        )
        print(f"  created in {m.seconds:.0f} s", flush=True)
    return ctx


def bench_database(ctx: ServiceContext, home: Path, work: Path, report: Report) -> None:
    conn = ctx.platform
    with connect(conn) as db:
        major = server_facts(db).major
        size = db.execute("SELECT pg_database_size(current_database())").fetchone()
    report.data["database_bytes"] = size[0] if size else None
    pg_dump = str(ctx.toolkit.find("pg_dump", major).path)
    env = {**os.environ, **conn.libpq_env()}
    # Warm the cache so every contestant reads the same hot pages.
    run_timed("warm-up", [pg_dump, "-Fc", "-Z0"], env=env, output=work / "warm.dump")
    (work / "warm.dump").unlink()
    clinvault = _ClinVaultRun(
        "clinvault database backup", home, "backup", "create", "--type", "database"
    )
    gz, raw, cv = interleaved(
        report.runs,
        [
            lambda: run_timed("pg_dump -Fc", [pg_dump, "-Fc"], env=env, output=work / "db.gz.dump"),
            lambda: run_timed(
                "pg_dump -Fc -Z0", [pg_dump, "-Fc", "-Z0"], env=env, output=work / "db.raw.dump"
            ),
            clinvault,
        ],
    )
    data = clinvault.printed
    cv = replace(cv, size_bytes=int(data["file_size_compressed"]))  # type: ignore[call-overload]
    vs_raw, vs_gz = paired_ratio(cv, raw), paired_ratio(cv, gz)
    report.add(gz)
    report.add(raw)
    report.add(cv, f"{vs_raw:.2f}x -Z0, {vs_gz:.2f}x -Fc")
    report.check("database backup <= 1.3x pg_dump -Fc -Z0", vs_raw <= 1.3, f"{vs_raw:.2f}x")
    report.check("database backup <= 0.6x pg_dump -Fc", vs_gz <= 0.6, f"{vs_gz:.2f}x")
    report.check(
        "compressed size <= pg_dump -Fc",
        (cv.size_bytes or 0) <= (gz.size_bytes or 0),
        f"{mb(cv.size_bytes)} vs {mb(gz.size_bytes)}",
    )
    report.check("peak RSS <= 300 MB (database)", cv.peak_rss_mb <= 300, f"{cv.peak_rss_mb:.0f} MB")
    report.data["database_backup_id"] = data["id"]
    (work / "db.raw.dump").unlink()
    report.data["pg_dump_file"] = str(work / "db.gz.dump")


def bench_restore(ctx: ServiceContext, home: Path, work: Path, report: Report) -> None:
    """pg_restore -j2 of a pg_dump -Fc dump, against ClinVault's full and one-study restore."""
    conn = ctx.platform
    backup_id = str(report.data["database_backup_id"])
    with connect(conn.with_database("postgres")) as db:
        major = server_facts(db).major
    pg_restore = str(ctx.toolkit.find("pg_restore", major).path)
    env = {**os.environ, **conn.with_database("bench_pg_restore").libpq_env()}

    def fresh_target() -> None:
        with connect(conn.with_database("postgres")) as db:
            db.execute("DROP DATABASE IF EXISTS bench_pg_restore")
            db.execute("CREATE DATABASE bench_pg_restore TEMPLATE template0")

    def pg_restore_once() -> Measurement:
        fresh_target()
        return run_timed(
            "pg_restore -j2 (of pg_dump -Fc)",
            [
                pg_restore,
                "-j",
                "2",
                "--exit-on-error",
                "-d",
                "bench_pg_restore",
                str(work / "db.gz.dump"),
            ],
            env=env,
        )

    base = median_of(report.runs, pg_restore_once)
    with connect(conn.with_database("postgres")) as db:
        db.execute("DROP DATABASE bench_pg_restore")

    def drop_checkpoints() -> None:
        run_timed(
            "drop checkpoints",
            [CLI, "restore", "checkpoints", "drop", "--keep", "0", "--yes"],
            env=_env(home),
        )

    full, _ = _clinvault_median(
        report.runs,
        "clinvault database restore",
        home,
        "restore",
        "run",
        backup_id,
        "--scope",
        "database",
        "--no-safety-backup",
        "--yes",
        between=drop_checkpoints,
    )
    drop_checkpoints()
    study_code = _first_study(ctx)
    study, _ = _clinvault_median(
        report.runs,
        f"clinvault study restore ({study_code})",
        home,
        "restore",
        "run",
        backup_id,
        "--study",
        study_code,
        "--no-safety-backup",
        "--yes",
    )
    drop_checkpoints()
    report.add(base)
    report.add(full, f"{full.seconds / base.seconds:.2f}x pg_restore -j2")
    report.add(study, f"{study.seconds / full.seconds:.2f}x full restore")
    report.check(
        "database restore <= 1.15x pg_restore -j2",
        full.seconds <= 1.15 * base.seconds,
        f"{full.seconds / base.seconds:.2f}x",
    )
    report.check(
        "study restore <= 0.5x full restore",
        study.seconds <= 0.5 * full.seconds,
        f"{study.seconds / full.seconds:.2f}x",
    )


def _first_study(ctx: ServiceContext) -> str:
    with connect(ctx.platform) as db:
        row = db.execute("SELECT code FROM studies ORDER BY id LIMIT 1").fetchone()
    return str(row[0]) if row else "STU-0001"


def bench_files(ctx: ServiceContext, home: Path, work: Path, report: Report) -> None:
    root = ctx.settings.resolved_files_root
    roots = " ".join(ctx.settings.file_roots)
    run_timed("warm-up", f"tar -cf - -C '{root}' {roots} > /dev/null", shell=True)
    tgz = run_timed(
        "tar czf", f"tar -czf - -C '{root}' {roots}", shell=True, output=work / "files.tgz"
    )
    clinvault = _ClinVaultRun("clinvault files backup", home, "backup", "create", "--type", "files")
    durable = work / "files.durable.tar.zst"
    tzst, tzst_sync, cv = interleaved(
        report.runs,
        [
            lambda: run_timed(
                "tar | zstd -3 -T2",
                f"tar -cf - -C '{root}' {roots} | zstd -3 -T2 -q -c",
                shell=True,
                output=work / "files.tar.zst",
            ),
            # The same, made durable as ClinVault makes its bundle (fsync before done).
            lambda: run_timed(
                "tar | zstd -3 -T2, fsync",
                f"tar -cf - -C '{root}' {roots} | zstd -3 -T2 -q -f -o '{durable}'"
                f" && sync '{durable}'",
                shell=True,
            ),
            clinvault,
        ],
    )
    data = clinvault.printed
    cv = replace(cv, size_bytes=int(data["file_size_compressed"]))  # type: ignore[call-overload]
    report.data["files_bytes"] = data["file_size_bytes"]
    vs_zstd = paired_ratio(cv, tzst)
    vs_durable = paired_ratio(cv, tzst_sync)
    report.add(tgz)
    report.add(tzst)
    report.add(replace(tzst_sync, size_bytes=durable.stat().st_size))
    report.add(
        cv,
        f"{vs_zstd:.2f}x tar|zstd ({vs_durable:.2f}x with fsync), "
        f"{cv.seconds / tgz.seconds:.2f}x tar czf",
    )
    report.check("files backup <= 1.3x tar | zstd -T2", vs_zstd <= 1.3, f"{vs_zstd:.2f}x")
    report.check("peak RSS <= 300 MB (files)", cv.peak_rss_mb <= 300, f"{cv.peak_rss_mb:.0f} MB")
    for name in ("files.tgz", "files.tar.zst", durable.name):
        (work / name).unlink()


def _reset_catalog(home: Path) -> None:
    """Each run starts with no backups; the platform itself is kept for the next run."""
    shutil.rmtree(home / "backups", ignore_errors=True)
    for path in home.glob("catalog.db*"):
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=float(os.environ.get("BENCH_SCALE", 10)))
    parser.add_argument("--files-mb", type=int, default=int(os.environ.get("BENCH_FILES_MB", 2048)))
    parser.add_argument(
        "--dir", type=Path, default=Path(os.environ.get("BENCH_DIR", ROOT / ".bench"))
    )
    parser.add_argument("--only", choices=["database", "files", "restore"], action="append")
    parser.add_argument(
        "--runs", type=int, default=int(os.environ.get("BENCH_RUNS", RUNS)), help="median of"
    )
    args = parser.parse_args(argv)
    only = set(args.only or ["database", "files", "restore"])
    if "restore" in only:
        only.add("database")
    home = args.dir.resolve() / f"scale-{args.scale:g}-files-{args.files_mb}"
    work = home / "work"
    work.mkdir(parents=True, exist_ok=True)
    _reset_catalog(home)
    ctx = prepare(home, args.scale, args.files_mb)
    report = Report(runs=max(1, args.runs))
    report.data.update(scale=args.scale, files_mb=args.files_mb, cpus=os.cpu_count())
    if "database" in only:
        bench_database(ctx, home, work, report)
    if "restore" in only:
        bench_restore(ctx, home, work, report)
    if "files" in only:
        bench_files(ctx, home, work, report)
    _reset_catalog(home)
    shutil.rmtree(work, ignore_errors=True)
    text = report.render()
    print(text)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (results / f"{stamp}.txt").write_text(text + "\n")
    (results / f"{stamp}.json").write_text(
        json.dumps({"data": report.data, "checks": report.checks}, indent=2) + "\n"
    )
    return 0 if all(ok for _, ok, _ in report.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
