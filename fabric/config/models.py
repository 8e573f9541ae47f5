"""Typed models of ``fabric.yaml``.

Every model forbids unknown keys, so a typo is an error at load time rather than a setting that
silently does nothing. Paths inside the file are relative to the file's directory; the loader
resolves them. Secrets never live here: the file names where they come from.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    StringConstraints,
    field_validator,
    model_validator,
)

from fabric.config.validation import StrictModel
from fabric.errors import ConfigError
from fabric.objects import Location, S3Url, is_s3, parse_location

__all__ = [
    "DEFAULT_ROUTES",
    "ApiConfig",
    "ApiKeyConfig",
    "CsvConfig",
    "EntityTableConfig",
    "EntityTypeConfig",
    "ExecutorConfig",
    "ProjectConfig",
    "RoleConfig",
    "Route",
    "RulesConfig",
    "SecretsConfig",
    "SourceConfig",
    "SourceTableConfig",
    "StoreConfig",
]

#: Names that end up in SQL identifiers, URLs and file names: keep them boring.
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]


class CsvConfig(StrictModel):
    """How to read one CSV file: its dialect and, where inference guesses wrong, column types.

    CSV carries no types, so fabric infers them from the first rows; ``types`` pins a column
    that looks numeric but is an identifier (a zip code, a card number) to TEXT.
    """

    delimiter: str = Field(",", min_length=1, max_length=1, description="one character")
    encoding: str = Field("utf-8", description="text encoding (a UTF-8 byte order mark is skipped)")
    types: dict[Name, Literal["INTEGER", "REAL", "TEXT"]] = Field(
        {}, description="column -> storage class, instead of inferring it"
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError("unknown text encoding (for example utf-8, latin-1, cp1252)") from None
        return value


class SourceTableConfig(StrictModel):
    """One table of a source system: a database table, or one file of a file source."""

    name: str | None = Field(None, description="table name in the database (default: the key)")
    db_schema: str | None = Field(
        None, alias="schema", description="database schema (PostgreSQL), default the URL's"
    )
    file: Path | None = Field(
        None,
        description="file sources: the table's file inside the directory, .csv, .csv.gz or "
        ".parquet (default: <table>.parquet if it exists, else <table>.csv)",
    )
    csv: CsvConfig | None = Field(None, description="file sources: CSV dialect and column types")
    primary_key: Name = Field("id", description="column that identifies a row")
    watermark: Name | None = Field(
        None, description="column that only grows (updated_at or an id), for incremental syncs"
    )
    columns: list[Name] | None = Field(
        None, description="columns to extract (default: every column the table has)"
    )

    #: File name endings a file source reads, and the format each one means.
    FILE_SUFFIXES: ClassVar[dict[str, str]] = {
        ".csv": "csv",
        ".csv.gz": "csv",
        ".parquet": "parquet",
    }

    @staticmethod
    def file_format(path: Path) -> str | None:
        """Return the format (``csv``, ``parquet``) a file name's ending means, or None."""
        name = path.name.lower()
        formats = SourceTableConfig.FILE_SUFFIXES.items()
        return next((fmt for suffix, fmt in formats if name.endswith(suffix)), None)


