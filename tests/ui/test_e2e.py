"""The admin UI end to end, in a real Chromium, against a real ``clinvault serve``.

This test builds nothing: ``make ui`` builds ``frontend/dist`` and installs the Node
dependencies first. It makes a tiny sample platform in a throwaway data directory, creates an
administrator and an auditor, serves ClinVault on a free loopback port, and runs the
Playwright suite in ``frontend/e2e`` against it. Screenshots of every screen land in
``test-artifacts/screenshots/``.

Skipped (with the reason) when the build, the Node dependencies or Chromium are missing;
``CLINVAULT_E2E_REQUIRED=1`` (set by ``make ui-test`` and CI) turns those skips into failures.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRONTEND = ROOT / "frontend"
CLINVAULT = Path(sys.executable).with_name("clinvault")
ADMIN = ("admin", "Ada Admin", "e2e-admin-password-1")
AUDITOR = ("auditor", "Otto Auditor", "e2e-auditor-password-2")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _chromium() -> str | None:
    given = os.environ.get("CHROMIUM_PATH")
    if given:
        return given
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _missing() -> str | None:
    if not (FRONTEND / "dist" / "index.html").is_file():
        return "frontend/dist is not built (run `make ui`)"
    if not (FRONTEND / "node_modules" / "@playwright" / "test").is_dir():
        return "frontend/node_modules is not installed (run `make ui`)"
    if shutil.which("npx") is None:
        return "Node.js (npx) is not installed"
    if _chromium() is None:
        return "Chromium is not installed (apt-get install chromium)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(args: list[str], env: dict[str, str], stdin: str | None = None) -> None:
    done = subprocess.run(
        [str(CLINVAULT), *args], env=env, input=stdin, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"clinvault {args[0]} failed:\n{done.stdout}\n{done.stderr}"


def _wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"clinvault serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"clinvault serve did not become ready at {url}")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ClinVault on a tiny sample platform, with an admin and an auditor."""
    missing = _missing()
    if missing:
        if os.environ.get("CLINVAULT_E2E_REQUIRED") == "1":
            pytest.fail(f"end-to-end UI tests required but cannot run: {missing}")
        pytest.skip(missing)
    home = tmp_path_factory.mktemp("e2e-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINVAULT_")}
    env.update(CLINVAULT_DATA_DIR=str(home), CLINVAULT_UI_DIR=str(FRONTEND / "dist"))
    _run(["demo-data", "--scale", "0.01", "--files-mb", "2"], env)
    os.mkfifo(home / "platform" / "uploads" / "e2e-pipe")  # a backup skips it and says so
    name, full_name, password = ADMIN
    _run(["users", "create-admin", "--username", name, "--full-name", full_name], env, password)
    name, full_name, password = AUDITOR
    _run(
        ["users", "create", "--username", name, "--full-name", full_name, "--role", "auditor"],
        env,
        password,
    )
    port = _free_port()
    log = (home / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(CLINVAULT), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, server)
        yield url
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()
        _stop_embedded(home)


def _stop_embedded(home: Path) -> None:
    """Stop the embedded PostgreSQL the demo data started, if it is still up."""
    pgdata = home / "pg"
    if not (pgdata / "postmaster.pid").exists():
        return
    from clinvault.engine.embedded import stop_embedded_server

    stop_embedded_server(pgdata)


def test_admin_ui_end_to_end_in_chromium(service: str) -> None:
    env = {
        **os.environ,
        "CLINVAULT_E2E_URL": service,
        "CHROMIUM_PATH": _chromium() or "",
        "E2E_ADMIN_USER": ADMIN[0],
        "E2E_ADMIN_PASSWORD": ADMIN[2],
        "E2E_AUDITOR_USER": AUDITOR[0],
        "E2E_AUDITOR_PASSWORD": AUDITOR[2],
        "CI": "1",
    }
    done = subprocess.run(
        ["npx", "--no-install", "playwright", "test"],
        cwd=FRONTEND,
        env=env,
        capture_output=True,
        text=True,
        timeout=800,
    )
    output = done.stdout + done.stderr
    print(output[-20_000:])
    assert done.returncode == 0, f"Playwright suite failed:\n{output[-8000:]}"
    assert " passed" in output and " failed" not in output
    shots = sorted(p.name for p in (ROOT / "test-artifacts" / "screenshots").glob("*.png"))
    assert len(shots) >= 20, f"missing screenshots: {shots}"
