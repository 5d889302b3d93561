"""The database part: ``pg_dump`` custom format, compressed and hashed in one streaming pass.

``pg_dump`` writes uncompressed (``--compress=0``) to a pipe; ClinVault compresses with
zstd or gzip on the fly, so the dump is never stored uncompressed, never read twice, and the
result stays a plain custom-format archive after decompression (``pg_restore`` reads it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from clinvault.engine.compression import Codec, StreamCompressor, StreamResult
from clinvault.engine.pgconn import ConnInfo
from clinvault.engine.pgtools import PgTool, open_tool
from clinvault.engine.readahead import read_pipe
from clinvault.engine.scope import TableRef
from clinvault.storage.base import ObjectWriter

_CHUNK = 1 << 20
_READ_AHEAD = 32  # chunks: pg_dump runs on while a slow moment of compression passes


def estimate_dump_bytes(db: psycopg.Connection[Any], tables: list[TableRef]) -> int:
    """Expected size of the uncompressed dump: the tables' heap and TOAST, without indexes."""
    total = 0
    for table in tables:
        row = db.execute(
            sql.SQL("SELECT pg_table_size({}::regclass)").format(
                sql.Literal(sql.Identifier(table.schema, table.name).as_string(db))
            )
        ).fetchone()
        total += int(row[0]) if row and row[0] is not None else 0
    return total


def dump_args(snapshot: str | None) -> list[str]:
    args = ["--format=custom", "--compress=0", "--no-password"]
    if snapshot:
        args.append(f"--snapshot={snapshot}")
    return args


def dump_database(
    tool: PgTool,
    conn: ConnInfo,
    sink: ObjectWriter,
    codec: Codec,
    level: int,
    *,
    snapshot: str | None,
    on_bytes: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
    timeout: float = 6 * 3600.0,
) -> StreamResult:
    """Stream ``pg_dump`` of ``conn``'s database into ``sink``, compressed with ``codec``."""
    compressor = StreamCompressor(sink, codec, level, table_data=True)
    with open_tool(
        tool, dump_args(snapshot), conn, read_stdout=True, timeout=timeout, cancel=cancel
    ) as process:
        for chunk in read_pipe(process.stdout, _CHUNK, _READ_AHEAD):
            compressor.write(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return compressor.close()
