"""Spines: open one, check its columns, bound what it may decode to, stream its rows.

A spine (CSV or Parquet) has ``entity_id``, ``event_timestamp`` and any label columns. Its
columns are checked before any row is read: both key columns present, no name twice, and no
label named like a column the export writes (``entity_id``, ``event_timestamp``, ``found``,
``existed``, the view's features), which would give the output two columns of one name.
Names are compared as tools that ignore case compare them (SQL, spreadsheets): without case
and surrounding spaces. These checks hold wherever a spine comes from.

Limits (:class:`SpineLimits`) bound what a spine from someone else may make the server do:
rows, decoded bytes, and the longest value. A few kilobytes of Parquet can decode to
gigabytes (one long value compressed, one value repeated through a dictionary, or one value
prefix-coded over and over), so they are checked before the data is decoded:

- Parquet: the row count comes from the footer (the reader makes that many rows, no more);
  everything else from the pages' own headers, read as the reader will read them, since the
  footer's encodings and sizes are the writer's word and can say anything. Each page's
  decompressed size is counted. Byte-array pages must be written in an encoding whose size
  bounds what it decodes to (PLAIN, DELTA_LENGTH_BYTE_ARRAY, BYTE_STREAM_SPLIT, or dictionary
  indices); others (DELTA_BYTE_ARRAY) are refused, naming the column and the encoding.
  Fixed-width columns decode to rows x width. Text chunks with a dictionary, or that may hold
  a value over the limit, are read once (dictionaries as such, never expanded) to add up
  their exact decoded size and find their longest value.
- CSV: the file's size bounds its decoded size, and a value cannot outgrow the reader's
  block (8 MiB); the file is read once (in C) to count its rows and find its longest text
  value. A compressed CSV (``.csv.gz``) is checked as it streams: rows, decoded bytes and
  values.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from fabric.errors import SpineError, SpineTooLargeError
from fabric.features._parquet_pages import (
    ENCODINGS,
    ChunkPages,
    PageHeaders,
    TooManyPages,
    UnreadablePage,
)

__all__ = [
    "WRITTEN",
    "SpineInfo",
    "SpineLimits",
    "check_columns",
    "check_spine",
    "estimated_rows",
    "is_parquet",
    "spine_batches",
]

#: Columns every export writes beside the spine's own (and the view's features).
WRITTEN = ("found", "existed")
#: The two columns a spine must have.
_KEYS = ("entity_id", "event_timestamp")
#: CSV is read in blocks of this size; a row longer than a block is an error of the reader.
_CSV_BLOCK = 8 << 20
#: File endings pyarrow decompresses on the fly when it opens a CSV file.
_COMPRESSED = (".gz", ".bz2", ".lz4", ".zst", ".zstd", ".br")
#: Bytes per value an Arrow string column adds to its data (its offsets).
_OFFSET = 4
#: Decoded bytes per value of Parquet's fixed-width physical types (at most).
_WIDTH = {"BOOLEAN": 1, "INT32": 8, "INT64": 8, "INT96": 8, "FLOAT": 8, "DOUBLE": 8}
#: Encodings of byte arrays whose pages bound what they decode to: PLAIN (each value after
#: its length), DELTA_LENGTH_BYTE_ARRAY (the lengths, then the bytes), BYTE_STREAM_SPLIT
#: (fixed length: the bytes, reordered), and dictionaries (PLAIN values) and their indices
#: (measured through the dictionary). Not DELTA_BYTE_ARRAY: a value is a prefix of the one
#: before and a suffix, so a few bytes stand for any number of long values. Fixed-width
#: types decode to rows x width whatever their encoding.
_BOUNDED = {
    "BYTE_ARRAY": frozenset({0, 2, 6, 8}),
    "FIXED_LEN_BYTE_ARRAY": frozenset({0, 2, 8, 9}),
}
#: Most pages a spine may have: each page's header is read in Python, so this bounds the time
#: a spine is judged in (a header's cost: benchmarks/README.md, "Spine pages"). Writers'
#: defaults give a page per 20,000 rows or 1 MiB of a column (pyarrow, Spark): a
#: 5,000,000-row spine of 40 columns has about 10,000.
_MAX_PAGES = 100_000


@dataclass(frozen=True)
class SpineLimits:
    """What a spine may decode to: ``api.exports.max_spine_rows``,
    ``max_spine_decoded_bytes`` and ``max_spine_value_bytes``."""

    rows: int
    decoded_bytes: int
    value_bytes: int

    def check_rows(self, rows: int, name: object) -> None:
        """Raise SpineTooLargeError past ``rows``."""
        if rows > self.rows:
            raise SpineTooLargeError(
                f"{name}: the spine has {rows:,} rows, more than api.exports.max_spine_rows "
                f"({self.rows:,})"
            )

    def check_decoded(self, size: int, name: object, *, at_least: bool = False) -> None:
        """Raise SpineTooLargeError past ``decoded_bytes``."""
        if size > self.decoded_bytes:
            amount = f"at least {size:,}" if at_least else f"{size:,}"
            raise SpineTooLargeError(
                f"{name}: the spine decodes to {amount} bytes, more than "
                f"api.exports.max_spine_decoded_bytes ({self.decoded_bytes:,})"
            )

    def check_value(self, size: int | None, column: str, name: object) -> None:
        """Raise SpineTooLargeError past ``value_bytes`` (``size`` None: known to be past
        it, by how much unknown)."""
        if size is None or size > self.value_bytes:
            amount = "more" if size is None else f"{size:,} bytes, more"
            raise SpineTooLargeError(
                f"{name}: column {_named(column)} holds a value of {amount} than "
                f"api.exports.max_spine_value_bytes ({self.value_bytes:,} bytes)"
            )

    def check_values(self, batch: pa.RecordBatch, name: object) -> None:
        """Raise SpineTooLargeError when a text or binary value of ``batch`` is past
        ``value_bytes`` (measured in C, a column at a time)."""
        for column, array in zip(batch.schema.names, batch.columns, strict=True):
            values = array.dictionary if isinstance(array, pa.DictionaryArray) else array
            if _is_text(values.type):
                longest = pc.max(pc.binary_length(values)).as_py()
                if longest is not None and longest > self.value_bytes:
                    self.check_value(int(longest), column, name)


@dataclass(frozen=True)
class SpineInfo:
    """What checking a spine found: its columns and, where known, rows and decoded bytes."""

    columns: tuple[str, ...]
    rows: int | None
    decoded_bytes: int | None


def is_parquet(path: Path) -> bool:
    """Tell a Parquet spine from a CSV one, by the file's name."""
    return path.suffix.lower() in (".parquet", ".pq")


