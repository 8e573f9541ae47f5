"""Parquet page headers, read as a Parquet reader reads them.

A file's footer says how each column chunk is encoded and how large it is, but that is the
writer's word: a crafted file changes it without changing its pages (one byte makes
prefix-coded pages "PLAIN"), and the reader decodes each page as its own header says. What a
spine may decode to is therefore judged from the page headers (:mod:`fabric.features.spine`).
pyarrow reads them but does not show them, so they are read here: Thrift structs (compact
protocol) of a few dozen bytes, of which a few integer fields are kept (page kind, sizes,
values, encoding).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pyarrow.parquet as pq

__all__ = ["ENCODINGS", "ChunkPages", "PageHeaders", "TooManyPages", "UnreadablePage"]

#: Parquet's encodings, by the number a page header gives.
ENCODINGS = {
    0: "PLAIN",
    2: "PLAIN_DICTIONARY",
    3: "RLE",
    4: "BIT_PACKED",
    5: "DELTA_BINARY_PACKED",
    6: "DELTA_LENGTH_BYTE_ARRAY",
    7: "DELTA_BYTE_ARRAY",
    8: "RLE_DICTIONARY",
    9: "BYTE_STREAM_SPLIT",
}

#: Page types (PageHeader.type).
_DATA_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 2, 3

#: Most fields of one Thrift struct in a page header (the format has at most 8).
_MAX_FIELDS = 64


@dataclass
class ChunkPages:
    """What a column chunk's page headers say: the encodings of its values (and of its
    dictionary), whether it has a dictionary, and the bytes its pages decompress to."""

    encodings: set[int] = field(default_factory=set)
    dictionary: bool = False
    size: int = 0


class UnreadablePage(Exception):
    """A page header fabric does not read (said why); ``position``: the page's byte."""

    position = 0


class TooManyPages(Exception):
    """The file has more pages than are read."""


class PageHeaders:
    """The page headers of a Parquet file's column chunks, read as the reader reads them.

    The footer's encodings and sizes are the writer's word: a crafted file changes them
    without changing its pages (one byte makes prefix-coded pages "PLAIN"), and the reader
    decodes each page as its own header says. So the headers are read here: from where the
    reader starts a chunk, until it has seen the chunk's values. They are Thrift (compact
    protocol) structs of a few dozen bytes, parsed in Python from the mapped file; only the
    few fields used are kept, and what a page header never holds (lists, maps, deep nesting,
    dozens of fields, more than its size limit) is refused rather than skipped, so a header
    costs a bounded few microseconds.
    """

    def __init__(self, path: Path, *, max_header: int, max_pages: int) -> None:
        self.path = path
        #: the longest page header read (the reader's own limit is 16 MiB)
        self.max_header = max_header
        #: the most pages read in all (each costs a few microseconds of Python)
        self.max_pages = max_pages
        self.pages = 0
        with path.open("rb") as handle:
            self.data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)

    def __enter__(self) -> PageHeaders:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.data.close()

    def walk(self, chunk: pq.ColumnChunkMetaData) -> ChunkPages:
        """Read a column chunk's page headers.

        Raises:
            UnreadablePage: a page header that cannot be read, or pages that do not hold the
                chunk's values (its ``position`` says where).
            TooManyPages: more pages in the file than ``max_pages``.
        """
        start = int(chunk.data_page_offset)
        dictionary_at = chunk.dictionary_page_offset
        if chunk.has_dictionary_page and dictionary_at is not None and 0 < dictionary_at < start:
            start = int(dictionary_at)
        end = start + int(chunk.total_compressed_size)
        wanted, seen, position, page = int(chunk.num_values), 0, start, start
        pages = ChunkPages()
        try:
            if start < 0 or not start <= end <= len(self.data):
                raise UnreadablePage("the footer places it outside the file")
            while seen < wanted and position < end:
                self.pages += 1
                if self.pages > self.max_pages:
                    raise TooManyPages(self.max_pages)
                page = position
                header, body = self._header(page)
                kind, size, stored = _integers(header, 1, 2, 3)
                position = body + stored
                if kind == _DICTIONARY_PAGE:
                    pages.dictionary = True
                    _, encoding = _integers(_struct_field(header, 7), 1, 2)
                elif kind == _DATA_PAGE:
                    values, encoding = _integers(_struct_field(header, 5), 1, 2)
                    seen += values
                elif kind == _DATA_PAGE_V2:
                    values, encoding = _integers(_struct_field(header, 8), 1, 4)
                    seen += values
                else:
                    continue  # an index page, or a kind unknown: skipped by the reader, unread
                pages.encodings.add(encoding)
                pages.size += max(size, stored)
            if seen < wanted:
                raise UnreadablePage("its pages hold fewer values than its metadata says")
        except UnreadablePage as exc:
            exc.position = page
            raise
        return pages

    def _header(self, position: int) -> tuple[dict[int, object], int]:
        """The page header at ``position``, and where its page's data starts.

        Read through a window that grows, as the reader does, up to ``max_header``.
        """
        window = 512
        while True:
            buffer = self.data[position : position + window]
            try:
                header, end = _thrift_struct(buffer, 0, 0, [_MAX_FIELDS])
            except IndexError:
                if window >= self.max_header or position + window >= len(self.data):
                    raise UnreadablePage("a page header too long, or cut short") from None
                window = min(4 * window, self.max_header)
            else:
                return header, position + end


