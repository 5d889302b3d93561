"""What every CLI command shares: the service context, JSON output, progress display."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from clinvault.config import get_settings
from clinvault.engine.progress import ProgressCallback, ProgressReport
from clinvault.services.context import ServiceContext

err_console = Console(stderr=True)


def context() -> ServiceContext:
    return ServiceContext(get_settings())


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def human_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


@contextmanager
def progress_display(description: str) -> Iterator[ProgressCallback]:
    """A progress bar on stderr, fed by the engine's progress reports."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(report: ProgressReport) -> None:
            total = report.bytes_total or None
            bar.update(
                task,
                description=f"{description}: {report.stage}",
                completed=report.bytes_done,
                total=total,
            )

        yield update
