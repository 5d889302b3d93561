"""Alembic environment of the catalog.

ClinVault runs migrations in code (``clinvault.catalog.db.upgrade``), handing over a
connection that is already inside a locked transaction; this file then runs the migrations on
it. Run by the ``alembic`` command instead (to write a new revision with ``--autogenerate``),
it connects to ``sqlalchemy.url`` from the Alembic configuration, or to the configured catalog.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from clinvault.catalog.db import create_catalog_engine
from clinvault.catalog.models import Base
from clinvault.config import get_settings


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_standalone() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or get_settings().resolved_catalog_url
    engine = create_catalog_engine(url)
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


_connection = context.config.attributes.get("connection")
if _connection is not None:
    _run(_connection)
else:
    _run_standalone()
