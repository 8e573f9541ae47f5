"""Read source tables through SQLAlchemy, in batches, without ever writing to a source.

SQLite sources are opened read-only (``mode=ro``), so a wrong path is an error instead of a new
empty database, and nothing fabric does can change them. Every driver error is translated into
a :class:`SourceError` naming the source, its URL (password hidden) and the table.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from fabric.config.models import SourceConfig, SourceTableConfig
from fabric.errors import SourceError, SourceUnavailableError
from fabric.sources.base import BATCH_ROWS, SourceColumn, columns_to_read, to_storage_value
from fabric.sources.urls import describe_url, engine_url

__all__ = ["DatabaseSourceReader", "sqlite_type"]


def sqlite_type(column_type: Any) -> str:
    """Map a reflected SQLAlchemy type to a SQLite storage class."""
    if isinstance(column_type, sa.Boolean | sa.Integer):
        return "INTEGER"
    if isinstance(column_type, sa.Float | sa.Numeric):
        return "REAL"
    if isinstance(column_type, sa.LargeBinary):
        return "BLOB"
    return "TEXT"


def _converter(column_type: Any) -> Any:
    """The per-value conversion a column needs, or None when driver values are already fine.

    Chosen once per column: converting every value through the generic function was a large
    part of a sync (benchmarks/README.md, "Source reads"), and most columns (integers,
    strings) need nothing.
    """
    if isinstance(column_type, sa.Integer | sa.String) and not isinstance(column_type, sa.Enum):
        return None
    if isinstance(column_type, sa.Float):
        return None
    return to_storage_value


def _sqlite_datetime(value: Any) -> Any:
    if isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value)  # checks the text, and is cheap
        # Formatting costs many times the parse (benchmarks/README.md, "Source reads"). The
        # text SQLAlchemy writes to SQLite, "YYYY-MM-DD HH:MM:SS[.ffffff]", becomes the same
        # ISO text by slicing it; any other shape goes the long way.
        size = len(value)
        if (
            (size == 19 or (size == 26 and value[19] == "."))
            and parsed.tzinfo is None
            and value[13] == ":"
            and value[16] == ":"
        ):
            if size == 26 and parsed.microsecond:
                return f"{value[:10]}T{value[11:]}"
            return f"{value[:10]}T{value[11:19]}"
        return parsed.isoformat(sep="T")
    return to_storage_value(value)


def _sqlite_date(value: Any) -> Any:
    if isinstance(value, str):
        return dt.date.fromisoformat(value).isoformat()
    return to_storage_value(value)


def _sqlite_converter(column_type: Any) -> Any:
    """The conversion of a raw sqlite3 value to what SQLAlchemy's types + ours would give.

    SQLite keeps times as text, which SQLAlchemy parses into datetimes that we format back;
    parsing with the standard library in one step gives the same ISO text several times
    faster. Numbers that SQLAlchemy would hand out as Decimal become floats either way.
    """
    if column_type is None:
        return to_storage_value
    if isinstance(column_type, sa.DateTime):
        return _sqlite_datetime
    if isinstance(column_type, sa.Date):
        return _sqlite_date
    if isinstance(column_type, sa.Float | sa.Numeric):
        return float
    if isinstance(column_type, sa.Boolean):
        return int
    if isinstance(column_type, sa.Integer | sa.String) and not isinstance(column_type, sa.Enum):
        return None
    return to_storage_value


def _driver_value(column_type: Any, value: Any) -> Any:
    """Turn a stored watermark (a storage value: ISO text for times) back into a bind value.

    Binding the driver's own type lets it compare in the column's type, whatever text format
    the database keeps times in.
    """
    if isinstance(value, str):
        if isinstance(column_type, sa.DateTime):
            return dt.datetime.fromisoformat(value)
        if isinstance(column_type, sa.Date):
            return dt.date.fromisoformat(value)
    return value


def _row_converter(types: Sequence[Any], choose: Any = _converter) -> Any:
    converters = [(i, c) for i, t in enumerate(types) if (c := choose(t)) is not None]
    if not converters:
        return tuple

    def convert(row: Sequence[Any]) -> tuple[Any, ...]:
        values = list(row)
        for i, func in converters:
            value = values[i]
            if value is not None:
                values[i] = func(value)
        return tuple(values)

    return convert


class DatabaseSourceReader:
    """One source system, opened lazily, read-only where the driver allows it."""

    def __init__(self, name: str, config: SourceConfig, root: Path) -> None:
        self.name = name
        self.config = config
        self.shown_url = "(url not set)"
        self.url = self._url(root)
        self._engine: Engine | None = None
        self._types: dict[str, dict[str, Any]] = {}

    def _url(self, root: Path) -> URL:
        raw = self.config.url
        if raw is None:
            assert self.config.url_env is not None
            raw = os.environ.get(self.config.url_env)
            if not raw:
                raise SourceError(
                    f"source '{self.name}': environment variable "
                    f"{self.config.url_env} is not set (it should hold the URL)"
                )
        url = engine_url(raw)
        # Shown in messages as the user wrote it (password hidden), before the rewrite below.
        self.shown_url = describe_url(url)
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if database in ("", ":memory:") or database.startswith("file:"):
                raise SourceError(
                    f"source '{self.name}': give the SQLite source as a file path "
                    "(sqlite:///path/to/file.db)"
                )
            path = Path(database)
            path = path if path.is_absolute() else (root / path)
            if not path.is_file():
                raise SourceUnavailableError(
                    f"source '{self.name}': SQLite file {path} does not exist"
                )
            # Read-only URI: a source is never modified, and a typo never creates a database.
            url = url.set(database=f"file:{path.resolve()}?mode=ro", query={"uri": "true"})
        return url

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, created on first use."""
        if self._engine is None:
            try:
                self._engine = sa.create_engine(self.url, pool_pre_ping=True)
            except (ImportError, sa.exc.NoSuchModuleError) as exc:
                raise SourceUnavailableError(
                    f"source '{self.name}' ({self.shown_url}): the database driver "
                    f"'{self.url.drivername}' is not installed or not known to SQLAlchemy "
                    "(install its Python package, e.g. pymysql for mysql+pymysql://)"
                ) from exc
        return self._engine

    def _error(self, what: str, exc: Exception) -> SourceError:
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["?"])[0]
        kind = (
            SourceUnavailableError
            if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
            else SourceError
        )
        return kind(f"source '{self.name}' ({self.shown_url}): {what}: {reason}")

    def table_ref(self, table: str) -> tuple[str, str | None]:
        """Return ``(table name, schema)`` in the database for a declared table."""
        cfg = self.config.tables[table]
        return cfg.name or table, cfg.db_schema

    def describe(self, table: str) -> list[SourceColumn]:
        """Reflect one declared table and check its declared columns exist.

        Raises:
            SourceError: the database is unreachable, or the table or a column is missing.
        """
        cfg: SourceTableConfig = self.config.tables[table]
        name, schema = self.table_ref(table)
        shown = f"{schema}.{name}" if schema else name
        try:
            inspector = sa.inspect(self.engine)
            if not inspector.has_table(name, schema=schema):
                tables = inspector.get_table_names(schema=schema)
                raise SourceError(
                    f"source '{self.name}' ({self.shown_url}): table '{shown}' does not exist "
                    f"(tables there: {', '.join(sorted(tables)) or 'none'})"
                )
            reflected = inspector.get_columns(name, schema=schema)
        except SourceError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(f"cannot read table '{shown}'", exc) from exc
        available = {c["name"]: c["type"] for c in reflected}
        wanted = columns_to_read(
            cfg, list(available), f"source '{self.name}' ({self.shown_url}): table '{shown}'"
        )
        self._types[table] = {c: available[c] for c in wanted}
        return [SourceColumn(c, sqlite_type(available[c])) for c in wanted]

    def read(
        self,
        table: str,
        columns: Sequence[str],
        batch_rows: int = BATCH_ROWS,
        since: tuple[str, Any] | None = None,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Yield batches of rows of ``columns``, streamed from the server, ordered by key."""
        cfg = self.config.tables[table]
        name, schema = self.table_ref(table)
        types = self._types.get(table, {})
        listed = list(dict.fromkeys([*columns, *([since[0]] if since else [])]))
        meta_table = sa.table(name, *(sa.column(c, types.get(c)) for c in listed), schema=schema)
        query = sa.select(*(meta_table.c[c] for c in columns)).order_by(
            meta_table.c[cfg.primary_key]
        )
        if since is not None:
            column = meta_table.c[since[0]]
            query = query.where(column >= _driver_value(types.get(since[0]), since[1]))
        try:
            with self.engine.connect() as conn:
                if since is None and self.engine.dialect.name == "sqlite":
                    yield from self._read_sqlite(
                        conn, query, [types.get(c) for c in columns], batch_rows
                    )
                    return
                result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(
                    query
                )
                convert = _row_converter([types.get(c) for c in columns])
                for partition in result.partitions(batch_rows):
                    yield [convert(row) for row in partition]
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(f"reading table '{table}' failed", exc) from exc
        except (TypeError, ValueError) as exc:
            # The driver could not convert a value to the column's declared type.
            raise SourceError(
                f"source '{self.name}' ({self.shown_url}): table '{table}' holds a value that "
                f"does not fit its declared column type ({type(exc).__name__}); fix the data "
                "or the column type"
            ) from exc

    @staticmethod
    def _read_sqlite(
        conn: sa.Connection, query: sa.Select[Any], types: list[Any], batch_rows: int = BATCH_ROWS
    ) -> Iterator[list[tuple[Any, ...]]]:
        """A whole SQLite table through the driver's own cursor (a full sync's reads).

        SQLAlchemy's per-row result processing was most of the time of reading a table
        (benchmarks/README.md, "Source reads"); the query is still SQLAlchemy's (quoting,
        schema), compiled without parameters.
        """
        sql = str(query.compile(dialect=conn.dialect))
        dbapi = conn.dialect.loaded_dbapi
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql)
            convert = _row_converter(types, _sqlite_converter)
            while rows := cursor.fetchmany(batch_rows):
                yield [convert(row) for row in rows]
        except dbapi.Error as exc:
            # Wrapped as SQLAlchemy would have, so the caller reports it like any other read.
            wrap = (
                sa.exc.OperationalError
                if isinstance(exc, dbapi.OperationalError)
                else sa.exc.DatabaseError
            )
            raise wrap(sql, None, exc) from exc
        finally:
            cursor.close()

    def close(self) -> None:
        """Dispose of the engine's connections."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