class SourceConfig(StrictModel):
    """A source system: a database reached through SQLAlchemy, or a directory of files."""

    url: str | None = Field(None, description="SQLAlchemy URL; sqlite paths relative to config")
    url_env: str | None = Field(None, description="environment variable holding the URL")
    path: Path | None = Field(
        None, description="directory of CSV and Parquet files, one per table; relative to config"
    )
    tables: dict[Name, SourceTableConfig] = Field(min_length=1)

    @field_validator("url_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("must be an environment variable name")
        return value

    @property
    def is_files(self) -> bool:
        """Tell whether this source is a directory of files rather than a database."""
        return self.path is not None


class EntityTableConfig(StrictModel):
    """A table of an entity's micro-database, fed by one source table.

    Identity tables (no ``parent``) hold records that resolution links into entities; child
    tables follow a foreign key to a parent table of the same entity (orders to accounts).
    """

    source: Name
    table: Name
    parent: Name | None = Field(None, description="entity table this one hangs off")
    foreign_key: Name | None = Field(None, description="column here holding the parent's key")


class EntityTypeConfig(StrictModel):
    """An entity type: its tables and the match rules that resolve its records."""

    tables: dict[Name, EntityTableConfig] = Field(min_length=1)
    match: Path = Field(description="match rules file (YAML), relative to fabric.yaml")


class StoreConfig(StrictModel):
    """Where entity images, the catalog and the online store live.

    ``embedded`` (the default): shard files, ``catalog.db`` and ``online.db`` under ``path``.
    ``postgres``: all three in one PostgreSQL database (schema ``fabric``), shared by every
    sync worker and API node; its URL comes from the environment variable ``url_env``, never
    from this file (it holds a password).
    """

    backend: Literal["embedded", "postgres"] = "embedded"
    url_env: str = Field(
        "FABRIC_STORE_URL",
        description="environment variable holding the postgres backend's URL "
        "(postgresql://USER:PASSWORD@HOST:PORT/DATABASE)",
    )
    pool_size: int = Field(
        4, ge=1, le=256, description="connections each process keeps to the postgres backend"
    )
    path: Path = Path("store")
    shards: int = Field(
        8,
        ge=1,
        le=4096,
        description="shard files (postgres: partitions); fixed once data is stored",
    )
    batch_size: int = Field(500, ge=1, le=100_000, description="entities per write transaction")
    cache_entities: int = Field(
        1000,
        ge=0,
        le=1_000_000,
        description="recently read entities kept decoded in memory, by version (0: none)",
    )

    @field_validator("url_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("must be an environment variable name")
        return value


class ExecutorConfig(StrictModel):
    """Where a sync's tasks run (README, "Running a sync on a Dask cluster").

    ``local`` (the default) uses worker processes on this machine; ``dask`` sends the same
    tasks to a Dask cluster: the one at ``scheduler``, or, without one, a cluster of
    ``workers`` processes started for the run on 127.0.0.1. ``executor: dask`` is short for
    ``executor: {kind: dask}``.
    """

    kind: Literal["local", "dask"] = "local"
    workers: int = Field(
        1, ge=1, le=64, description="worker processes (local, or a Dask cluster fabric starts)"
    )
    scheduler: str | None = Field(
        None,
        description="a running Dask scheduler, tcp://HOST:PORT (loopback only) or tls://HOST:PORT",
    )
    allow_plaintext: bool = Field(
        False,
        description="allow a tcp:// scheduler on another machine: tasks carry source rows and "
        "store keys in the clear, so only on a network you trust with the data",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: object) -> object:
        return {"kind": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _scheduler_needs_dask(self) -> ExecutorConfig:
        if self.scheduler is not None and self.kind != "dask":
            raise ValueError("scheduler: is for kind: dask")
        return self


class SecretsConfig(StrictModel):
    """Where keys come from. Values never appear in fabric.yaml or in rule files."""

    file: Path | None = Field(None, description="YAML key file (mode 0600)")
    master_key_env: str = "FABRIC_MASTER_KEY"
    store_keys_env: str = Field(
        "FABRIC_STORE_KEYS",
        description="environment variable with the store keys, 'ID:BASE64,ID:BASE64', the "
        "current one first; wins over the key file's store_keys",
    )


class RulesConfig(StrictModel):
    """Rule files applied on the way out."""

    masking: Path = Field(description="masking policies file; every read goes through it")
    transforms: Path | None = Field(
        None, description="transforms applied at ingest (trim, cast, parse dates, derive, drop)"
    )
    features: Path | None = Field(None, description="feature views (windowed aggregates...)")


Route = Literal["entities", "lineage", "features", "exports", "catalog", "admin"]
#: What a role may use unless it says otherwise: everything but administration.
DEFAULT_ROUTES: tuple[Route, ...] = ("entities", "lineage", "features", "exports", "catalog")


class RoleConfig(StrictModel):
    """A caller role: which masking policy it sees and which routes it may use."""

    policy: str = Field(description="masking policy name, or 'clear' for unmasked data")
    routes: list[Route] = Field(default_factory=lambda: list(DEFAULT_ROUTES))
    detokenize: bool = Field(
        False,
        description="may turn tokens and format-preserving ciphertexts back into the values "
        "they stand for (`fabric rules reveal`)",
    )


class ApiKeyConfig(StrictModel):
    """An API key, stored as the SHA-256 of the key so the config holds nothing secret."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    role: Name
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def _directory(value: object) -> object:
    """A directory setting: ``s3://bucket/prefix`` as an :class:`S3Url`, else a path."""
    if isinstance(value, str) and is_s3(value):
        try:
            return parse_location(value, prefix=True)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return value


#: A local directory or a prefix on S3-compatible storage.
Directory = Annotated[Path | S3Url, BeforeValidator(_directory)]


class ExportJobsConfig(StrictModel):
    """Exports started over the API (`POST /v1/exports`)."""

    dir: Directory = Field(
        Path("exports"),
        description="where export files are written: a directory, or s3://bucket/prefix",
    )
    spines: Directory = Field(
        Path("spines"),
        description="the only directory spines may be named from (paths inside it): a "
        "directory, or s3://bucket/prefix",
    )
    max_running: int = Field(2, ge=1, le=64, description="exports run at once; more wait")
    workers: int = Field(1, ge=1, le=64, description="processes per export")
    max_spine_bytes: int = Field(
        1 << 30,
        ge=1024,
        le=1 << 40,
        description="largest spine a caller may upload (POST /v1/exports/spines)",
    )
    max_spine_rows: int = Field(
        5_000_000,
        ge=1,
        le=1_000_000_000,
        description="most rows a spine may have (checked from its metadata at upload and "
        "as an export starts; a CSV's are counted)",
    )
    max_spine_decoded_bytes: int = Field(
        512 << 20,
        ge=1024,
        le=1 << 40,
        description="most bytes a spine may decode to in memory (a few kilobytes of "
        "compressed Parquet can decode to gigabytes)",
    )
    max_spine_value_bytes: int = Field(
        64 << 10,
        ge=64,
        le=1 << 30,
        description="longest value a spine may hold (a key, a time or a label)",
    )
    max_bytes_per_key: int = Field(
        10 << 30,
        ge=1024,
        le=1 << 50,
        description="most bytes of uploaded spines and export files one API key may hold",
    )
    keep_hours: float = Field(
        24,
        gt=0,
        le=24 * 366,
        description="hours an uploaded spine or an export file is kept (from its last "
        "write) before it is deleted",
    )


class ApiConfig(StrictModel):
    """HTTP API settings."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    keys: list[ApiKeyConfig] = Field(default_factory=list)
    exports: ExportJobsConfig = ExportJobsConfig()
    rate_limit: int = Field(
        20_000,
        ge=0,
        le=10_000_000,
        description="requests per second per key (per server process; 0: no limit)",
    )
    max_body_bytes: int = Field(
        1 << 20, ge=1024, le=1 << 30, description="largest request body accepted"
    )
    max_url_bytes: int = Field(
        8192,
        ge=1024,
        le=65_536,
        description="longest request target (path and query string, as sent) accepted; "
        "longer answers 414 before it is routed",
    )
    max_json_depth: int = Field(
        32,
        ge=2,
        le=256,
        description="deepest nesting of arrays and objects accepted in a JSON body; deeper "
        "answers 400 before the body is parsed",
    )
    read_timeout_ms: int = Field(
        5_000,
        ge=0,
        le=600_000,
        description="longest a request's reads may run before they are stopped and the "
        "request answers 503 timeout (0: no limit)",
    )
    reload_check_ms: int = Field(
        1000,
        ge=0,
        le=600_000,
        description="how often a server checks whether another server of its store was "
        "told to reload (POST /v1/admin/reload or SIGHUP), and then reloads its own files "
        "(0: never)",
    )
    fresh_ms: int = Field(
        250,
        ge=0,
        le=60_000,
        description="an entity document or current vector served this recently is served "
        "again without asking the store for the entity's version (0: always ask)",
    )
    access_log: bool = Field(
        False,
        description="a line per request on the server's standard error (logger "
        "fabric.access): client, key name and role, method, path, status, milliseconds; "
        "never a key, a query string or a refused id. Off by default, as in granian and "
        "gunicorn: it costs a good share of the lookups a server answers "
        "(benchmarks/README.md, 'Access log')",
    )
    vector_cache: int = Field(
        100_000,
        ge=0,
        le=10_000_000,
        description="current feature vectors kept per server process, by entity version, "
        "until their next window boundary (0: none)",
    )


class ProjectConfig(StrictModel):
    """A fabric project: ``fabric.yaml`` and what it names."""

    version: Literal[1] = 1
    project: Name = "fabric"
    sources: dict[Name, SourceConfig] = Field(min_length=1)
    entities: dict[Name, EntityTypeConfig] = Field(min_length=1)
    store: StoreConfig = StoreConfig()
    executor: ExecutorConfig = ExecutorConfig()
    secrets: SecretsConfig = SecretsConfig()
    rules: RulesConfig
    roles: dict[Name, RoleConfig] = Field(default_factory=dict)
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

    def locate(self, where: Location) -> Location:
        """Resolve a local path as :meth:`resolve` does; an object on S3 is where it is."""
        return where if isinstance(where, S3Url) else self.resolve(where)
