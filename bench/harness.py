"""Timing commands side by side: wall time, peak RSS of the process, output size."""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Measurement:
    label: str
    seconds: float
    peak_rss_mb: float
    size_bytes: int | None = None
    stdout: str = ""
    samples: tuple[float, ...] = ()


def median_of(runs: int, measure: Callable[[], Measurement]) -> Measurement:
    """``measure`` run ``runs`` times: the median time, the largest peak RSS, and every time
    in ``samples`` (one run of a shared 2-core machine can be off by a third either way)."""
    return _summary([measure() for _ in range(max(1, runs))])


def interleaved(runs: int, measures: Sequence[Callable[[], Measurement]]) -> list[Measurement]:
    """Each of ``measures`` run ``runs`` times, taking turns: round ``r`` runs every one of
    them once, starting with a different one each round. Returns one summary per measure
    (as ``median_of``), whose ``samples`` are in round order, so that the times of one round
    can be compared with each other (see ``paired_ratio``).

    This machine's speed drifts by a third over minutes (other guests on its host): with
    all baseline runs first and all ClinVault runs after, the drift lands in the ratio.
    """
    results: list[list[Measurement]] = [[] for _ in measures]
    for round_index in range(max(1, runs)):
        start = round_index % len(measures)
        for index in [*range(start, len(measures)), *range(start)]:
            results[index].append(measures[index]())
    return [_summary(r) for r in results]


def paired_ratio(measured: Measurement, baseline: Measurement) -> float:
    """The median, over the rounds of ``interleaved``, of ``measured``'s time divided by
    ``baseline``'s time in the same round."""
    pairs = zip(measured.samples, baseline.samples, strict=True)
    return statistics.median(m / b for m, b in pairs)


def _summary(results: list[Measurement]) -> Measurement:
    times = tuple(m.seconds for m in results)
    return replace(
        results[-1],
        seconds=statistics.median(times),
        peak_rss_mb=max(m.peak_rss_mb for m in results),
        samples=times,
    )


def run_timed(
    label: str,
    argv: Sequence[str] | str,
    *,
    env: dict[str, str] | None = None,
    output: Path | None = None,
    shell: bool = False,
) -> Measurement:
    """Run a command to completion; measure its wall time and its own peak RSS.

    The time ends when the process does; the data it wrote is then synced to disk untimed,
    so the baselines, which never fsync, are not charged for it either.

    ``shell=True`` is for baselines that are pipelines (``tar | zstd``); the reported RSS is
    then the shell's largest child as the kernel accounts it for the process tree's leader.
    """
    stdout = output.open("wb") if output is not None else subprocess.PIPE
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv if not shell else ["bash", "-o", "pipefail", "-c", str(argv)],
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
    )
    captured = b""
    if proc.stdout is not None:
        captured = proc.stdout.read()
    err = proc.stderr.read() if proc.stderr is not None else b""
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    # Untimed: what this run left for the kernel to write out is not the next one's cost.
    os.sync()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if output is not None and hasattr(stdout, "close"):
        stdout.close()
    if proc.returncode != 0:
        shown = argv if isinstance(argv, str) else shlex.join(argv)
        raise RuntimeError(f"{label}: {shown} failed ({proc.returncode}): {err.decode()[-2000:]}")
    size = output.stat().st_size if output is not None and output.exists() else None
    return Measurement(label, seconds, usage.ru_maxrss / 1024, size, captured.decode())


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.1f} MB"
