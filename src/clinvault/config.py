"""Settings, from environment variables (``CLINVAULT_*``) and an optional TOML file.

The TOML file is named by ``CLINVAULT_CONFIG``; environment variables win over it. Secrets are
``SecretStr`` so that a settings object never prints them. Settings are read once per process
through :func:`get_settings`; nothing happens at import time.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

Compression = Literal["zstd", "gzip"]

EMBEDDED_DATABASE = "clinical"


class ScopeLink(BaseModel):
    """A link the foreign keys do not show: ``table.column`` points at ``ref_table.ref_column``.

    Used for tables whose tie to a study or organization is by convention or indirect, so
    that granular backup counts and restores still find them.
    """

    table: str
    column: str
    ref_table: str
    ref_column: str = "id"


class ScopeSettings(BaseModel):
    """How study and organization scopes are discovered in the platform database.

    ``study_dirs`` and ``organization_dirs`` name the file directories of one study or
    organization, relative to the files root; ``{label}`` is the root row's label column
    (``code`` by default) and ``{key}`` its primary key. An organization's files are its own
    directories plus those of each of its studies.
    """

    study_table: str = "studies"
    organization_table: str = "organizations"
    schema_name: str = Field(default="public", alias="schema")
    label_column: str = "code"
    extra_links: list[ScopeLink] = Field(default_factory=list)
    exclude_tables: list[str] = Field(default_factory=list)
    study_dirs: list[str] = Field(default_factory=lambda: ["studies/{label}"])
    organization_dirs: list[str] = Field(default_factory=lambda: ["uploads/{label}"])

    model_config = {"populate_by_name": True}


class Settings(BaseSettings):
    """Everything an operator can set. Defaults give the embedded demo platform."""

    model_config = SettingsConfigDict(
        env_prefix="CLINVAULT_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".clinvault")
    database_url: SecretStr | None = None
    files_root: Path | None = None
    file_roots: list[str] = Field(default_factory=lambda: ["studies", "uploads"])
    storage_url: str | None = None
    catalog_url: SecretStr | None = None
    pg_bin_dir: Path | None = None
    compression: Compression = "zstd"
    compression_level: int | None = None
    tool_timeout_seconds: float = 6 * 3600.0
    scope: ScopeSettings = Field(default_factory=ScopeSettings)
    # Restore: parallel pg_restore jobs; "auto" swaps databases by rename where the role may,
    # else restores in place in one transaction after a safety backup.
    restore_jobs: int = Field(default=2, ge=1, le=64)
    restore_method: Literal["auto", "swap", "in_place"] = "auto"
    # Commands (argv lists, no shell) that stop and restart the services using the platform.
    pre_restore_hook: list[str] | None = None
    post_restore_hook: list[str] | None = None
    hook_timeout_seconds: float = Field(default=300.0, gt=0)
    # How many pre-restore checkpoints (renamed database, old directory trees) to keep.
    checkpoint_keep: int = Field(default=1, ge=0)
    # Where the dump is decompressed for pg_restore (default <data_dir>/staging), and where
    # file staging and checkpoints go (default a sibling of the files root; same filesystem).
    staging_dir: Path | None = None
    restore_work_dir: Path | None = None
    # The table and column naming each stored file, checked after a restore when present.
    file_reference_table: str = "documents"
    file_reference_column: str = "storage_path"
    # Sign-in (21 CFR 11.10(d), 11.300): session timeouts, lockout after repeated failures of
    # logins or signatures, and whether the session cookie is sent over HTTPS only (set true
    # whenever ClinVault is served behind HTTPS).
    session_idle_minutes: int = Field(default=15, ge=1)
    session_absolute_hours: int = Field(default=12, ge=1)
    lockout_threshold: int = Field(default=5, ge=1)
    lockout_minutes: int = Field(default=15, ge=1)
    cookie_secure: bool = False
    # argon2id cost of new password hashes (RFC 9106's low-memory profile by default); hashes
    # made with other costs still verify and are upgraded at the next sign-in.
    password_hash_time_cost: int = Field(default=3, ge=1)
    password_hash_memory_kib: int = Field(default=65536, ge=1024)

    # Scheduling (inside `clinvault serve`): how often due schedules are looked for.
    scheduler_enabled: bool = True
    scheduler_interval_seconds: float = Field(default=15.0, gt=0)
    # Retention of safety backups (taken before restores), which belong to no schedule.
    safety_backup_retention_days: int = Field(default=30, ge=1)
    # Alert when the backup storage's filesystem is fuller than this (percent used).
    storage_alert_percent: float = Field(default=85.0, gt=0, le=100)
    # Notifications: email over SMTP, and webhooks (JSON POST, HMAC-SHA256 signed when a
    # secret is set). Nothing is sent when no recipient or URL is configured.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_from: str = "clinvault@localhost"
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    notify_emails: list[str] = Field(default_factory=list)
    webhook_urls: list[str] = Field(default_factory=list)
    webhook_secret: SecretStr | None = None
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # Periodic checks (EU GMP Annex 11 §7.2): integrity verification of the latest backups
    # and restore drills into a sandbox database and directory, both cron in drill_timezone.
    verify_cron: str | None = "0 3 * * *"
    drill_enabled: bool = True
    drill_cron: str | None = "0 4 * * 0"
    drill_timezone: str = "UTC"
    # GET /metrics without authentication (the Prometheus convention).
    metrics_public: bool = True
    # The built admin UI (default: frontend/dist of the source checkout).
    ui_dir: Path | None = None

    @field_validator("staging_dir", "restore_work_dir", mode="after")
    @classmethod
    def _absolute_restore_dirs(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    @field_validator("data_dir", "files_root", "pg_bin_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("CLINVAULT_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @property
    def embedded(self) -> bool:
        """True when no platform database is configured and the embedded one is used."""
        return self.database_url is None

    @property
    def embedded_pgdata(self) -> Path:
        return self.data_dir / "pg"

    @property
    def resolved_files_root(self) -> Path:
        return self.files_root if self.files_root is not None else self.data_dir / "platform"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.data_dir / "backups").as_uri()

    @property
    def resolved_staging_dir(self) -> Path:
        return self.staging_dir if self.staging_dir is not None else self.data_dir / "staging"

    def restore_work_root(self, files_root: Path) -> Path:
        """Staging and checkpoints for a files restore into ``files_root``: a sibling
        directory, so that directory swaps are renames on one filesystem."""
        if self.restore_work_dir is not None and files_root == self.resolved_files_root:
            return self.restore_work_dir
        return files_root.parent / f".{files_root.name}.clinvault-restore"

    @property
    def resolved_catalog_url(self) -> str:
        if self.catalog_url is not None:
            return self.catalog_url.get_secret_value()
        return f"sqlite:///{self.data_dir / 'catalog.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
