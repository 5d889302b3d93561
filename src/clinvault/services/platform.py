"""The platform being protected: its database connection and its files root.

With no database configured, the embedded PostgreSQL is started (or reused) and its
``clinical`` database is created when missing, so the product runs with zero setup.
"""

from __future__ import annotations

from clinvault.config import EMBEDDED_DATABASE, Settings
from clinvault.engine.embedded import ensure_embedded_server
from clinvault.engine.pgconn import ConnInfo
from clinvault.engine.pginspect import connect


def platform_server(settings: Settings) -> ConnInfo:
    """Connection to the platform's server (the configured database, or the embedded one)."""
    if settings.database_url is not None:
        return ConnInfo.from_url(settings.database_url.get_secret_value())
    server = ensure_embedded_server(settings.embedded_pgdata)
    return server.with_database(EMBEDDED_DATABASE)


def platform_database(settings: Settings) -> ConnInfo:
    """Connection to the platform database, creating the embedded one when missing."""
    conn = platform_server(settings)
    if settings.database_url is None:
        admin = conn.with_database("postgres")
        with connect(admin) as db:
            exists = db.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (conn.database,)
            ).fetchone()
            if not exists:
                db.execute(f'CREATE DATABASE "{conn.database}"')
    return conn
