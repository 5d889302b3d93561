"""Connection facts for a PostgreSQL server, parsed once from a URL.

Credentials leave this object only as libpq environment variables (for the client tools)
or keyword arguments (for psycopg); the printable form never holds the password.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from clinvault.errors import ConfigError

_LIBPQ_PARAMS_TO_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "passfile": "PGPASSFILE",
}


@dataclass(frozen=True, slots=True)
class ConnInfo:
    host: str
    port: int
    user: str
    database: str
    password: str | None = None
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_url(cls, url: str) -> ConnInfo:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
            raise ConfigError("database URL must start with postgresql://")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        host = query.pop("host", None) or unquote(parts.hostname or "") or "localhost"
        port_text = query.pop("port", None)
        try:
            port = int(port_text) if port_text else (parts.port or 5432)
        except ValueError as exc:
            raise ConfigError("database URL has an invalid port") from exc
        user = query.pop("user", None) or unquote(parts.username or "") or "postgres"
        password = query.pop("password", None) or (
            unquote(parts.password) if parts.password else None
        )
        database = query.pop("dbname", None) or unquote(parts.path.lstrip("/")) or user
        return cls(host, port, user, database, password or None, tuple(sorted(query.items())))

    def with_database(self, database: str) -> ConnInfo:
        return replace(self, database=database)

    def url(self, *, with_password: bool = True) -> str:
        """A URL for this connection; ``with_password=False`` gives the printable form."""
        auth = quote(self.user, safe="")
        if with_password and self.password:
            auth += ":" + quote(self.password, safe="")
        query = dict(self.params)
        if self.host.startswith("/"):
            query["host"] = self.host
            netloc = f"{auth}@:{self.port}"
        else:
            netloc = f"{auth}@{self.host}:{self.port}"
        suffix = f"?{urlencode(query)}" if query else ""
        return f"postgresql://{netloc}/{quote(self.database, safe='')}{suffix}"

    def __str__(self) -> str:
        return self.url(with_password=False)

    def __repr__(self) -> str:
        return f"ConnInfo({self.url(with_password=False)!r})"

    def libpq_env(self) -> dict[str, str]:
        """Environment variables that point libpq clients at this server, secret included."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.database,
        }
        if self.password:
            env["PGPASSWORD"] = self.password
        for key, value in self.params:
            if key in _LIBPQ_PARAMS_TO_ENV:
                env[_LIBPQ_PARAMS_TO_ENV[key]] = value
        return env

    def psycopg_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.database,
        }
        if self.password:
            kwargs["password"] = self.password
        kwargs.update(dict(self.params))
        return kwargs