def _compressed(path: Path) -> bool:
    return path.name.lower().endswith(_COMPRESSED)


def check_columns(columns: Iterable[str], name: object, reserved: Iterable[str] = ()) -> None:
    """Refuse a spine without its key columns, with a name twice, or with a column named like
    one the export writes (``found``, ``existed``, and ``reserved``: the view's features).

    Names are compared without case and surrounding spaces, as SQL, spreadsheets and other
    tools that ignore case compare them: ``Found`` beside the ``found`` the export writes, or
    ``Label`` beside ``label``, would be one column twice to them.

    Raises:
        SpineError: naming the columns (never a value).
    """
    columns = list(columns)
    missing = [c for c in _KEYS if c not in columns]
    if missing:
        shown = ", ".join(_named(c)[1:-1] for c in columns[:20])
        near = [c for c in columns if _folded(c) in missing]
        hint = f"; {', '.join(_named(c) for c in near)} differ by case or spaces" if near else ""
        raise SpineError(
            f"{name}: the spine has no column {', '.join(repr(m) for m in missing)} "
            f"(columns: {shown}{', ...' if len(columns) > 20 else ''}{hint})"
        )
    twice = [(column, n) for column, n in Counter(columns).items() if n > 1]
    if twice:
        column, n = twice[0]
        raise SpineError(
            f"{name}: the spine has {n} columns named {_named(column)}; each column needs "
            "its own name"
        )
    first: dict[str, str] = {}
    for column in columns:
        other = first.setdefault(_folded(column), column)
        if other != column:
            raise SpineError(
                f"{name}: the spine's columns {_named(other)} and {_named(column)} differ only "
                "by case or surrounding spaces, so tools that ignore case (SQL, spreadsheets) "
                "would see one column twice; rename one of them"
            )
    written = {_folded(c) for c in (*_KEYS, *WRITTEN, *reserved)}
    clashes = [c for c in columns if c not in _KEYS and _folded(c) in written]
    if clashes:
        raise SpineError(
            f"{name}: the spine's column(s) {', '.join(_named(c) for c in clashes)} have the "
            "name of a column the export writes (entity_id, event_timestamp, found, existed, "
            "or a feature of the view), ignoring case and surrounding spaces; rename them"
        )


