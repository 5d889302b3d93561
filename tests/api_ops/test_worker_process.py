"""``clinvault worker``: the process ``clinvault serve`` runs jobs in stops when told to, and
by itself when the web server that started it is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINVAULT_")}
    env["CLINVAULT_DATA_DIR"] = str(tmp_path / "data")
    env["CLINVAULT_CATALOG_URL"] = f"sqlite:///{tmp_path / 'catalog.db'}"
    env["CLINVAULT_SCHEDULER_ENABLED"] = "false"
    return env


def _start(tmp_path: Path, *args: str, own_session: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "clinvault", "worker", *args],
        env=_env(tmp_path),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=own_session,
    )


def _autogroup_nice(pid: int | str) -> int | None:
    """The nice value of a process's autogroup ("/autogroup-85 nice 0"), or None when
    autogroup scheduling is not in effect for it: the file is missing, or empty because
    the process belongs to a task group of its own (a container's cgroup, for one)."""
    try:
        fields = Path(f"/proc/{pid}/autogroup").read_text().split()
    except OSError:
        return None
    return int(fields[-1]) if fields else None


def _wait_for_catalog(tmp_path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not (tmp_path / "catalog.db").exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        assert time.monotonic() < deadline, "the worker did not open its catalog"
        time.sleep(0.1)
    time.sleep(1.0)  # past start-up, into its wait loop


def test_worker_stops_on_sigterm(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--jobs", "1")
    _wait_for_catalog(tmp_path, proc)

    proc.send_signal(signal.SIGTERM)

    assert proc.wait(timeout=30) == 0


def test_worker_stops_when_the_process_that_started_it_is_gone(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that is not the worker's parent
    proc = _start(tmp_path, "--parent-pid", str(gone.pid))
    _wait_for_catalog(tmp_path, proc)

    assert proc.wait(timeout=30) == 0


def test_worker_lowers_its_priority_when_asked(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--nice", "7")
    try:
        _wait_for_catalog(tmp_path, proc)
        nice = int(Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
        assert nice == os.nice(0) + 7
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.skipif(_autogroup_nice("self") is None, reason="no autogroup scheduling here")
def test_a_worker_leading_its_session_lowers_its_session_group(tmp_path: Path) -> None:
    """With autogroup, nice counts only inside a session: the worker serve starts (in a
    session of its own) lowers its session's group too, and a worker run from a shell
    leaves the shell's group as it was."""
    ours = _autogroup_nice("self")
    leader = _start(tmp_path / "leader", "--nice", "7", own_session=True)
    member = _start(tmp_path / "member", "--nice", "7")
    try:
        _wait_for_catalog(tmp_path / "leader", leader)
        _wait_for_catalog(tmp_path / "member", member)
        assert _autogroup_nice(leader.pid) == min(19, os.nice(0) + 7)
        assert _autogroup_nice(member.pid) == ours
        assert _autogroup_nice("self") == ours
    finally:
        for proc in (leader, member):
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
