"""Load ``fabric.yaml`` into a validated :class:`ProjectConfig`.

Validation happens once, here, in two passes: the typed model (unknown keys, wrong types) and
then references between parts of the file (an entity table naming a source table that does
not exist, a key for an undeclared role). All problems are reported at once, each naming the
file, line and path, so a user fixes a config in one round rather than one error at a time.
"""

from __future__ import annotations

from pathlib import Path

from fabric.config.documents import Loc, YamlDocument, YamlLoadError, load_yaml_file
from fabric.config.models import ProjectConfig, SourceTableConfig
from fabric.config.validation import display_path, format_issue, validate_document
from fabric.errors import ConfigError

__all__ = ["DEFAULT_CONFIG", "load_config", "read_yaml"]

DEFAULT_CONFIG = Path("fabric.yaml")


def read_yaml(path: Path, *, what: str, error: type[Exception] = ConfigError) -> YamlDocument:
    """Read a YAML file, turning read and syntax problems into ``error`` naming the file."""
    try:
        return load_yaml_file(path)
    except YamlLoadError as exc:
        where = display_path(path) + (f":{exc.line}" if exc.line else "")
        hint = ""
        if exc.reason == "file not found" and what == "config":
            hint = " (pass -c PATH, or run `fabric demo` to create a project)"
        raise error(f"{where}: {exc.reason}{hint}") from exc


def _reference_problems(config: ProjectConfig, doc: YamlDocument) -> list[str]:
    problems: list[str] = []

    def add(loc: Loc, message: str) -> None:
        problems.append(format_issue(doc.path, doc.line_of(loc), loc, message))

    for etype, entity in config.entities.items():
        for tname, table in entity.tables.items():
            loc: Loc = ("entities", etype, "tables", tname)
            source = config.sources.get(table.source)
            if source is None:
                add((*loc, "source"), f"unknown source (declared: {', '.join(config.sources)})")
            elif table.table not in source.tables:
                add(
                    (*loc, "table"),
                    f"source '{table.source}' declares no such table "
                    f"(declared: {', '.join(source.tables)})",
                )
            if (table.parent is None) != (table.foreign_key is None):
                add(loc, "'parent' and 'foreign_key' go together: give both or neither")
            if table.parent is not None and table.parent not in entity.tables:
                add(
                    (*loc, "parent"),
                    f"not a table of entity '{etype}' (tables: {', '.join(entity.tables)})",
                )
        for tname in entity.tables:
            seen = [tname]
            current = entity.tables[tname].parent
            while current is not None and current in entity.tables:
                if current in seen:
                    add(
                        ("entities", etype, "tables", tname, "parent"),
                        f"parent chain loops: {' -> '.join([*seen, current])}",
                    )
                    break
                seen.append(current)
                current = entity.tables[current].parent
        if not any(t.parent is None for t in entity.tables.values()):
            add(("entities", etype, "tables"), "needs at least one identity table (no parent)")
    for etype, entity in config.entities.items():
        lowered: dict[str, str] = {}
        for tname in entity.tables:
            loc = ("entities", etype, "tables", tname)
            if tname.startswith("_"):
                add(loc, "table names starting with '_' are reserved (_meta, _lineage)")
            if tname.lower() in lowered:
                add(
                    loc,
                    f"differs from table '{lowered[tname.lower()]}' only in case; SQLite "
                    "table names ignore case",
                )
            lowered.setdefault(tname.lower(), tname)
    names: set[str] = set()
    digests: set[str] = set()
    for i, key in enumerate(config.api.keys):
        if key.name in names:
            add(("api", "keys", i, "name"), "duplicate key name")
        if key.sha256 in digests:
            add(("api", "keys", i, "sha256"), "the same key is configured twice")
        names.add(key.name)
        digests.add(key.sha256)
        if key.role not in config.roles:
            add(("api", "keys", i, "role"), f"unknown role (declared: {', '.join(config.roles)})")
    if config.default_role is not None and config.default_role not in config.roles:
        add(("default_role",), f"unknown role (declared: {', '.join(config.roles)})")
    for name, source_cfg in config.sources.items():
        given = [source_cfg.url, source_cfg.url_env, source_cfg.path]
        if sum(value is not None for value in given) != 1:
            add(("sources", name), "give exactly one of 'url', 'url_env' or 'path'")
        for tname, table_cfg in source_cfg.tables.items():
            loc = ("sources", name, "tables", tname)
            if not source_cfg.is_files:
                for option in ("file", "csv"):
                    if getattr(table_cfg, option) is not None:
                        add((*loc, option), "only for file sources (sources with 'path')")
                continue
            for option, value in (("name", table_cfg.name), ("schema", table_cfg.db_schema)):
                if value is not None:
                    add(
                        (*loc, option),
                        "a file source has no database tables or schemas; name the table's "
                        f"file with 'file' (default: {tname}.parquet, else {tname}.csv)",
                    )
            file = table_cfg.file
            if file is None:
                continue
            if file.is_absolute() or ".." in file.parts:
                add((*loc, "file"), "must be a path inside the source's directory")
            file_format = SourceTableConfig.file_format(file)
            if file_format is None:
                suffixes = ", ".join(SourceTableConfig.FILE_SUFFIXES)
                add((*loc, "file"), f"unsupported file type (use {suffixes})")
            elif file_format != "csv" and table_cfg.csv is not None:
                add((*loc, "csv"), "CSV options for a file that is not CSV")
    return problems


def load_config(path: Path = DEFAULT_CONFIG) -> ProjectConfig:
    """Load and validate a project config.

    Raises:
        ConfigError: listing every problem found, one per line.
    """
    doc = read_yaml(path, what="config")
    if not isinstance(doc.data, dict):
        raise ConfigError(
            f"{display_path(path)}: must be a mapping of settings, "
            "starting with 'sources:' and 'entities:'"
        )
    config, problems = validate_document(ProjectConfig, doc)
    if config is not None:
        problems = _reference_problems(config, doc)
    if problems:
        raise ConfigError("\n".join(problems))
    assert config is not None
    return config.located(path)
