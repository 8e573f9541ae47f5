"""Read CSV and Parquet files as source tables, in batches, without ever writing to them.

A file source is a directory (``path:`` in fabric.yaml) holding one file per table. Files are
opened read-only, streamed a batch at a time (never a whole file in memory), and rows come out
in file order: unlike the database reader there is no index to order by key, and sync does not
need the order.

Parquet files carry types, mapped to SQLite storage classes the way the database reader maps
SQL types. CSV carries none: the first :data:`INFER_ROWS` records decide each column's type
(see :func:`infer_csv_type`), or ``csv.types`` in fabric.yaml pins it. Every problem is a
one-line :class:`SourceError` naming the source, the table and the file (and the line, for
CSV); messages never quote a value, which may be personal data.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import json
import math
import re
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from fabric.config.models import CsvConfig, SourceConfig, SourceTableConfig
from fabric.errors import SourceError, SourceUnavailableError
from fabric.sources.base import BATCH_ROWS, SourceColumn, columns_to_read, to_storage_value

__all__ = ["INFER_ROWS", "FileSourceReader", "arrow_sql_type", "infer_csv_type"]

#: CSV records sampled to infer column types: enough to see the shape of the data, cheap to
#: read twice (once for ``describe``, once again when streaming).
INFER_ROWS = 1000

# Canonical spellings only: "007" or "+33612345678" look numeric but are identifiers (zip codes,
# phone numbers) whose leading zero or plus sign would be lost as numbers; they stay TEXT.
_INTEGER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)")
_REAL_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_INT64 = range(-(2**63), 2**63)
_KINDS = ("INTEGER", "REAL", "TEXT")

Converter = Callable[[Any], Any]
#: ``(line, fields)`` of each CSV record; a generator so a reader can close its file early.
_Records = Generator[tuple[int, list[str]], None, None]


def _csv_integer(text: str) -> int:
    if _INTEGER_RE.fullmatch(text):
        value = int(text)
        if value in _INT64:  # SQLite integers are 64-bit; a longer number is an identifier
            return value
    raise ValueError("not an integer")


def _csv_real(text: str) -> float:
    if _INTEGER_RE.fullmatch(text):
        # An integer too wide for SQLite is an identifier, not an approximate number.
        return float(_csv_integer(text))
    if _REAL_RE.fullmatch(text):
        value = float(text)
        if math.isfinite(value):
            return value
    raise ValueError("not a number")


_CSV_CONVERTERS: dict[str, Converter | None] = {
    "INTEGER": _csv_integer,
    "REAL": _csv_real,
    "TEXT": None,
}


def _csv_kind(text: str) -> int:
    """Return the index into :data:`_KINDS` of the narrowest type that holds ``text``."""
    try:
        _csv_integer(text)
        return 0
    except ValueError:
        pass
    try:
        _csv_real(text)
        return 1
    except ValueError:
        return 2


def infer_csv_type(values: Sequence[str]) -> str:
    """Infer a CSV column's storage class from sample values.

    INTEGER when every non-empty value is a canonical 64-bit integer, REAL when every one is a
    number (integers included), TEXT otherwise, and TEXT when every value is empty: there is
    nothing to go by, and text holds anything.
    """
    kinds = [_csv_kind(v) for v in values if v != ""]
    return _KINDS[max(kinds)] if kinds else "TEXT"


def arrow_sql_type(arrow_type: Any) -> str:
    """Map an Arrow type to a SQLite storage class (times become ISO 8601 TEXT)."""
    types = pa.types
    if types.is_dictionary(arrow_type):
        return arrow_sql_type(arrow_type.value_type)
    if types.is_boolean(arrow_type) or types.is_integer(arrow_type):
        return "INTEGER"
    if types.is_floating(arrow_type) or types.is_decimal(arrow_type):
        return "REAL"
    if (
        types.is_binary(arrow_type)
        or types.is_large_binary(arrow_type)
        or types.is_fixed_size_binary(arrow_type)
    ):
        return "BLOB"
    return "TEXT"


def _nested_text(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def _arrow_converter(arrow_type: Any) -> Converter | None:
    """Return the conversion a Parquet column's Python values need, or None if none is."""
    types = pa.types
    if types.is_dictionary(arrow_type):
        return _arrow_converter(arrow_type.value_type)
    if types.is_boolean(arrow_type):
        return int
    if (
        types.is_integer(arrow_type)
        or types.is_floating(arrow_type)
        or types.is_string(arrow_type)
        or types.is_large_string(arrow_type)
    ):
        return None
    if types.is_list(arrow_type) or types.is_large_list(arrow_type) or types.is_struct(arrow_type):
        return _nested_text
    if types.is_map(arrow_type):
        return lambda value: _nested_text(dict(value))
    # Timestamps (isoformat with 'T', like the database reader), dates, decimals, binary.
    return to_storage_value


