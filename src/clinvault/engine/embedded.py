"""The embedded PostgreSQL server (from the ``pgserver`` package) used when no database is set.

The server runs from ``<data dir>/pg`` and outlives the process that started it, so that
every CLI call and the service share one server; the next call reuses it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import warnings
from pathlib import Path

from clinvault.engine.pgconn import ConnInfo
from clinvault.errors import DatabaseError


def bundled_bin_dir() -> Path | None:
    """Directory of the PostgreSQL binaries shipped with ``pgserver``, if installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    path = Path(POSTGRES_BIN_PATH)
    return path if path.is_dir() else None


def ensure_embedded_server(pgdata: Path) -> ConnInfo:
    """Start the embedded server in ``pgdata`` (or reuse the running one) and connect to it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pgserver

            pgdata.mkdir(parents=True, exist_ok=True)
            server = pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
        except (OSError, subprocess.SubprocessError, AssertionError) as exc:
            raise DatabaseError(f"cannot start the embedded PostgreSQL in {pgdata}: {exc}") from exc
    return ConnInfo.from_url(str(server.get_uri()))


def stop_embedded_server(pgdata: Path) -> None:
    """Stop the embedded server in ``pgdata`` if it is running."""
    if not (pgdata / "postmaster.pid").exists():
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

    # As root, pgserver runs the server as the data directory's owner; pg_ctl must match.
    user = None
    if os.geteuid() == 0:
        user = pwd.getpwuid(pgdata.stat().st_uid).pw_name
    with contextlib.suppress(subprocess.SubprocessError):
        pg_ctl(["-m", "fast", "-w", "stop"], pgdata=pgdata, user=user, timeout=60)