def _thrift_struct(
    buffer: bytes, position: int, depth: int, budget: list[int]
) -> tuple[dict[int, object], int]:
    """A Thrift struct (compact protocol) of a page header: its integer and struct fields,
    and where it ends.

    Raises:
        IndexError: it goes on past the end of ``buffer``.
        UnreadablePage: it holds what no page header holds (a list, a map, a struct three
            levels down), or more fields than ``budget`` allows.
    """
    fields: dict[int, object] = {}
    number = 0
    while True:
        byte = buffer[position]
        position += 1
        if not byte:
            return fields, position
        budget[0] -= 1
        if budget[0] < 0:
            raise UnreadablePage("a page header of too many fields")
        kind = byte & 0x0F
        if byte >> 4:
            number += byte >> 4
        else:
            number, position = _varint(buffer, position)
            number = (number >> 1) ^ -(number & 1)
        if 4 <= kind <= 6:  # i16, i32, i64: zigzag
            value, position = _varint(buffer, position)
            fields[number] = (value >> 1) ^ -(value & 1)
        elif kind == 8:  # binary (statistics' values): skipped
            length, position = _varint(buffer, position)
            position += length
        elif kind == 12 and depth < 2:  # the page kind's header, its statistics
            fields[number], position = _thrift_struct(buffer, position, depth + 1, budget)
        elif kind == 3:  # byte
            position += 1
        elif kind == 7:  # double
            position += 8
        elif kind not in (1, 2):  # 1, 2: a boolean, in the field's kind
            raise UnreadablePage("a page header holding lists, maps or structs three deep")


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    """An unsigned variable-length integer, and where it ends."""
    byte = buffer[position]
    if byte < 0x80:
        return byte, position + 1
    number, shift = byte & 0x7F, 7
    while True:
        position += 1
        byte = buffer[position]
        number |= (byte & 0x7F) << shift
        if byte < 0x80:
            return number, position + 1
        shift += 7
        if shift > 63:
            raise UnreadablePage("an integer too long")


def _integers(fields: dict[int, object], *numbers: int) -> tuple[int, ...]:
    """Integer fields of a page header that must be there, each from 0 to 2**31 - 1."""
    values = tuple(fields.get(number) for number in numbers)
    for number, value in zip(numbers, values, strict=True):
        if type(value) is not int or not 0 <= value < 1 << 31:
            raise UnreadablePage(f"field {number} missing or out of range")
    return values  # type: ignore[return-value]  # checked above


def _struct_field(fields: dict[int, object], number: int) -> dict[int, object]:
    value = fields.get(number)
    if not isinstance(value, dict):
        raise UnreadablePage(f"field {number} missing")
    return value
