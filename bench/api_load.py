"""API under load: concurrent clients listing backups while a backup runs.

``python -m bench.api_load`` serves the API (``clinvault serve``, in its own process, with
the jobs in its worker process unless ``--in-process-jobs``, on a loopback port) over the
sample platform of ``make bench`` (same scale, created once in ``.bench/`` when missing),
with a throwaway catalog holding a few hundred backup records. It starts a full backup,
waits until the backup is writing, then runs N client threads (``http.client``, one
connection each) calling ``GET /api/v1/backup/list`` back to back (``--think-ms`` adds a
pause) for a fixed time, and prints the request count, errors, latency percentiles and CPU
per request. The backup is then cancelled, and the catalog and storage are removed.
``--no-backup`` gives the baseline; ``--path /api/v1/auth/me`` the cost of a request that
only authenticates.

Bounded on purpose: at most 64 clients, at most 120 s, loopback only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-admin-password"
MAX_CLIENTS = 64
MAX_SECONDS = 120.0
HOST = "127.0.0.1"
LIST = "/api/v1/backup/list"


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _settings_env(home: Path, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINVAULT_")}
    env.update(
        CLINVAULT_DATA_DIR=str(home),
        CLINVAULT_CATALOG_URL=f"sqlite:///{work / 'catalog.db'}",
        CLINVAULT_STORAGE_URL=(work / "store").as_uri(),
        CLINVAULT_SCHEDULER_ENABLED="false",
    )
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def seed_catalog(env: dict[str, str], records: int) -> None:
    """The admin user and ``records`` completed backup records (catalog rows only)."""
    from clinvault.catalog.models import Backup, BackupStatus, BackupType, Role
    from clinvault.config import Settings
    from clinvault.services.actor import Actor
    from clinvault.services.auth import AuthService
    from clinvault.services.context import ServiceContext

    ctx = ServiceContext(
        Settings(
            data_dir=Path(env["CLINVAULT_DATA_DIR"]),
            catalog_url=env["CLINVAULT_CATALOG_URL"],
            storage_url=env["CLINVAULT_STORAGE_URL"],
        )
    )
    AuthService(ctx).create_user(
        "admin", "Bench Admin", Role.SYSTEM_ADMIN, PASSWORD, Actor.system()
    )
    start = datetime.now(UTC) - timedelta(days=records)
    kinds = list(BackupType)
    with ctx.catalog.session() as session:
        for n in range(records):
            when = start + timedelta(days=n)
            session.add(
                Backup(
                    id=uuid.uuid4(),
                    name=f"seeded-{n:05d}",
                    type=kinds[n % len(kinds)],
                    status=BackupStatus.COMPLETED,
                    compression="zstd",
                    compression_level=3,
                    file_size_bytes=1_000_000 + n,
                    file_size_compressed=200_000 + n,
                    compression_ratio=0.8,
                    checksum=f"{n:064x}",
                    created_by="Bench Admin",
                    created_at=when,
                    started_at=when,
                    completed_at=when + timedelta(seconds=30),
                    metadata_={"seeded": True},
                )
            )
    ctx.catalog.dispose()


def start_server(
    env: dict[str, str], port: int, log: Path, in_process_jobs: bool, workers: int
) -> subprocess.Popen[bytes]:
    """``clinvault serve`` in its own process, as an operator starts it: the web server,
    with the jobs in a worker process of their own (or in-process, to compare)."""
    argv = [
        sys.executable,
        "-m",
        "clinvault",
        "serve",
        f"--host={HOST}",
        f"--port={port}",
        f"--workers={workers}",
    ]
    if in_process_jobs:
        argv.append("--in-process-jobs")
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("the server did not become ready")


def client_loop(base: str, token: str, stop: float, tally: Tally, args: argparse.Namespace) -> None:
    """One client: one keep-alive connection, requests back to back (or with a pause) until
    ``stop``. The standard library's ``http.client`` costs a fraction of the CPU of a
    full-featured client (httpx took 2.7 ms a request, half the server's own cost), and the
    load generator shares the machine's cores with the server it measures."""
    headers = {"Authorization": f"Bearer {token}"}
    query = f"?{urlencode({'page_size': args.page_size})}" if args.path == LIST else ""
    target = urlsplit(base)
    connection = http.client.HTTPConnection(target.hostname or HOST, target.port, timeout=30)
    try:
        while time.monotonic() < stop:
            began = time.perf_counter()
            try:
                connection.request("GET", args.path + query, headers=headers)
                answer = connection.getresponse()
                body = answer.read()
                ok = answer.status == 200 and (args.path != LIST or json.loads(body)["total"])
                problem = None if ok else f"HTTP {answer.status}"
            except (OSError, http.client.HTTPException, ValueError) as exc:
                problem = type(exc).__name__
                connection.close()  # the next request connects again
            elapsed = time.perf_counter() - began
            with tally.lock:
                tally.latencies.append(elapsed)
                if problem:
                    tally.errors.append(problem)
            if args.think_ms:
                time.sleep(args.think_ms / 1000)
    finally:
        connection.close()


def client_process(
    job: tuple[str, str, float, int, argparse.Namespace],
) -> tuple[list[float], list[str], float]:
    """One load process with ``clients`` client threads: its latencies, errors and CPU.

    The clients are spread over several processes so that their own interpreter lock does
    not queue them: what is measured is the server's latency, not the load generator's."""
    base, token, stop, clients, args = job
    tally = Tally()
    threads = [
        threading.Thread(target=client_loop, args=(base, token, stop, tally, args))
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally.latencies, tally.errors, time.process_time()


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time so far of the web server: the ``serve`` process and its
    web server processes, not the worker process running the backup (Linux ``/proc``)."""
    total = 0.0
    pending = [pid]
    while pending:
        each = pending.pop()
        try:
            argv = Path(f"/proc/{each}/cmdline").read_bytes().split(b"\0")
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{each}/task/{each}/children").read_text().split()
        except OSError:
            continue
        if b"worker" in argv and b"clinvault" in argv:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        pending += [int(child) for child in children]
    return total


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def wait_running(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, object] = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] != "pending" and (job.get("bytes_done") or job["status"] != "running"):
            return job
        time.sleep(0.2)
    raise RuntimeError("the backup did not start")


def stop_backup(client: httpx.Client, job_id: str, timeout: float = 300) -> float:
    """Cancel the backup and wait for its job to end; returns how long that took."""
    began = time.monotonic()
    client.post(f"/api/v1/jobs/{job_id}/cancel")
    while time.monotonic() - began < timeout:
        if client.get(f"/api/v1/jobs/{job_id}").json()["status"] != "running":
            break
        time.sleep(0.2)
    return time.monotonic() - began


@dataclass
class Outcome:
    """What one load run measured."""

    tally: Tally
    wall: float
    server_cpu: float
    client_cpu: float
    before: dict[str, object]
    after: dict[str, object]
    cancel_seconds: float | None


@contextmanager
def served(
    env: dict[str, str], work: Path, in_process_jobs: bool, workers: int
) -> Iterator[tuple[str, int]]:
    """The service running on a free loopback port; yields its base URL and pid."""
    port = _free_port()
    server = start_server(env, port, work / "server.log", in_process_jobs, workers)
    try:
        yield f"http://{HOST}:{port}", server.pid
    finally:
        server.terminate()
        server.wait(timeout=120)


def load(base: str, server_pid: int, args: argparse.Namespace) -> Outcome:
    """Start the backup, run the clients, stop the backup."""
    answer = httpx.post(
        f"{base}/api/v1/auth/login",
        json={"username": "admin", "password": PASSWORD},
        timeout=60,
    )
    token = answer.json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=bearer, timeout=60) as admin:
        job_id = None
        before: dict[str, object] = {"status": "none"}
        if not args.no_backup:
            body: dict[str, object] = {"type": "full"}
            if args.level is not None:
                body["level"] = args.level
            job_id = admin.post("/api/v1/backup/create", json=body).json()["job_id"]
            before = wait_running(admin, job_id)
        stop = time.monotonic() + args.seconds
        shares = [
            args.clients // args.client_processes + (i < args.clients % args.client_processes)
            for i in range(args.client_processes)
        ]
        began, cpu = time.monotonic(), _cpu_seconds(server_pid)
        with ProcessPoolExecutor(len(shares), mp_context=get_context("spawn")) as pool:
            results = list(
                pool.map(
                    client_process,
                    [(base, token, stop, n, args) for n in shares if n],
                )
            )
        wall = time.monotonic() - began
        server_cpu = _cpu_seconds(server_pid) - cpu
        tally = Tally()
        client_cpu = 0.0
        for latencies, errors, used in results:
            tally.latencies += latencies
            tally.errors += errors
            client_cpu += used
        after: dict[str, object] = {"status": "none", "percent": 0, "stage": None}
        cancel_seconds = None
        if job_id is not None:
            after = admin.get(f"/api/v1/jobs/{job_id}").json()
            if after["status"] == "running":
                cancel_seconds = stop_backup(admin, job_id)
    return Outcome(tally, wall, server_cpu, client_cpu, before, after, cancel_seconds)


def report(out: Outcome, args: argparse.Namespace) -> bool:
    lat = [x * 1000 for x in out.tally.latencies]
    errors = out.tally.errors
    jobs = "in the web server" if args.in_process_jobs else "in a worker process"
    print(
        f"clients          {args.clients} threads in {args.client_processes} processes for "
        f"{args.seconds:g} s on {args.path}, page_size "
        f"{args.page_size}, think {args.think_ms:g} ms; jobs {jobs}"
    )
    print(f"catalog          {args.records} seeded backups (SQLite), listed newest first")
    print(
        f"backup during    {out.before['status']} at start, {out.after['status']} at end "
        f"({out.after['percent']}% done, stage {out.after['stage']})"
    )
    if out.cancel_seconds is not None:
        print(f"cancel           the backup job ended {out.cancel_seconds:.1f} s after its cancel")
    print(f"requests         {len(lat)} in {out.wall:.1f} s ({len(lat) / out.wall:.0f}/s)")
    print(
        f"cpu              server {out.server_cpu:.1f} s "
        f"({out.server_cpu / max(1, len(lat)) * 1000:.1f} ms a request), "
        f"clients {out.client_cpu:.1f} s; {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(f"errors           {len(errors)}" + (f" {sorted(set(errors))}" if errors else ""))
    if lat:
        print(
            f"latency ms       p50 {percentile(lat, 50):.1f}  p95 {percentile(lat, 95):.1f}  "
            f"p99 {percentile(lat, 99):.1f}  max {max(lat):.1f}  mean {statistics.fmean(lat):.1f}"
        )
    ok = bool(lat) and not errors and percentile(lat, 95) < args.p95_target_ms
    print(
        f"target           p95 < {args.p95_target_ms:g} ms, no errors: {'PASS' if ok else 'FAIL'}"
    )
    return ok


def run(args: argparse.Namespace) -> int:
    from bench.run import prepare

    home = args.dir.resolve() / f"scale-{args.scale:g}-files-{args.files_mb}"
    home.mkdir(parents=True, exist_ok=True)
    prepare(home, args.scale, args.files_mb)
    work = Path(tempfile.mkdtemp(prefix="api-load-", dir=home))
    try:
        env = _settings_env(home, work)
        seed_catalog(env, args.records)
        with served(env, work, args.in_process_jobs, args.workers) as (base, server_pid):
            outcome = load(base, server_pid, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if report(outcome, args) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=float(os.environ.get("BENCH_SCALE", 10)))
    parser.add_argument("--files-mb", type=int, default=int(os.environ.get("BENCH_FILES_MB", 2048)))
    parser.add_argument(
        "--dir", type=Path, default=Path(os.environ.get("BENCH_DIR", ROOT / ".bench"))
    )
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument(
        "--client-processes", type=int, default=4, help="Processes the clients run in."
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--records", type=int, default=500, help="Backup records in the catalog.")
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument(
        "--path", default=LIST, help="GET this path instead (e.g. /api/v1/auth/me, a floor)."
    )
    parser.add_argument(
        "--level", type=int, default=None, help="zstd level of the backup (default: service's)."
    )
    parser.add_argument(
        "--think-ms", type=float, default=0.0, help="Pause of each client between requests."
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="clinvault serve --workers (0: its default)."
    )
    parser.add_argument(
        "--in-process-jobs",
        action="store_true",
        help="Run the backup in the web server's process (clinvault serve --in-process-jobs).",
    )
    parser.add_argument("--no-backup", action="store_true", help="Baseline: no backup runs.")
    parser.add_argument("--p95-target-ms", type=float, default=200.0)
    parser.add_argument("--keep", action="store_true", help="Keep the catalog and server log.")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"clients must be 1 to {MAX_CLIENTS} and seconds at most {MAX_SECONDS:g}")
    if args.think_ms < 0 or not 1 <= args.client_processes <= 16:
        parser.error("think-ms must not be negative, client-processes 1 to 16")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