def _open_text(path: Path, encoding: str) -> IO[str]:
    """Open a text file for reading only, through gzip when its name ends in ``.gz``."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return path.open("r", encoding=encoding, newline="")


def _undecodable_line(path: Path, encoding: str) -> int | None:
    """Return the first line that does not decode, found by a second, binary pass.

    Text is decoded in chunks of several kilobytes, so where the CSV reader was when decoding
    failed says little; this error path can afford reading the file again.
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with gzip.open(path) if path.name.lower().endswith(".gz") else path.open("rb") as raw:
            for number, line in enumerate(raw, start=1):
                try:
                    decoder.decode(line)
                except UnicodeDecodeError:
                    return number
    except (OSError, EOFError):
        pass
    return None


@dataclass(frozen=True)
class _TableFile:
    """A described table: its file, format and the storage class of each column."""

    path: Path
    format: str
    types: dict[str, str]
    #: "inferred" or "declared" per CSV column, for messages about values that do not fit.
    origins: dict[str, str]


class FileSourceReader:
    """One directory of CSV and Parquet files, one file per declared table, only ever read.

    A CSV value that does not fit its column's type (a letter in a column the first
    :data:`INFER_ROWS` records made INTEGER) stops the read with a :class:`SourceError`
    naming the file, line and column, rather than being kept as text: the entity table declares
    the column INTEGER, and SQLite's type affinity would quietly turn text such as ``007`` into
    the number 7. The fix the message gives is ``csv.types`` in fabric.yaml.
    """

    def __init__(self, name: str, config: SourceConfig, root: Path) -> None:
        if config.path is None:
            raise SourceError(f"source '{name}': not a file source (it has no 'path')")
        self.name = name
        self.config = config
        self.directory = config.path if config.path.is_absolute() else root / config.path
        self.shown_url = str(self.directory)
        self._described: dict[str, _TableFile] = {}

    def _where(self, table: str, path: Path | None = None, line: int | None = None) -> str:
        where = f"source '{self.name}' ({self.shown_url}): table '{table}'"
        if path is not None:
            shown = path.relative_to(self.directory).as_posix()
            where += f" ({shown} line {line})" if line is not None else f" ({shown})"
        return where

    def _listing(self, directory: Path) -> str:
        try:
            names = sorted(p.name for p in directory.iterdir() if p.is_file())
        except OSError:
            return "none"
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        return shown or "none"

    def table_file(self, table: str) -> Path:
        """Return the file holding a declared table.

        Raises:
            SourceUnavailableError: the directory or the file does not exist.
        """
        if not self.directory.is_dir():
            raise SourceUnavailableError(
                f"source '{self.name}': directory {self.directory} does not exist "
                f"(fabric.yaml: sources.{self.name}.path)"
            )
        cfg = self.config.tables[table]
        if cfg.file is not None:
            path = self.directory / cfg.file
            if not path.is_file():
                raise SourceUnavailableError(
                    f"{self._where(table)}: file {cfg.file.as_posix()} does not exist "
                    f"(files there: {self._listing(path.parent)})"
                )
            return path
        candidates = [f"{table}.parquet", f"{table}.csv", f"{table}.csv.gz"]
        for candidate in candidates:
            if (self.directory / candidate).is_file():
                return self.directory / candidate
        raise SourceUnavailableError(
            f"{self._where(table)}: no file {', '.join(candidates)} (files there: "
            f"{self._listing(self.directory)}; name another with "
            f"sources.{self.name}.tables.{table}.file)"
        )

    def describe(self, table: str) -> list[SourceColumn]:
        """Find a declared table's file, read its columns and check the declared ones exist.

        Parquet columns come from the file's schema; CSV columns from the header row, with
        types inferred from the first :data:`INFER_ROWS` records unless ``csv.types`` pins them.

        Raises:
            SourceError: the file is missing, unreadable, not in its format, or lacks a column.
        """
        cfg: SourceTableConfig = self.config.tables[table]
        path = self.table_file(table)
        file_format = SourceTableConfig.file_format(path)
        if file_format == "parquet" and cfg.csv is not None:
            raise SourceError(
                f"{self._where(table, path)}: CSV options given for a Parquet file; remove "
                f"sources.{self.name}.tables.{table}.csv or name the CSV file with 'file'"
            )
        if file_format == "parquet":
            schema = self._parquet_schema(table, path)
            available = {field.name: arrow_sql_type(field.type) for field in schema}
            origins: dict[str, str] = {}
        elif file_format == "csv":
            available, origins = self._csv_types(table, path, cfg.csv or CsvConfig())
        else:
            suffixes = ", ".join(SourceTableConfig.FILE_SUFFIXES)
            raise SourceError(f"{self._where(table, path)}: unsupported file type (use {suffixes})")
        wanted = columns_to_read(cfg, list(available), self._where(table, path))
        self._described[table] = _TableFile(path, file_format, available, origins)
        return [SourceColumn(c, available[c]) for c in wanted]

    def read(
        self,
        table: str,
        columns: Sequence[str],
        batch_rows: int = BATCH_ROWS,
        since: tuple[str, Any] | None = None,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Yield batches of rows of ``columns`` in file order, as SQLite storage values.

        Types are those ``describe`` found (it runs first if it has not). A CSV value that does
        not fit its column's type raises :class:`SourceError` naming file, line and column.
        """
        described = self._described.get(table)
        if described is None:
            self.describe(table)
            described = self._described[table]
        missing = [c for c in columns if c not in described.types]
        if missing:
            raise SourceError(
                f"{self._where(table, described.path)} has no column "
                f"{', '.join(repr(m) for m in missing)} "
                f"(columns: {', '.join(described.types)})"
            )
        if since is not None and since[0] not in columns:
            columns = [*columns, since[0]]
            trim = len(columns) - 1
        else:
            trim = len(columns)
        if described.format == "parquet":
            batches = self._parquet_batches(table, described, columns, batch_rows)
        else:
            batches = self._csv_batches(table, described, columns, batch_rows)
        if since is None:
            yield from batches
            return
        # A file has no index to seek by: every row is read and the older ones dropped.
        at, value = columns.index(since[0]), since[1]
        for batch in batches:
            kept = [row[:trim] for row in batch if row[at] is not None and row[at] >= value]
            if kept:
                yield kept

    def close(self) -> None:
        """Forget what was described; files are only open while a read runs."""
        self._described.clear()

    # -- Parquet ---------------------------------------------------------------------------

    def _parquet_error(self, table: str, path: Path, exc: Exception) -> SourceError:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if isinstance(exc, FileNotFoundError):
            return SourceUnavailableError(f"{self._where(table, path)}: file disappeared")
        return SourceError(f"{self._where(table, path)}: not a readable Parquet file: {reason}")

    def _parquet_schema(self, table: str, path: Path) -> Any:
        try:
            with pq.ParquetFile(path) as parquet:
                return parquet.schema_arrow
        except (pa.ArrowException, OSError) as exc:
            raise self._parquet_error(table, path, exc) from exc

    def _parquet_batches(
        self, table: str, described: _TableFile, columns: Sequence[str], batch_rows: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        try:
            with pq.ParquetFile(described.path) as parquet:
                schema = parquet.schema_arrow
                converters = [_arrow_converter(schema.field(c).type) for c in columns]
                for batch in parquet.iter_batches(batch_size=batch_rows, columns=list(columns)):
                    if batch.num_rows == 0:
                        continue
                    values = []
                    # by name: a batch's column order need not follow the order asked for
                    for name, convert in zip(columns, converters, strict=True):
                        column = batch.column(name).to_pylist()
                        if convert is not None:
                            column = [None if v is None else convert(v) for v in column]
                        values.append(column)
                    yield list(zip(*values, strict=True))
        except (pa.ArrowException, OSError) as exc:
            raise self._parquet_error(table, described.path, exc) from exc

    # -- CSV -------------------------------------------------------------------------------

    def _csv_records(self, table: str, path: Path, options: CsvConfig) -> _Records:
        """Yield ``(line, fields)`` of each record, the header first, skipping blank lines.

        ``line`` is where the record starts (a quoted field may span lines). Read, decode and
        CSV syntax errors become one-line SourceErrors naming the line.
        """
        # utf-8-sig reads plain UTF-8 too, and drops the byte order mark spreadsheets write,
        # which would otherwise become part of the first column's name.
        encoding = "utf-8-sig" if codecs.lookup(options.encoding).name == "utf-8" else None
        encoding = encoding or options.encoding
        line = 0
        try:
            with _open_text(path, encoding) as handle:
                # strict: a stray quote is an error, not a silently merged or split field
                reader = csv.reader(handle, delimiter=options.delimiter, strict=True)
                for fields in reader:
                    start, line = line + 1, reader.line_num
                    if fields:
                        yield start, fields
        except csv.Error as exc:
            raise SourceError(
                f"{self._where(table, path, line + 1)}: malformed CSV: {exc} (check quoting "
                f"and the delimiter {options.delimiter!r})"
            ) from exc
        except UnicodeDecodeError as exc:
            bad = _undecodable_line(path, encoding)
            raise SourceError(
                f"{self._where(table, path, bad)}: not valid {options.encoding} text; "
                f"set sources.{self.name}.tables.{table}.csv.encoding"
            ) from exc
        except FileNotFoundError as exc:
            raise SourceUnavailableError(f"{self._where(table, path)}: file disappeared") from exc
        except (OSError, EOFError) as exc:
            reason = str(exc).strip() or type(exc).__name__
            raise SourceError(f"{self._where(table, path)}: cannot read: {reason}") from exc

    def _csv_header(self, table: str, path: Path, records: _Records) -> list[str]:
        header = next(records, None)
        if header is None:
            raise SourceError(
                f"{self._where(table, path)}: the file is empty; a CSV source needs a header "
                "row naming the columns"
            )
        names = header[1]
        for position, column in enumerate(names, start=1):
            if column == "":
                raise SourceError(
                    f"{self._where(table, path, header[0])}: header field {position} is empty; "
                    "every column needs a name"
                )
            if names.index(column) != position - 1:
                raise SourceError(
                    f"{self._where(table, path, header[0])}: the header names column "
                    f"'{column}' twice"
                )
        return names

    def _check_width(
        self, table: str, path: Path, line: int, fields: list[str], width: int
    ) -> None:
        if len(fields) != width:
            raise SourceError(
                f"{self._where(table, path, line)}: {len(fields)} fields, but the header has "
                f"{width}"
            )

    def _csv_types(
        self, table: str, path: Path, options: CsvConfig
    ) -> tuple[dict[str, str], dict[str, str]]:
        records = self._csv_records(table, path, options)
        try:
            header = self._csv_header(table, path, records)
            samples: list[list[str]] = [[] for _ in header]
            for count, (line, fields) in enumerate(records, start=1):
                self._check_width(table, path, line, fields, len(header))
                for sample, value in zip(samples, fields, strict=True):
                    sample.append(value)
                if count >= INFER_ROWS:
                    break
        finally:
            records.close()
        unknown = [c for c in options.types if c not in header]
        if unknown:
            raise SourceError(
                f"{self._where(table, path)}: csv.types names no column "
                f"{', '.join(repr(c) for c in unknown)} (columns: {', '.join(header)})"
            )
        types = {
            column: options.types.get(column) or infer_csv_type(sample)
            for column, sample in zip(header, samples, strict=True)
        }
        origins = {c: "declared" if c in options.types else "inferred" for c in header}
        return types, origins

    def _csv_batches(
        self, table: str, described: _TableFile, columns: Sequence[str], batch_rows: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        path = described.path
        records = self._csv_records(table, path, self.config.tables[table].csv or CsvConfig())
        try:
            header = self._csv_header(table, path, records)
            if header != list(described.types):
                raise SourceError(
                    f"{self._where(table, path)}: the header changed since the file was "
                    "described; run again"
                )
            plan = [(header.index(c), c, _CSV_CONVERTERS[described.types[c]]) for c in columns]
            batch: list[tuple[Any, ...]] = []
            for line, fields in records:
                self._check_width(table, path, line, fields, len(header))
                row: list[Any] = []
                for at, column, convert in plan:
                    text = fields[at]
                    if text == "":
                        row.append(None)
                    elif convert is None:
                        row.append(text)
                    else:
                        try:
                            row.append(convert(text))
                        except ValueError:
                            raise self._misfit(table, described, line, column) from None
                batch.append(tuple(row))
                if len(batch) >= batch_rows:
                    yield batch
                    batch = []
            if batch:
                yield batch
        finally:
            records.close()

    def _misfit(self, table: str, described: _TableFile, line: int, column: str) -> SourceError:
        kind = described.types[column]
        what = "an integer" if kind == "INTEGER" else "a number"
        if described.origins.get(column) == "declared":
            why = f"csv.types declares it {kind}"
        else:
            why = f"the first {INFER_ROWS} records made it {kind}"
        return SourceError(
            f"{self._where(table, described.path, line)}: column '{column}' holds a value "
            f"that is not {what} ({why}); fix the value or pin the column's type: "
            f"sources.{self.name}.tables.{table}.csv.types.{column}: TEXT"
        )
