"""The PostgreSQL command layer: client choice, credentials, errors, cancellation."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

import pytest

from clinvault.engine.pgconn import ConnInfo
from clinvault.engine.pginspect import connect, server_facts
from clinvault.engine.pgtools import PgToolkit, open_tool, run_tool, tool_environment
from clinvault.errors import CancelledError, ToolError, ToolNotFoundError

pytestmark = pytest.mark.pg


def _server_major(conn: ConnInfo) -> int:
    with connect(conn) as db:
        return server_facts(db).major


def test_chosen_client_is_the_oldest_not_older_than_the_server(pg_server: ConnInfo) -> None:
    kit = PgToolkit()
    major = _server_major(pg_server)
    tool = kit.find("pg_dump", major)
    assert tool.major >= major
    assert all(t.major < major or t.major >= tool.major for t in kit.candidates("pg_dump"))


def test_no_client_new_enough_is_a_clear_error() -> None:
    with pytest.raises(ToolNotFoundError, match="no pg_restore of major version 99"):
        PgToolkit().find("pg_restore", 99)


def test_password_travels_in_a_private_passfile_never_the_environment() -> None:
    conn = ConnInfo("db.example", 5433, "backup", "clinical", password="s3cr:et\\pw")
    with tool_environment(conn) as env:
        assert "PGPASSWORD" not in env
        passfile = Path(env["PGPASSFILE"])
        assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
        assert passfile.read_text() == "db.example:5433:*:backup:s3cr\\:et\\\\pw\n"
        assert all("s3cr" not in v for k, v in env.items() if k != "PGPASSFILE")
    assert not passfile.exists()


def test_failing_tool_error_names_the_cause_without_the_password(pg_server: ConnInfo) -> None:
    conn = ConnInfo(
        pg_server.host, pg_server.port, pg_server.user, "no_such_db_x", password="hunter2hunter2"
    )
    tool = PgToolkit().find("psql", _server_major(pg_server))
    with pytest.raises(ToolError) as info:
        run_tool(tool, ["-c", "select 1"], conn)
    assert "no_such_db_x" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_streaming_tool_output_and_cancellation(pg_server: ConnInfo) -> None:
    tool = PgToolkit().find("psql", _server_major(pg_server))
    with open_tool(tool, ["-At", "-c", "select 40 + 2"], pg_server, read_stdout=True) as proc:
        out = proc.stdout.read()
    assert out.strip() == b"42"

    cancel = threading.Event()
    started = time.monotonic()
    threading.Timer(0.3, cancel.set).start()
    with (
        pytest.raises(CancelledError),
        open_tool(
            tool, ["-c", "select pg_sleep(30)"], pg_server, read_stdout=True, cancel=cancel
        ) as proc,
    ):
        proc.stdout.read()
    assert time.monotonic() - started < 10
