"""A real sample platform (tiny scale) with a ServiceContext pointed at it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from clinvault.config import Settings
from clinvault.demo import DemoSummary, create_platform
from clinvault.engine.pgconn import ConnInfo
from clinvault.services.context import ServiceContext


@dataclass
class Platform:
    conn: ConnInfo
    files_root: Path
    summary: DemoSummary
    home: Path

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": self.home,
            "database_url": self.conn.url(),
            "files_root": self.files_root,
            "storage_url": (self.home / "store").as_uri(),
            "catalog_url": f"sqlite:///{self.home / 'catalog.db'}",
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    def context(self, **overrides: object) -> ServiceContext:
        return ServiceContext(self.settings(**overrides))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLINVAULT_")}
        env.update(
            CLINVAULT_DATA_DIR=str(self.home),
            CLINVAULT_DATABASE_URL=self.conn.url(),
            CLINVAULT_FILES_ROOT=str(self.files_root),
            CLINVAULT_STORAGE_URL=(self.home / "store").as_uri(),
            CLINVAULT_CATALOG_URL=f"sqlite:///{self.home / 'catalog.db'}",
        )
        return env

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        exe = shutil.which("clinvault", path=str(Path(sys.executable).parent))
        assert exe is not None
        result = subprocess.run(
            [exe, *args], env=self.env(), capture_output=True, text=True, timeout=300
        )
        if check and result.returncode != 0:
            raise AssertionError(f"clinvault {' '.join(args)} failed:\n{result.stderr}")
        return result


@pytest.fixture
def platform(make_database: Callable[[], ConnInfo], tmp_path: Path) -> Platform:
    """A fresh tiny sample platform: its own database, files and ClinVault home."""
    conn = make_database()
    files_root = tmp_path / "platform"
    summary = create_platform(conn, files_root, scale=0.01, files_mb=2, seed=7)
    home = tmp_path / "home"
    home.mkdir()
    return Platform(conn, files_root, summary, home)
