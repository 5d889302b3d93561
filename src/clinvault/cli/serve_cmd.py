"""``clinvault serve``: the API and the UI over HTTP; ``clinvault worker``: the jobs.

``serve`` starts a worker process beside the web server and stops it when it stops. The
jobs (backups, restores, verifications) then never share the web server's interpreter: a
backup's reading, hashing and compressing threads would otherwise take turns with every
request for the one interpreter lock, and the API would answer slowly exactly while an
administrator watches a backup. The two processes meet only in the catalog (jobs are
claimed there, progress and cancellation go through it), as several instances sharing one
catalog already do.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from clinvault.cli.common import context

_WORKER_STOP_SECONDS = 90.0
# Jobs are batch work: when both want the CPU, a request to the API goes first. A backup
# loses little (it waits only while requests are being answered) and the API stays quick.
_WORKER_NICE = 10


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8400,
    workers: Annotated[
        int,
        typer.Option(min=0, max=16, help="Web server processes (0: one per CPU, at most 4)."),
    ] = 0,
    jobs: Annotated[int, typer.Option(min=0, max=16, help="Jobs run at once.")] = 2,
    in_process_jobs: Annotated[
        bool,
        typer.Option(
            "--in-process-jobs",
            help="Run jobs in the web server's own process instead of a worker process.",
        ),
    ] = False,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log every HTTP request (what users did is in the audit trail either way).",
        ),
    ] = False,
) -> None:
    """Serve the REST API and the admin UI until interrupted; jobs run in a worker process.

    Several web server processes answer requests side by side (one Python process uses
    one CPU at a time); they share nothing but the catalog, like several instances do.
    """
    import uvicorn

    from clinvault.api.app import create_app

    ctx = context()
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "info",
        "access_log": access_log,
        "proxy_headers": False,
    }
    if in_process_jobs or jobs == 0:
        uvicorn.run(create_app(ctx, job_workers=jobs), **options)
        return
    ctx.catalog.upgrade()  # once, before several processes open the catalog
    processes = workers or min(4, os.cpu_count() or 1)
    with _worker_process(jobs):
        if processes == 1:
            uvicorn.run(create_app(ctx, job_workers=0), **options)
        else:
            ctx.catalog.dispose()
            uvicorn.run(
                "clinvault.api.app:create_web_app", factory=True, workers=processes, **options
            )


@contextlib.contextmanager
def _worker_process(jobs: int) -> Iterator[subprocess.Popen[bytes]]:
    argv = [sys.executable, "-m", "clinvault", "worker", "--jobs", str(jobs)]
    argv += ["--parent-pid", str(os.getpid()), "--nice", str(_WORKER_NICE)]
    # Same environment, so the same settings; a session of its own, so that its lower
    # priority holds against the web server (see _lower_priority).
    worker = subprocess.Popen(argv, start_new_session=True)
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.terminate()  # running jobs are cancelled and clean up
            try:
                worker.wait(timeout=_WORKER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def _lower_priority(nice: int) -> None:
    """Lower this process's CPU priority, and that of the tools its jobs start, by ``nice``.

    On Linux with autogroup scheduling (the default on most distributions), the CPU is
    shared first between sessions and only then, by nice value, between the processes of a
    session: a niced worker in its own session would still take an equal share against the
    web server. A worker that leads its own session (``serve`` starts it so; so does
    systemd) therefore also lowers its session's group, which holds only the worker and
    the tools it starts.
    """
    lowered = os.nice(nice)  # pg_dump, pg_restore and the job threads inherit it
    if os.getsid(0) != os.getpid():
        return  # a shell's session: lowering its group would slow the shell too
    with contextlib.suppress(OSError):  # no autogroup (other kernels, other systems)
        Path("/proc/self/autogroup").write_text(f"{lowered}\n")


def worker(
    jobs: Annotated[int, typer.Option(min=1, max=16, help="Jobs run at once.")] = 2,
    parent_pid: Annotated[
        int | None,
        typer.Option(hidden=True, help="Stop when this process is gone (set by serve)."),
    ] = None,
    nice: Annotated[
        int, typer.Option(min=0, max=19, help="Lower the CPU priority of jobs by this much.")
    ] = 0,
) -> None:
    """Run queued jobs (backups, restores, verifications) until interrupted.

    ``clinvault serve`` starts one; more can run on other hosts sharing a PostgreSQL
    catalog (a job is claimed by exactly one of them).
    """
    from clinvault.services.jobs import JobRunner

    if nice:
        _lower_priority(nice)
    ctx = context()
    ctx.catalog.upgrade()
    runner = JobRunner(ctx, workers=jobs)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    runner.start()
    try:
        while not stop.wait(1.0):
            if parent_pid is not None and os.getppid() != parent_pid:
                break  # the web server is gone without stopping us
    finally:
        runner.stop()
