"""Set up the demo project: synthetic sources, a commented fabric.yaml, rules and keys.

Re-running on a directory that already holds a project keeps its fabric.yaml, rules and key
file untouched (they may have been edited) and only regenerates missing sources.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sqlalchemy.engine import make_url

from fabric.config.models import DEFAULT_ROUTES
from fabric.config.secrets import generate_key_file, hash_api_key
from fabric.errors import ConfigError
from fabric.sources.generate import GenerationReport, generate_sources

__all__ = [
    "DEMO_ROLES",
    "SOURCE_URL_ENV",
    "DemoProject",
    "create_demo_project",
    "render_demo_config",
]

#: Demo roles, least privileged first: (key name, role, policy, routes).
DEMO_ROLES: tuple[tuple[str, str, str, list[str]], ...] = (
    ("analyst-demo", "analyst", "analyst", list(DEFAULT_ROUTES)),
    ("steward-demo", "steward", "steward", list(DEFAULT_ROUTES)),
    ("admin-demo", "admin", "steward", [*DEFAULT_ROUTES, "admin"]),
)

#: Entity tables of the demo customer: name -> (system, table, parent, foreign key).
_DEMO_TABLES = {
    "crm_customers": ("crm", "customers", None, None),
    "billing_accounts": ("billing", "accounts", None, None),
    "billing_payments": ("billing", "payments", "billing_accounts", "account_id"),
    "shop_orders": ("shop", "orders", "billing_accounts", "account_id"),
    "shop_order_items": ("shop", "order_items", "shop_orders", "order_id"),
    "support_tickets": ("support", "tickets", None, None),
}
_WATERMARKS = {
    "customers": "updated_at",
    "accounts": "updated_at",
    "payments": "id",
    "orders": "id",
    "order_items": "id",
    "tickets": "id",
}
SOURCE_URL_ENV = "FABRIC_DEMO_SOURCE_URL"


@dataclass(frozen=True)
class DemoProject:
    """Where the demo lives and what was created."""

    directory: Path
    config_path: Path
    created: bool
    generation: GenerationReport | None


def _source_block(report: GenerationReport, directory: Path, source_url: str | None) -> str:
    lines = []
    systems: dict[str, list[tuple[str, str | None, str]]] = {}
    urls: dict[str, str] = {}
    for generated in report.tables:
        systems.setdefault(generated.system, []).append(
            (generated.table, generated.schema, generated.name)
        )
        urls[generated.system] = generated.url
    for system, tables in systems.items():
        lines.append(f"  {system}:")
        if source_url is not None and make_url(source_url).password:
            # A URL with a password is a secret: it stays in the environment.
            lines.append(f"    url_env: {SOURCE_URL_ENV}   # holds the database URL")
        elif source_url is not None:
            lines.append(f"    url: {source_url}")
        else:
            path = Path(make_url(urls[system]).database or "")
            try:
                shown = path.resolve().relative_to(directory.resolve())
            except ValueError:
                shown = path
            lines.append(f"    url: sqlite:///{shown}")
        lines.append("    tables:")
        for table, schema, name in tables:
            parts = ["primary_key: id", f"watermark: {_WATERMARKS.get(table, 'id')}"]
            if schema:
                parts.insert(0, f"schema: {schema}")
            if name != table:
                parts.insert(0, f"name: {name}")
            lines.append(f"      {table}: {{{', '.join(parts)}}}")
    return "\n".join(lines)


def render_demo_config(
    report: GenerationReport,
    directory: Path,
    key_hashes: dict[str, str],
    source_url: str | None = None,
) -> str:
    """Return the text of a complete, commented demo fabric.yaml."""
    tables = "\n".join(
        f"      {name}: {{source: {system}, table: {table}"
        + (f", parent: {parent}, foreign_key: {fk}" if parent else "")
        + "}"
        for name, (system, table, parent, fk) in _DEMO_TABLES.items()
    )
    # The roles that see clear data may also turn tokens back into values.
    roles = "\n".join(
        f"  {role}: {{policy: {policy}, routes: [{', '.join(routes)}]"
        + (", detokenize: true" if policy == "steward" else "")
        + "}"
        for _, role, policy, routes in DEMO_ROLES
    )
    keys = "\n".join(
        f"    - {{name: {name}, role: {role}, sha256: {key_hashes[name]}}}"
        for name, role, _, _ in DEMO_ROLES
    )
    return f"""\
