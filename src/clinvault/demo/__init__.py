"""The sample clinical platform: schema, data generator and study file tree.

One call creates a realistic platform to back up, restore and benchmark against::

    server = ensure_embedded_server(pgdata)
    summary = create_platform(ensure_database(server, "clinical"), files_root, scale=1)
"""

from clinvault.demo.files import FILE_ROOTS
from clinvault.demo.generator import (
    DemoSummary,
    create_platform,
    default_files_mb,
    ensure_database,
    platform_exists,
)
from clinvault.demo.schema import SCHEMA, TABLES

__all__ = [
    "FILE_ROOTS",
    "SCHEMA",
    "TABLES",
    "DemoSummary",
    "create_platform",
    "default_files_mb",
    "ensure_database",
    "platform_exists",
]