def _folded(column: str) -> str:
    """A column's name as tools that ignore case see it."""
    return column.strip().casefold()


def _is_text(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_binary_view(kind)
    )


def _named(column: str) -> str:
    """A column's name for a message: quoted, escaped, and cut short (it is the caller's)."""
    return repr(column if len(column) <= 64 else column[:61] + "...")


def check_spine(
    path: Path,
    limits: SpineLimits | None = None,
    *,
    name: object = None,
    reserved: Iterable[str] = (),
) -> SpineInfo:
    """Check a spine's columns and, given ``limits``, what it decodes to, before reading it.

    ``name`` is what messages call the file (default: its path). The result of a file that
    passed is kept while the file is unchanged (same size, time and inode), so checking it
    again as its export starts costs nothing.

    Raises:
        SpineError: the file is missing or unreadable, or a column problem (named).
        SpineTooLargeError: past a limit (the limit named, with its setting).
    """
    shown = path if name is None else name
    try:
        status = path.stat()
    except OSError:
        raise SpineError(f"{shown}: spine file not found") from None
    identity = (str(path), status.st_size, status.st_mtime_ns, status.st_ino)
    try:
        info = _checked(identity, limits)
    except SpineError as exc:
        # Cached under the file's own path: name it as the caller does.
        raise type(exc)(str(exc).replace(str(path), str(shown), 1)) from None
    check_columns(info.columns, shown, reserved)
    return info


@functools.lru_cache(maxsize=64)
def _checked(identity: tuple[str, int, int, int], limits: SpineLimits | None) -> SpineInfo:
    path = Path(identity[0])
    try:
        if is_parquet(path):
            return _check_parquet(path, limits)
        return _check_csv(path, identity[1], limits)
    except (pa.ArrowException, OSError) as exc:
        raise SpineError(
            f"{path}: not a readable CSV or Parquet spine ({type(exc).__name__})"
        ) from exc


def _check_parquet(path: Path, limits: SpineLimits | None) -> SpineInfo:
    parquet = pq.ParquetFile(path)
    arrow = parquet.schema_arrow
    columns = tuple(arrow.names)
    meta = parquet.metadata
    # The reader makes each row group's rows: the file's own count is the writer's word.
    rows = sum(int(meta.row_group(group).num_rows) for group in range(meta.num_row_groups))
    # Key columns first: a spine without them is refused as such, whatever its size.
    check_columns(columns, path)
    if limits is None:
        return SpineInfo(columns, rows, None)
    limits.check_rows(rows, path)
    # Nested by the Arrow schema, or by Parquet's own (the Arrow schema a file stores is the
    # writer's word): a spine's columns are one leaf each, never repeated.
    nested = [f.name for f in arrow if pa.types.is_nested(f.type)]
    if not nested and (
        meta.num_columns != len(columns)
        or any(parquet.schema.column(i).max_repetition_level for i in range(len(columns)))
    ):
        nested = list(columns)
    if nested:
        raise SpineError(
            f"{path}: column(s) {', '.join(_named(n) for n in nested)} are lists, maps or "
            "structs; a spine's columns are flat"
        )
    estimate = 0
    #: text chunks to read: (row group, column, read as a dictionary, bytes estimated)
    measured: list[tuple[int, int, bool, int]] = []
    # A page header holds at most four values (statistics: min and max, old and new), each
    # at most the value limit when the spine is within it.
    max_header = 4 * limits.value_bytes + (16 << 10)
    with PageHeaders(path, max_header=max_header, max_pages=_MAX_PAGES) as headers:
        for group in range(meta.num_row_groups):
            row_group = meta.row_group(group)
            group_rows = int(row_group.num_rows)  # the reader makes this many rows, no more
            for index, column in enumerate(columns):
                chunk = row_group.column(index)
                kind = chunk.physical_type
                pages = _walk(headers, chunk, column, path)
                _check_encodings(pages, kind, column, path)
                field_type = arrow.field(index).type
                if kind == "BYTE_ARRAY" and not pa.types.is_decimal(field_type):
                    # Plain and length-prefixed values decode to at most their pages' size;
                    # a dictionary's indices may repeat a value any number of times: those
                    # chunks are counted exactly below.
                    size = pages.size + _OFFSET * group_rows
                    estimate += size
                    limits.check_decoded(estimate, path)
                    if pages.size > group_rows * (4 * limits.value_bytes + 128) + 4096:
                        # Values under the limit fill at most this: each once as data, once
                        # in a dictionary, twice in a page's statistics (a page per value at
                        # worst), with lengths, indices and headers. So one value at least
                        # is over the limit: refused unread.
                        limits.check_value(None, column, path)
                    if pages.dictionary or pages.size > limits.value_bytes:
                        measured.append((group, index, pages.dictionary, size))
                    continue
                if kind == "FIXED_LEN_BYTE_ARRAY":
                    limits.check_value(int(parquet.schema.column(index).length), column, path)
                # Fixed width: ``group_rows`` values of one width, whatever the encoding, and
                # the pages decompressed on the way.
                estimate += max(group_rows * _width(kind, field_type), pages.size)
            limits.check_decoded(estimate, path)
    if measured:
        estimate = _text_bytes(path, columns, measured, limits, estimate)
    limits.check_decoded(estimate, path)
    return SpineInfo(columns, rows, estimate)


