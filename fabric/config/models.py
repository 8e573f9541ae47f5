"""Typed models of ``fabric.yaml``.

Every model forbids unknown keys, so a typo is an error at load time rather than a setting that
silently does nothing. Paths inside the file are relative to the file's directory; the loader
resolves them. Secrets never live here: the file names where they come from.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    field_validator,
)

__all__ = [
    "ApiConfig",
    "ApiKeyConfig",
    "EntityTableConfig",
    "EntityTypeConfig",
    "ProjectConfig",
    "RoleConfig",
    "RulesConfig",
    "SecretsConfig",
    "SourceConfig",
    "SourceTableConfig",
    "StoreConfig",
]

#: Names that end up in SQL identifiers, URLs and file names: keep them boring.
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceTableConfig(_Strict):
    """One table of a source system."""

    name: str | None = Field(None, description="table name in the database (default: the key)")
    db_schema: str | None = Field(
        None, alias="schema", description="database schema (PostgreSQL), default the URL's"
    )
    primary_key: Name = Field("id", description="column that identifies a row")
    watermark: Name | None = Field(
        None, description="column that only grows (updated_at or an id), for incremental syncs"
    )
    columns: list[Name] | None = Field(
        None, description="columns to extract (default: every column the table has)"
    )


class SourceConfig(_Strict):
    """A source system reachable through SQLAlchemy."""

    url: str | None = Field(None, description="SQLAlchemy URL; sqlite paths relative to config")
    url_env: str | None = Field(None, description="environment variable holding the URL")
    tables: dict[Name, SourceTableConfig] = Field(min_length=1)

    @field_validator("url_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("must be an environment variable name")
        return value


class EntityTableConfig(_Strict):
    """A table of an entity's micro-database, fed by one source table.

    Identity tables (no ``parent``) hold records that resolution links into entities; child
    tables follow a foreign key to a parent table of the same entity (orders to accounts).
    """

    source: Name
    table: Name
    parent: Name | None = Field(None, description="entity table this one hangs off")
    foreign_key: Name | None = Field(None, description="column here holding the parent's key")


class EntityTypeConfig(_Strict):
    """An entity type: its tables and the match rules that resolve its records."""

    tables: dict[Name, EntityTableConfig] = Field(min_length=1)
    match: Path = Field(description="match rules file (YAML), relative to fabric.yaml")


class StoreConfig(_Strict):
    """The embedded entity store: shard files plus a catalog under one directory."""

    path: Path = Path("store")
    shards: int = Field(8, ge=1, le=4096, description="shard files; fixed once data is stored")
    batch_size: int = Field(500, ge=1, le=100_000, description="entities per write transaction")


class SecretsConfig(_Strict):
    """Where keys come from. Values never appear in fabric.yaml or in rule files."""

    file: Path | None = Field(None, description="YAML key file (mode 0600)")
    master_key_env: str = "FABRIC_MASTER_KEY"


class RulesConfig(_Strict):
    """Rule files applied on the way out."""

    masking: Path = Field(description="masking policies file; every read goes through it")


class RoleConfig(_Strict):
    """A caller role: which masking policy it sees and which routes it may use."""

    policy: str = Field(description="masking policy name, or 'clear' for unmasked data")
    routes: list[Literal["entities", "lineage", "features", "exports", "catalog", "admin"]] = [
        "entities",
        "lineage",
        "features",
        "exports",
        "catalog",
    ]


class ApiKeyConfig(_Strict):
    """An API key, stored as the SHA-256 of the key so the config holds nothing secret."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    role: Name
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ApiConfig(_Strict):
    """HTTP API settings."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    keys: list[ApiKeyConfig] = []


class ProjectConfig(_Strict):
    """A fabric project: ``fabric.yaml`` and what it names."""

    version: Literal[1] = 1
    project: Name = "fabric"
    sources: dict[Name, SourceConfig] = Field(min_length=1)
    entities: dict[Name, EntityTypeConfig] = Field(min_length=1)
    store: StoreConfig = StoreConfig()
    secrets: SecretsConfig = SecretsConfig()
    rules: RulesConfig
    roles: dict[Name, RoleConfig] = {}
    default_role: Name | None = Field(None, description="role used by the CLI when none is given")
    api: ApiConfig = ApiConfig()

    #: Directory of the fabric.yaml file; relative paths resolve against it. Private, so a
    #: config file cannot set it.
    _root: Path = PrivateAttr(default_factory=Path.cwd)
    _path: Path | None = PrivateAttr(default=None)

    @property
    def root(self) -> Path:
        """Directory of the config file."""
        return self._root

    @property
    def path(self) -> Path | None:
        """The config file itself, when loaded from one."""
        return self._path

    def located(self, path: Path) -> ProjectConfig:
        """Return this config anchored at the file ``path``."""
        self._path = path.resolve()
        self._root = self._path.parent
        return self

    def resolve(self, path: Path) -> Path:
        """Resolve a path written in the config against the config's directory."""
        return path if path.is_absolute() else (self.root / path)
