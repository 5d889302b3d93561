"""Connecting to the catalog, migrating it, and running sessions on it.

The catalog is an SQLite file by default and a PostgreSQL database when shared by several
instances. Two things need care on SQLite:

* Python's ``sqlite3`` driver issues its own ``BEGIN`` lazily (only before DML), which breaks
  transactional DDL and lets a read-then-write transaction fail when another writer commits in
  between. Engines made here take transaction control away from the driver and emit ``BEGIN``
  themselves: ``BEGIN DEFERRED`` normally, ``BEGIN IMMEDIATE`` (the writer lock, taken at
  once, waiting up to ``busy_timeout``) for sessions opened with ``write_lock=True``.
* Foreign keys are off unless ``PRAGMA foreign_keys=ON`` is sent on every connection; WAL lets
  readers run while one writer writes.

Messages never show a password: URLs are printed through :func:`display_url`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from clinvault.errors import ConfigError, DatabaseError

if TYPE_CHECKING:
    from alembic.config import Config

# The newest migration this version ships; a test keeps it equal to Alembic's head. Knowing
# it lets a process start without importing Alembic when the catalog is already current.
SCHEMA_REVISION: Final = "0003"

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000

# Serializes concurrent migrations of one PostgreSQL catalog ("CVmigrat" in ASCII).
MIGRATION_LOCK_KEY: Final = 0x4356_6D69_6772_6174

_BEGIN_MODE_OPTION: Final = "clinvault_sqlite_begin"
_BEGIN_MODES: Final = frozenset({"DEFERRED", "IMMEDIATE"})


def to_sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL for a catalog URL given by a user.

    ``postgresql://`` (and ``postgres://``) select the psycopg 3 driver; SQLite URLs pass
    through. Anything else is a configuration error.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError("catalog URL must start with sqlite:/// or postgresql://")
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return f"postgresql+psycopg://{rest}"
    if scheme == "sqlite":
        return url
    raise ConfigError(f"unsupported catalog URL scheme {scheme!r}: use sqlite:/// or postgresql://")


def display_url(url: str | sa.URL) -> str:
    """``url`` with its password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def create_catalog_engine(url: str) -> Engine:
    """An engine for the catalog at ``url``, configured for concurrent use.

    SQLite: usable from several threads, foreign keys on, WAL, a 30 s busy timeout and
    ClinVault's own ``BEGIN`` (see the module docstring); the file's directory is created.
    An in-memory SQLite catalog (``sqlite://``) is one shared connection: for single-threaded
    use only.
    PostgreSQL: connections are checked before use, so a restarted server is survived.
    """
    sa_url = make_url(to_sqlalchemy_url(url))
    if sa_url.get_backend_name() == "postgresql":
        return sa.create_engine(sa_url, pool_pre_ping=True)
    return _create_sqlite_engine(sa_url)


def _create_sqlite_engine(sa_url: sa.URL) -> Engine:
    database = sa_url.database or ""
    in_memory = database in ("", ":memory:") or "mode=memory" in str(sa_url)
    options: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if in_memory:
        # One shared connection, so that every session sees the same in-memory database.
        options["poolclass"] = StaticPool
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Enough kept connections for the API's worker threads: a connection opened per
        # request would pay for its pragmas every time.
        options.update(pool_size=20, max_overflow=20)
    engine = sa.create_engine(sa_url, **options)
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """Per-connection SQLite settings; the busy timeout first, so the WAL switch can wait."""
    dbapi_connection.isolation_level = None  # the driver no longer emits BEGIN; we do
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


def _on_sqlite_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(_BEGIN_MODE_OPTION, "DEFERRED")
    if mode not in _BEGIN_MODES:
        raise ValueError(f"unknown SQLite BEGIN mode {mode!r}")
    connection.exec_driver_sql(f"BEGIN {mode}")


def _has_sqlite_hooks(engine: Engine) -> bool:
    return event.contains(engine, "begin", _on_sqlite_begin)