# fabric project: the demo. Written by `fabric demo`; edit freely, re-running keeps your edits.
# Every path is relative to this file. Unknown keys are errors, so typos cannot hide.
version: 1
project: demo

# Source systems, read through SQLAlchemy (any URL: postgresql://, mysql://, sqlite:///FILE).
# Sources are only ever read. Per table: its primary key, a watermark column that only grows
# (used by incremental syncs), and optionally `columns: [...]` to extract only some columns.
sources:
{_source_block(report, directory, source_url)}

# Entity types. Each is stored as one SQLite micro-database per entity holding these tables.
# Tables without a parent hold identities that match rules link across systems; a table with
# a parent follows its foreign key to the parent's rows (orders -> billing accounts).
entities:
  customer:
    match: rules/match.yaml
    tables:
{tables}

# The embedded entity store: shard files and a catalog under this directory.
store:
  path: store
  shards: 8          # fixed once entities are stored
  batch_size: 500    # entities per write transaction

# Secrets: the master key (keyed hashing; encryption at rest) and the demo API keys live in
# this private file (mode 0600), never in this config or the rules. An environment variable
# FABRIC_MASTER_KEY, when set, wins over the file's master key.
secrets:
  file: fabric.keys
  master_key_env: FABRIC_MASTER_KEY

# Rule files applied on every way out (API, CLI, exports).
rules:
  masking: rules/masking.yaml
  transforms: rules/transforms.yaml   # applied at ingest: trim, lowercase, derived columns
  features: rules/features.yaml       # feature views, for `fabric export` and the API

# Caller roles: the masking policy each sees, the API routes it may use, and whether it may
# turn tokens back into values (detokenize). A caller with no role sees the default policy of
# the masking file (least privilege).
roles:
{roles}
default_role: analyst    # used by CLI commands when --role is not given

# HTTP API. Keys are stored as SHA-256 hashes; the keys themselves are in fabric.keys.
api:
  host: 127.0.0.1
  port: 8000
  keys:
{keys}
"""


def create_demo_project(
    directory: Path,
    *,
    customers: int = 2000,
    seed: int = 42,
    source_url: str | None = None,
    force_sources: bool = False,
) -> DemoProject:
    """Create (or reuse) a demo project in ``directory``."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot use {directory} as the demo directory: {exc.strerror}") from exc
    config_path = directory / "fabric.yaml"
    sources_dir = directory / "sources"
    if config_path.exists():
        generation = None
        if force_sources or (source_url is None and not (sources_dir / "crm.db").exists()):
            generation = generate_sources(
                sources_dir, customers=customers, seed=seed, source_url=source_url
            )
        return DemoProject(directory, config_path, False, generation)
    generation = generate_sources(
        sources_dir, customers=customers, seed=seed, source_url=source_url
    )
    rules_dir = directory / "rules"
    rules_dir.mkdir(exist_ok=True)
    for item in resources.files("fabric").joinpath("demo_rules").iterdir():
        if item.name.endswith(".yaml") and not (rules_dir / item.name).exists():
            with resources.as_file(item) as src:
                shutil.copyfile(src, rules_dir / item.name)
    keys = generate_key_file(directory / "fabric.keys", [name for name, *_ in DEMO_ROLES])
    text = render_demo_config(
        generation, directory, {name: hash_api_key(key) for name, key in keys.items()}, source_url
    )
    tmp = config_path.with_name("fabric.yaml.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(config_path)
    return DemoProject(directory, config_path, True, generation)
