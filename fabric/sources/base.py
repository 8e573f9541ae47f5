"""The one surface every source reader offers, whatever it reads (a database, a directory),
and the primitives every reader shares (columns, storage values, batch size).

Sync and the project only ever describe a table, stream its rows and close the reader, so
that is all a reader has to do; each kind of source keeps its own details (SQLAlchemy URLs,
file formats) to itself.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fabric.errors import SourceError

if TYPE_CHECKING:
    from fabric.config.models import SourceConfig, SourceTableConfig

__all__ = [
    "BATCH_ROWS",
    "SourceColumn",
    "TableReader",
    "columns_to_read",
    "to_storage_value",
]

#: Rows fetched per round trip: large enough to amortise the driver, small enough for memory.
BATCH_ROWS = 5000


@dataclass(frozen=True)
class SourceColumn:
    """A reflected source column and the SQLite storage class fabric keeps it as."""

    name: str
    sql_type: str


def to_storage_value(value: Any) -> int | float | str | bytes | None:
    """Convert a driver value to what a micro-database stores (ISO 8601 for times)."""
    if isinstance(value, bool):
        return int(value)  # as SQLite stores it, so every path yields the same value
    if value is None or isinstance(value, int | float | str | bytes):
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat(sep="T")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return str(value)


def columns_to_read(config: SourceTableConfig, available: Sequence[str], where: str) -> list[str]:
    """The columns a table is read with (declared ones, or all, plus key and watermark).

    Raises:
        SourceError: naming every wanted column the table (``where``) does not have, and
            the ones it has.
    """
    wanted = list(config.columns) if config.columns is not None else list(available)
    if config.primary_key not in wanted:
        wanted.insert(0, config.primary_key)
    if config.watermark is not None and config.watermark not in wanted:
        wanted.append(config.watermark)
    missing = [c for c in wanted if c not in available]
    if missing:
        raise SourceError(
            f"{where} has no column {', '.join(repr(m) for m in missing)} "
            f"(columns: {', '.join(available)})"
        )
    return wanted


class TableReader(Protocol):
    """Read the declared tables of one source system, in batches, without writing to it."""

    #: Source name in fabric.yaml, used in every message.
    name: str
    config: SourceConfig
    #: Where the source is, safe to show (password hidden, or the directory).
    shown_url: str

    def describe(self, table: str) -> list[SourceColumn]:
        """Check a declared table and its declared columns exist; return the columns to read.

        Raises:
            SourceError: the table or a column is missing, or the source cannot be read.
        """
        ...

    def read(
        self,
        table: str,
        columns: Sequence[str],
        batch_rows: int = ...,
        since: tuple[str, Any] | None = ...,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Yield batches of rows of ``columns``, values already SQLite storage values.

        ``since`` is ``(watermark column, value)``: only rows whose column is at least that
        value (as a storage value, like the rows give it) are read.
        """
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