def writer_engine(engine: Engine) -> Engine:
    """``engine`` for write transactions: on SQLite they begin with the writer lock held.

    The returned engine shares ``engine``'s pool. On PostgreSQL it is ``engine`` itself.
    """
    if engine.dialect.name != "sqlite":
        return engine
    if not _has_sqlite_hooks(engine):
        raise ConfigError("SQLite catalog engines must be made by create_catalog_engine")
    return engine.execution_options(**{_BEGIN_MODE_OPTION: "IMMEDIATE"})


def holds_write_lock(connection: Connection) -> bool:
    """True if ``connection``'s transaction holds the SQLite writer lock (always on PG)."""
    if connection.dialect.name != "sqlite":
        return True
    return connection.get_execution_options().get(_BEGIN_MODE_OPTION) == "IMMEDIATE"


# --- migrations ------------------------------------------------------------------------------


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration built in code: the migrations ship inside the package.

    With ``connection``, the migration environment runs on it (inside its transaction).
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration shipped with this version of ClinVault."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise ConfigError("no catalog migrations found")
    return head


def current_revision(engine: Engine) -> str | None:
    """The migration the catalog is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(target: Engine | str, revision: str = "head") -> None:
    """Migrate the catalog to ``revision``; a no-op when it is already there.

    The whole upgrade is one transaction, serialized against concurrent upgrades by other
    processes (SQLite writer lock; a PostgreSQL advisory lock), so two instances starting at
    once do not both try to create the tables.
    """
    from alembic import command

    _run_migration(target, lambda config: command.upgrade(config, revision))


def downgrade(target: Engine | str, revision: str) -> None:
    """Migrate the catalog down to ``revision`` (``"base"`` removes every table)."""
    from alembic import command

    _run_migration(target, lambda config: command.downgrade(config, revision))


def _run_migration(target: Engine | str, step: Callable[[Config], None]) -> None:
    engine = create_catalog_engine(target) if isinstance(target, str) else target
    try:
        with _migration_connection(engine) as connection:
            step(alembic_config(connection))
    except OperationalError as exc:
        raise DatabaseError(
            f"cannot migrate the catalog at {display_url(engine.url)}: {_first_line(exc.orig)}"
        ) from exc
    finally:
        if isinstance(target, str):
            engine.dispose()


@contextmanager
def _migration_connection(engine: Engine) -> Iterator[Connection]:
    with writer_engine(engine).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
        yield connection


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- the catalog object ----------------------------------------------------------------------


class Catalog:
    """The catalog database: one engine, its sessions and its schema version.

    Sessions keep their objects loaded after commit (``expire_on_commit=False``), so services
    can return ORM rows to callers after the transaction has ended.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.session_factory = sessionmaker(engine, expire_on_commit=False)
        self._writer_factory = sessionmaker(writer_engine(engine), expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str) -> Catalog:
        """A catalog for ``url`` (``sqlite:///…`` or ``postgresql://…``); not migrated yet."""
        return cls(create_catalog_engine(url))

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @property
    def display_url(self) -> str:
        return display_url(self.engine.url)

    def __repr__(self) -> str:
        return f"Catalog({self.display_url!r})"

    @contextmanager
    def session(self, *, write_lock: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on an exception.

        ``write_lock=True`` is for transactions that read and then write based on what they
        read: on SQLite the writer lock is taken at BEGIN, so no other writer can commit in
        between (a plain transaction would fail at its first write instead). It has no effect
        on PostgreSQL, where such code takes row or advisory locks as it needs.
        """
        factory = self._writer_factory if write_lock else self.session_factory
        with factory.begin() as session:
            yield session

    def upgrade(self) -> None:
        """Apply every pending migration (idempotent; cheap when already current)."""
        if self._recorded_revision() != SCHEMA_REVISION:
            upgrade(self.engine)

    def _recorded_revision(self) -> str | None:
        """The revision in ``alembic_version``, read without Alembic; None if unreadable."""
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
                versions = [row[0] for row in rows]
        except sa.exc.DBAPIError:
            return None
        return versions[0] if len(versions) == 1 else None

    def current_revision(self) -> str | None:
        return current_revision(self.engine)

    def is_current(self) -> bool:
        """True if the catalog's schema is the one this version of ClinVault expects."""
        return self.current_revision() == head_revision()

    def dispose(self) -> None:
        """Close every pooled connection (at shutdown, or before dropping the database)."""
        self.engine.dispose()