def _walk(
    headers: PageHeaders, chunk: pq.ColumnChunkMetaData, column: str, path: Path
) -> ChunkPages:
    """A column chunk's page headers (see :mod:`fabric.features._parquet_pages`).

    Raises:
        SpineError: a page header that cannot be read, or more pages than are read.
    """
    try:
        return headers.walk(chunk)
    except TooManyPages:
        raise SpineError(
            f"{path}: the spine has more than {_MAX_PAGES:,} pages; write it with fewer, "
            "larger pages (pyarrow's defaults)"
        ) from None
    except UnreadablePage as exc:
        raise SpineError(
            f"{path}: column {_named(column)}: a page at byte {exc.position:,} cannot be "
            f"checked ({exc}); write the spine again with a common writer (pyarrow, polars, "
            "DuckDB, Spark)"
        ) from None


def _check_encodings(pages: ChunkPages, kind: str, column: str, path: Path) -> None:
    """Refuse a byte-array column chunk whose pages' size does not bound what they decode to.

    Raises:
        SpineError: naming the column and the encoding, and how to write the file instead.
    """
    safe = _BOUNDED.get(kind)
    unsafe = sorted(pages.encodings - safe) if safe is not None else []
    if unsafe:
        encoding = ENCODINGS.get(unsafe[0], f"number {unsafe[0]}")
        raise SpineError(
            f"{path}: column {_named(column)} is written with the {encoding} encoding, whose "
            "size does not bound what it decodes to: write the spine with PLAIN or dictionary "
            "encoding (pyarrow: pq.write_table(table, path), without column_encoding)"
        )


