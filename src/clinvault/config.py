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
    def resolved_catalog_url(self) -> str:
        if self.catalog_url is not None:
            return self.catalog_url.get_secret_value()
        return f"sqlite:///{self.data_dir / 'catalog.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
