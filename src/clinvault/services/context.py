"""Everything a service needs, built once from settings and shared by CLI and API."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property

from clinvault.catalog.db import Catalog
from clinvault.config import Settings
from clinvault.engine.pgconn import ConnInfo
from clinvault.engine.pgtools import PgToolkit
from clinvault.services.audit import AuditService
from clinvault.services.platform import platform_database
from clinvault.storage import Storage, open_storage


@dataclass
class ServiceContext:
    settings: Settings
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def catalog(self) -> Catalog:
        catalog = Catalog.from_url(self.settings.resolved_catalog_url)
        catalog.upgrade()
        return catalog

    @cached_property
    def storage(self) -> Storage:
        return open_storage(self.settings.resolved_storage_url)

    @cached_property
    def toolkit(self) -> PgToolkit:
        return PgToolkit(self.settings.pg_bin_dir)

    @cached_property
    def audit(self) -> AuditService:
        return AuditService(self.catalog)

    @cached_property
    def platform(self) -> ConnInfo:
        return platform_database(self.settings)
