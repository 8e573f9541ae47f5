"""Spines: open one, check its columns, bound what it may decode to, stream its rows.

A spine (CSV or Parquet) has ``entity_id``, ``event_timestamp`` and any label columns. Its
columns are checked before any row is read: both key columns present, no name twice, and no
label named like a column the export writes (``found``, ``existed``, the view's features),
which would give the output two columns of one name. These checks hold wherever a spine
comes from.

Limits (:class:`SpineLimits`) bound what a spine from someone else may make the server do:
rows, decoded bytes, and the longest value. A few kilobytes of Parquet can decode to
gigabytes (one long value compressed, or one value repeated through a dictionary), so they
are checked before the data is decoded:

- Parquet: the row count and each column chunk's uncompressed size come from the file's
  footer; text columns that a dictionary may inflate, or whose chunks may hold a value over
  the limit, are read once as dictionaries (indices and distinct values, never expanded) to
  add up their exact decoded size and find their longest value.
- CSV: the file's size bounds its decoded size, and a value cannot outgrow the reader's
  block (8 MiB); rows are counted from the line breaks (exactly, when they come near the
  limit), and counted again as the export streams. A compressed CSV (``.csv.gz``) is
  counted as it streams only: rows and decoded bytes.
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

from fabric.errors import FabricError

__all__ = [
    "WRITTEN",
    "SpineError",
    "SpineInfo",
    "SpineLimits",
    "SpineTooLargeError",
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


class SpineError(FabricError):
    """A spine that cannot be used: a missing column, a time that does not parse."""

    code = "bad_request"


class SpineTooLargeError(SpineError):
    """A spine past a limit of :class:`SpineLimits` (413 over the API)."""

    code = "payload_too_large"


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

    Raises:
        SpineError: naming the columns (never a value).
    """
    columns = list(columns)
    missing = [c for c in _KEYS if c not in columns]
    if missing:
        shown = ", ".join(_named(c)[1:-1] for c in columns[:20])
        raise SpineError(
            f"{name}: the spine has no column {', '.join(repr(m) for m in missing)} "
            f"(columns: {shown}{', ...' if len(columns) > 20 else ''})"
        )
    twice = [(column, n) for column, n in Counter(columns).items() if n > 1]
    if twice:
        column, n = twice[0]
        raise SpineError(
            f"{name}: the spine has {n} columns named {_named(column)}; each column needs "
            "its own name"
        )
    written = {*WRITTEN, *reserved}
    clashes = [c for c in columns if c in written]
    if clashes:
        raise SpineError(
            f"{name}: the spine's column(s) {', '.join(_named(c) for c in clashes)} have the "
            "name of a column the export writes (found, existed, or a feature of the view); "
            "rename them"
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
    rows = int(meta.num_rows)
    # Key columns first: a spine without them is refused as such, whatever its size.
    check_columns(columns, path)
    if limits is None:
        return SpineInfo(columns, rows, None)
    limits.check_rows(rows, path)
    nested = [f.name for f in arrow if pa.types.is_nested(f.type)]
    if nested:
        raise SpineError(
            f"{path}: column(s) {', '.join(_named(n) for n in nested)} are lists, maps or "
            "structs; a spine's columns are flat"
        )
    # Flat: one column chunk per column, in the schema's order.
    estimate: dict[str, int] = dict.fromkeys(columns, 0)
    texts: set[str] = set()
    for group in range(meta.num_row_groups):
        row_group = meta.row_group(group)
        for index, column in enumerate(columns):
            chunk = row_group.column(index)
            kind, values = chunk.physical_type, int(chunk.num_values)
            size = int(chunk.total_uncompressed_size)
            if kind == "FIXED_LEN_BYTE_ARRAY":
                width = int(parquet.schema.column(index).length)
                limits.check_value(width, column, path)
                estimate[column] += values * width
            elif kind == "BYTE_ARRAY" and pa.types.is_decimal(arrow.field(index).type):
                estimate[column] += values * 32
            elif kind == "BYTE_ARRAY":
                # Plain values decode to about their uncompressed size; a dictionary's pages
                # may repeat a value any number of times: counted below.
                estimate[column] += size + _OFFSET * values
                limits.check_decoded(sum(estimate.values()), path)
                if size > values * (4 * limits.value_bytes + 128) + 4096:
                    # Values under the limit fill at most this: each once as data, once in
                    # a dictionary, twice in a page's statistics (a page per value at
                    # worst), with lengths, indices and headers. So one value at least is
                    # over the limit: refused unread.
                    limits.check_value(None, column, path)
                if chunk.has_dictionary_page or size > limits.value_bytes:
                    texts.add(column)
            else:
                estimate[column] += values * _WIDTH.get(kind, 8)
        limits.check_decoded(sum(estimate.values()), path)
    if texts:
        others = sum(n for column, n in estimate.items() if column not in texts)
        estimate.update(_text_bytes(path, sorted(texts), limits, others))
    total = sum(estimate.values())
    limits.check_decoded(total, path)
    return SpineInfo(columns, rows, total)


def _text_bytes(path: Path, columns: list[str], limits: SpineLimits, others: int) -> dict[str, int]:
    """Decoded bytes of text ``columns``, read as dictionaries (never expanded), checking
    each distinct value's length; stops as soon as the spine's total (``others``: the other
    columns) passes the limit.

    The footer's sizes, checked before, bound the dictionaries held here: what they do not
    bound is how often the indices repeat a value.
    """
    parquet = pq.ParquetFile(path, read_dictionary=columns)
    exact = dict.fromkeys(columns, 0)
    for batch in parquet.iter_batches(batch_size=1 << 20, columns=columns):
        for column, array in zip(columns, batch.columns, strict=True):
            if isinstance(array, pa.DictionaryArray):
                lengths = pc.binary_length(array.dictionary)
                size = pc.sum(lengths.take(array.indices)).as_py() or 0
            else:  # not given as a dictionary (an extension type): decoded, bounded above
                lengths = pc.binary_length(array)
                size = array.nbytes
            limits.check_value(int(pc.max(lengths).as_py() or 0), column, path)
            exact[column] += int(size) + _OFFSET * len(array)
        limits.check_decoded(others + sum(exact.values()), path, at_least=True)
    return exact


def _check_csv(path: Path, size: int, limits: SpineLimits | None) -> SpineInfo:
    reader = _csv_reader(path)
    columns = tuple(reader.schema.names)
    reader.close()
    check_columns(columns, path)
    if limits is None or _compressed(path):
        return SpineInfo(columns, None, None)  # counted as the export streams it
    limits.check_decoded(size, path)
    return SpineInfo(columns, _csv_rows(path, limits), size)


def _csv_rows(path: Path, limits: SpineLimits) -> int | None:
    """Rows of a CSV file: at most its line breaks (counted in C); counted exactly when
    those pass the limit, as blank lines and quoted values hold line breaks too. None: known
    to be under the limit."""
    breaks = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            breaks += block.count(b"\n")
    if breaks <= limits.rows:
        return None
    rows = 0
    for batch in _csv_reader(path):
        rows += batch.num_rows
        if rows > limits.rows:
            break
    limits.check_rows(rows, path)
    return rows


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
    decoded bytes) are counted as they stream.
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
