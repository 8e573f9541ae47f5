"""A fabric project opened for work: its config plus the store, catalog and sources it names.

It assembles the core (config, sources, store, rules, feature views) and nothing above it: the
services (:mod:`fabric.services`, :mod:`fabric.sync`) take a project, and the adapters (CLI,
API) and the benchmarks reach them through it, so every way in opens things the same way.
Parts are opened lazily: serving never needs the sources, `rules check` needs no store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import faker

from fabric import __version__
from fabric.config import ProjectConfig, load_config
from fabric.config.loader import read_yaml
from fabric.config.secrets import Secrets, load_secrets
from fabric.errors import (
    ConfigError,
    EntityNotFoundError,
    RuleError,
    SourceError,
    SourceUnavailableError,
    StoreError,
)
from fabric.features.spec import FeatureView, load_views
from fabric.resolve.rules import CompiledMatchRules, load_match_rules
from fabric.rules.entity_names import EntityNameFinder
from fabric.rules.masking import MASKING_FORMAT, CompiledPolicies, MaskingPolicy, load_masking
from fabric.rules.transforms import Transforms, load_transforms
from fabric.sources.base import TableReader
from fabric.sources.database import DatabaseSourceReader
from fabric.sources.files import FileSourceReader
from fabric.store.base import EntityStore
from fabric.store.catalog import Catalog
from fabric.store.codec import BlobCodec, Dictionaries
from fabric.store.local import LocalShardStore
from fabric.store.microdb import ColumnDef, EntitySchema, TableDef
from fabric.store.online import OnlineStore

__all__ = ["Project"]

Row = tuple[Any, ...]


class Project:
    """An opened project. Close it (or use ``with``) to release files and connections."""

    def __init__(self, config: ProjectConfig) -> None:
        self.config = config
        self._sources: dict[str, TableReader] = {}
        self._schemas: dict[str, EntitySchema] = {}
        self._row_transforms: dict[tuple[str, str], Callable[[Row], Row]] = {}
        self._views: dict[str, FeatureView] | None = None
        #: Statements on the postgres backend stop after this long (the API sets its
        #: ``api.read_timeout_ms`` before it opens the store; a sync has no limit).
        self.statement_timeout_ms: int | None = None

    @classmethod
    def open(cls, path: Path) -> Project:
        """Load ``fabric.yaml`` at ``path`` and return the project."""
        return cls(load_config(path))

    @property
    def store_dir(self) -> Path:
        """Directory holding shards and catalog."""
        return self.config.resolve(self.config.store.path)

    def _store_dir(self) -> Path:
        # Owner-only: the store holds every entity's unmasked data.
        try:
            self.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(
                f"cannot create the store directory {self.store_dir}: {exc.strerror}"
            ) from exc
        return self.store_dir

    @property
    def shared(self) -> bool:
        """Whether the store is the postgres backend, shared by every node."""
        return self.config.store.backend == "postgres"

    def store_url(self) -> str:
        """The postgres backend's URL, from the environment variable ``store.url_env``.

        Raises:
            ConfigError: the variable is not set.
        """
        name = self.config.store.url_env
        url = os.environ.get(name, "").strip()
        if not url:
            raise ConfigError(
                f"store.backend is postgres but the environment variable {name} is not set: "
                f"export {name}=postgresql://USER:PASSWORD@HOST:PORT/DATABASE "
                "(store.url_env names another variable)"
            )
        return url

    @cached_property
    def store(self) -> EntityStore:
        """The entity store: shard files, or the postgres backend."""
        config = self.config.store
        if self.shared:
            from fabric.store.postgres import PostgresStore

            return PostgresStore(
                self.store_url(),
                config.shards,
                pool_size=config.pool_size,
                statement_timeout_ms=self.statement_timeout_ms,
            )
        return LocalShardStore(self._store_dir() / "shards", config.shards)

    @cached_property
    def online(self) -> OnlineStore:
        """Current feature vectors, materialized by sync (see :mod:`fabric.store.online`)."""
        if self.shared:
            return OnlineStore.on_postgres(
                self.store_url(),
                self.codec,
                self.statement_timeout_ms,
                beside_images=self.config.store.shards,
            )
        return OnlineStore(self._store_dir() / "online.db", self.codec)

    @cached_property
    def catalog(self) -> Catalog:
        """The catalog database."""
        if self.shared:
            return Catalog.on_postgres(self.store_url(), self.statement_timeout_ms)
        return Catalog(self._store_dir() / "catalog.db")

    def entity_type(self, name: str) -> None:
        """Check ``name`` is a declared entity type."""
        if name not in self.config.entities:
            raise ConfigError(
                f"unknown entity type '{name}' (declared: {', '.join(self.config.entities)})"
            )

    def source(self, name: str) -> TableReader:
        """Return the reader of one source system: a database, or a directory of files."""
        reader = self._sources.get(name)
        if reader is None:
            config = self.config.sources[name]
            kind = FileSourceReader if config.is_files else DatabaseSourceReader
            reader = self._sources[name] = kind(name, config, self.config.root)
        return reader

    def schema(self, entity_type: str) -> EntitySchema:
        """Derive an entity type's micro-database schema by reflecting its source tables.

        Raises:
            SourceError: a source is unreachable or lacks a declared table or column.
        """
        cached = self._schemas.get(entity_type)
        if cached is not None:
            return cached
        self.entity_type(entity_type)
        tables = []
        transforms = self.transforms
        declared = self.config.entities[entity_type].tables
        for name, table in declared.items():
            reader = self.source(table.source)
            columns = reader.describe(table.table)
            table_cfg = reader.config.tables[table.table]
            stored = [(c.name, c.sql_type) for c in columns]
            source_columns: tuple[str, ...] | None = None
            if transforms is not None:
                protected = {table_cfg.primary_key: "primary key"}
                if table_cfg.watermark:
                    protected[table_cfg.watermark] = "watermark"
                if table.foreign_key:
                    protected[table.foreign_key] = "foreign key"
                compiled = transforms.for_table(entity_type, name, stored, protected)
                if compiled is not None:
                    self._row_transforms[(entity_type, name)] = compiled.apply
                    stored, source_columns = list(compiled.columns), compiled.source_columns
            tables.append(
                TableDef(
                    name=name,
                    source=table.source,
                    source_table=table.table,
                    key=table_cfg.primary_key,
                    columns=tuple(ColumnDef(n, t) for n, t in stored),
                    parent=table.parent,
                    foreign_key=table.foreign_key,
                    source_columns=source_columns,
                )
            )
        for table_def in tables:
            seen: dict[str, str] = {}
            for column in table_def.column_names:
                if column.lower() in seen:
                    raise SourceError(
                        f"source '{table_def.source}' table '{table_def.source_table}': "
                        f"columns '{seen[column.lower()]}' and '{column}' differ only in "
                        "case, which SQLite cannot tell apart; list the columns to extract "
                        f"(fabric.yaml: sources.{table_def.source}.tables."
                        f"{table_def.source_table}.columns)"
                    )
                seen[column.lower()] = column
        if transforms is not None:
            # After the sources: a missing source table is the first thing to fix.
            unknown = sorted(transforms.tables(entity_type) - set(declared))
            if unknown:
                raise RuleError(
                    f"{transforms.path.name}: {entity_type}: unknown table(s) "
                    f"{', '.join(unknown)} (tables: {', '.join(declared)})"
                )
        rules = self._canonical(self.config.entities[entity_type].match, "match rules")
        if transforms is not None:
            rules += "\n" + transforms.version(entity_type)
        schema = self._schemas[entity_type] = EntitySchema(
            entity_type, tuple(tables), hashlib.sha256(rules.encode()).hexdigest()[:16]
        )
        return schema

    def row_transform(self, entity_type: str, table: str) -> Callable[[Row], Row] | None:
        """The function from a source row to the stored row of a table (None: as read)."""
        self.schema(entity_type)
        return self._row_transforms.get((entity_type, table))

    def views(self) -> dict[str, FeatureView]:
        """The feature views of the project ({} when fabric.yaml names no features file),
        checked against the schema of the last sync, or of the sources before one."""
        if self._views is None:
            path = self.config.rules.features
            if path is None:
                self._views = {}
            else:
                schema = self.known_schema() or self.reflected_schema()
                self._views = load_views(self.config.resolve(path), schema)
        return self._views

    def view(self, name: str) -> FeatureView:
        """A feature view by name.

        Raises:
            EntityNotFoundError: no such view.
        """
        views = self.views()
        if name not in views:
            raise EntityNotFoundError(
                f"unknown feature view (views: {', '.join(views) or 'none declared'})"
            )
        return views[name]

    @cached_property
    def transforms(self) -> Transforms | None:
        """The transforms applied at ingest, when fabric.yaml names a file of them."""
        path = self.config.rules.transforms
        if path is None:
            return None
        # Steps are checked as each table compiles, with its columns: every problem at once.
        return load_transforms(self.config.resolve(path), check_steps=False)

    def _canonical(self, path: Path, what: str) -> str:
        """A rule file as parsed, in canonical JSON: comments and layout aside."""
        data = read_yaml(self.config.resolve(path), what=what, error=RuleError).data
        return json.dumps(data, sort_keys=True, default=str)

    def match_rules(self, entity_type: str) -> CompiledMatchRules:
        """Load and compile the match rules of an entity type, checked against its schema."""
        schema = self.schema(entity_type)
        path = self.config.resolve(self.config.entities[entity_type].match)
        return load_match_rules(
            path, entity_type, {t.name: list(t.column_names) for t in schema.tables}
        )

    @cached_property
    def entity_names(self) -> EntityNameFinder:
        """An entity's names from its rows, for masking (see :mod:`fabric.rules.entity_names`).

        The match rules are read without the sources' schema: serving never reflects sources,
        and the rules were checked against them when the entities were synced.
        """
        # Normalisers that cache no text: no cache clear-up follows masking.
        rules = {
            etype: load_match_rules(self.config.resolve(cfg.match), etype, cached=False)
            for etype, cfg in self.config.entities.items()
        }
        return EntityNameFinder(rules)

    def prepare(self) -> None:
        """Open the store and catalog and compile every rule and feature view now, so that
        a broken file fails here (a server's start, a reload), not in a request.

        Raises:
            FabricError: the first problem found (rule errors name every problem).
        """
        self.policies  # noqa: B018
        self.store  # noqa: B018
        self.catalog  # noqa: B018
        self.views()

    def known_schema(self) -> dict[str, dict[str, list[str]]] | None:
        """Entity type -> table -> columns without touching sources: from the last sync.

        Serving must not depend on sources being reachable, so rules are checked against what
        the store holds; None before the first sync (then only `rules check` with reachable
        sources can check column names).
        """
        if not self.shared and not (self.store_dir / "catalog.db").exists():
            return None
        schemas = self.catalog.schemas()
        return schemas if set(schemas) == set(self.config.entities) else None

    def reflected_schema(self) -> dict[str, dict[str, list[str]]]:
        """Entity type -> table -> columns, by reflecting the sources."""
        return {
            etype: {t.name: list(t.column_names) for t in self.schema(etype).tables}
            for etype in self.config.entities
        }

    def rules_version(self) -> str:
        """A short hash of every rule file as parsed (match rules, masking): comments and
        layout aside, changing a rule changes it. Recorded with each sync run and export."""
        parts = [
            self._canonical(c.match, "match rules") for _, c in sorted(self.config.entities.items())
        ]
        parts.append(self._canonical(self.config.rules.masking, "masking rules"))
        if self.config.rules.transforms is not None:
            parts.append(self._canonical(self.config.rules.transforms, "transforms"))
        if self.config.rules.features is not None:
            parts.append(self._canonical(self.config.rules.features, "feature views"))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    @cached_property
    def masking_fingerprint(self) -> str:
        """What a masked value depends on besides the entity: the masking rules, the match
        rules (an entity's names come from them), the key masking derives its keys from,
        fabric's operators (their output format) and Faker's pools (its version). A
        materialized masked document is served only under the same one."""
        master = self.secrets.master_key
        key_check = b"" if master is None else hmac.digest(master, b"masking fingerprint", "sha256")
        parts = [
            self._canonical(self.config.rules.masking, "masking rules"),
            *(
                self._canonical(c.match, "match rules")
                for _, c in sorted(self.config.entities.items())
            ),
            key_check.hex(),
            __version__,
            str(MASKING_FORMAT),
            faker.VERSION,
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    @cached_property
    def codec(self) -> BlobCodec:
        """Compression and encryption of entity images (encrypted whenever a key is set).

        It knows every compression dictionary in the catalog, and looks up ones a sync in
        another process trains later; a sync sets the one new images use.
        """
        codec = BlobCodec(self.secrets.key_ring)

        def lookup(dict_id: str) -> bytes | None:
            sealed = self.catalog.dictionary(dict_id)
            return None if sealed is None else codec.open_dictionary(dict_id, sealed)

        known = {}
        if self.shared or (self.store_dir / "catalog.db").exists():
            for record in self.catalog.dictionaries():
                known[record.dict_id] = codec.open_dictionary(record.dict_id, record.sealed)
        codec.dictionaries = Dictionaries(known, lookup=lookup)
        return codec

    @cached_property
    def secrets(self) -> Secrets:
        """Keys from the environment or the key file."""
        return load_secrets(self.config)

    def check_masking(self, schema: dict[str, dict[str, list[str]]] | None) -> CompiledPolicies:
        """Compile the masking rules against ``schema`` (None: no column checks) and check
        every role's policy exists."""
        path = self.config.resolve(self.config.rules.masking)
        compiled = load_masking(path, self.secrets.master_key, schema, self.entity_names)
        self._check_roles(compiled, path)
        return compiled

    def _check_roles(self, compiled: CompiledPolicies, path: Path) -> None:
        for role, cfg in self.config.roles.items():
            if cfg.policy not in compiled.policies:
                where = self.config.path.name if self.config.path else "fabric.yaml"
                raise ConfigError(
                    f"{where} roles.{role}.policy: unknown policy '{cfg.policy}' "
                    f"(policies in {path.name}: {', '.join(compiled.policies)})"
                )

    @cached_property
    def policies(self) -> CompiledPolicies:
        """Masking policies, compiled once, with every role's policy checked to exist."""
        path = self.config.resolve(self.config.rules.masking)
        compiled = load_masking(
            path, self.secrets.master_key, self.known_schema(), self.entity_names
        )
        self._check_roles(compiled, path)
        return compiled

    def policy_for(self, role: str | None) -> MaskingPolicy:
        """The masking policy a role sees; no role means the default role or policy."""
        role = role or self.config.default_role
        if role is None:
            return self.policies.for_policy(None)
        cfg = self.config.roles.get(role)
        if cfg is None:
            raise ConfigError(f"unknown role '{role}' (roles: {', '.join(self.config.roles)})")
        return self.policies.for_policy(cfg.policy)

    def check_rules(self) -> tuple[list[Path], str]:
        """Validate every rule file, against the sources' schema when they are reachable.

        Returns the files checked and what column names were checked against.

        Raises:
            RuleError, ConfigError: listing every problem.
        """
        try:
            schema: dict[str, dict[str, list[str]]] | None = self.reflected_schema()
            against = "the source schema"
        except SourceUnavailableError as exc:
            # An unreachable source is no reason to refuse checking the rules themselves;
            # a missing table or column (a plain SourceError) is a config error and fails.
            schema = self.known_schema()
            first = str(exc).splitlines()[0]
            against = (
                f"the schema of the last sync, because {first}"
                if schema
                else f"nothing, because {first}"
            )
        self.check_masking(schema)
        checked = [self.config.resolve(self.config.rules.masking)]
        for etype, ecfg in self.config.entities.items():
            path = self.config.resolve(ecfg.match)
            load_match_rules(path, etype, schema.get(etype) if schema else None)
            checked.append(path)
        if self.config.rules.transforms is not None:
            # Compiled against the sources by reflected_schema() above when they were reached.
            checked.append(self.config.resolve(self.config.rules.transforms))
            load_transforms(checked[-1])
        return checked, against

    def close(self) -> None:
        """Close everything opened."""
        for reader in self._sources.values():
            reader.close()
        if "store" in self.__dict__:
            self.store.close()
        if "catalog" in self.__dict__:
            self.catalog.close()
        if "online" in self.__dict__:
            self.online.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