def _width(kind: str, field_type: pa.DataType) -> int:
    """Bytes a value of a fixed-width column decodes to, at most."""
    if pa.types.is_dictionary(field_type):
        return _OFFSET + _width(kind, field_type.value_type)
    try:
        return max(int(field_type.bit_width) // 8, _WIDTH.get(kind, 8))
    except ValueError:  # not of a fixed width to Arrow: the widest value a reader makes
        return 32


def _text_bytes(
    path: Path,
    columns: tuple[str, ...],
    measured: list[tuple[int, int, bool, int]],
    limits: SpineLimits,
    estimate: int,
) -> int:
    """The spine's decoded bytes with the ``measured`` text chunks counted exactly (their
    estimate in ``estimate`` replaced), checking each value's length; stops as soon as the
    total passes the limit.

    Chunks with a dictionary are read as dictionaries (indices and distinct values, never
    expanded): their pages' size, checked before, bounds what is held, not how often the
    indices repeat a value. Others are read as they are, which their pages' size bounds.
    """
    plain = pq.ParquetFile(path)
    names = sorted({columns[index] for _, index, dictionary, _ in measured if dictionary})
    dictionaries = pq.ParquetFile(path, read_dictionary=names) if names else plain
    total = estimate - sum(size for *_, size in measured)
    reads: dict[tuple[int, bool], list[int]] = {}
    for group, index, dictionary, _ in measured:
        reads.setdefault((index, dictionary), []).append(group)
    for (index, dictionary), groups in reads.items():
        column = columns[index]
        source = dictionaries if dictionary else plain
        for batch in source.iter_batches(batch_size=1 << 20, row_groups=groups, columns=[column]):
            array = batch.column(0)
            if isinstance(array, pa.DictionaryArray):
                lengths = pc.binary_length(array.dictionary)
                size = pc.sum(lengths.take(array.indices)).as_py() or 0
            else:
                lengths = pc.binary_length(array)
                size = pc.sum(lengths).as_py() or 0
            limits.check_value(int(pc.max(lengths).as_py() or 0), column, path)
            total += int(size) + _OFFSET * len(array)
            limits.check_decoded(total, path, at_least=True)
    return total


def _check_csv(path: Path, size: int, limits: SpineLimits | None) -> SpineInfo:
    reader = _csv_reader(path)
    try:
        columns = tuple(reader.schema.names)
        check_columns(columns, path)
        if limits is None or _compressed(path):
            return SpineInfo(columns, None, None)  # checked as the export streams it
        limits.check_decoded(size, path)
        # Read once, in C: rows counted exactly (quoted values hold line breaks too), and
        # the longest text value found (a value may fill the reader's block, 8 MiB).
        rows = 0
        for batch in reader:
            rows += batch.num_rows
            limits.check_rows(rows, path)
            limits.check_values(batch, path)
    finally:
        reader.close()
    return SpineInfo(columns, rows, size)


def _csv_reader(path: Path) -> pcsv.CSVStreamingReader:
    """The CSV reader exports use: keys and times as text, whatever they look like."""
    return pcsv.open_csv(
        path,
        read_options=pcsv.ReadOptions(block_size=_CSV_BLOCK),
        convert_options=pcsv.ConvertOptions(
            column_types={"entity_id": pa.string(), "event_timestamp": pa.string()}
        ),
    )


def spine_batches(
    path: Path,
    batch_rows: int,
    limits: SpineLimits | None = None,
    reserved: Iterable[str] = (),
) -> Iterator[pa.RecordBatch]:
    """Stream a spine in batches of at most ``batch_rows`` (CSV or Parquet), its columns
    checked before the first; with ``limits``, the spine is checked first
    (:func:`check_spine`, free when it was already) and its rows (and a compressed CSV's
    decoded bytes and values) are checked as they stream.
    """
    if limits is not None:
        check_spine(path, limits, reserved=reserved)
    elif not path.exists():
        raise SpineError(f"{path}: spine file not found")
    rows = decoded = 0
    try:
        if is_parquet(path):
            parquet = pq.ParquetFile(path)
            names = parquet.schema_arrow.names
            batches: Iterator[pa.RecordBatch] = parquet.iter_batches(batch_size=batch_rows)
        else:
            reader = _csv_reader(path)
            names = reader.schema.names
            batches = iter(reader)
        check_columns(names, path, reserved)
        for batch in batches:
            if limits is not None:
                rows += batch.num_rows
                limits.check_rows(rows, path)
                if _compressed(path):
                    decoded += batch.nbytes
                    limits.check_decoded(decoded, path, at_least=True)
                    limits.check_values(batch, path)
            for start in range(0, batch.num_rows, batch_rows):
                yield batch.slice(start, batch_rows)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SpineError(
            f"{path}: not a readable CSV or Parquet spine ({type(exc).__name__})"
        ) from exc


def estimated_rows(path: Path) -> int:
    """Spine rows, from Parquet's metadata or (CSV) the file's size: to size partitions."""
    try:
        if is_parquet(path):
            return int(pq.ParquetFile(path).metadata.num_rows)
        return path.stat().st_size // 32
    except (pa.ArrowInvalid, OSError):
        return 0
