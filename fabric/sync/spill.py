"""Spill a run's rows to partition files, sealed, so a full sync holds one partition at a time.

A full sync must group every row by its entity, and sources hand rows out table by table.
Rather than keep every table in memory, rows go to one file per partition of entities as
they stream in, and are read back one partition at a time. The files hold source data, so
each chunk is compressed and sealed with AES-GCM under a key that exists only in this run's
memory: a crash leaves nothing readable behind, in a private temporary directory.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zstandard

from fabric.crypto import Sealer

__all__ = ["Spill", "read_stream"]

_CHUNK_RECORDS = 2000
_LENGTH = struct.Struct(">I")


class Spill:
    """Partition files of sealed, compressed chunks of records (any picklable tuples)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="fabric-sync-", dir=directory))
        self.key = os.urandom(32)
        self._sealer = Sealer(self.key)
        self._buffers: dict[str, list[Any]] = {}
        self._chunks: dict[str, int] = {}
        self._compress = zstandard.ZstdCompressor(level=1)

    def path(self, name: str) -> Path:
        """The file of one stream (a partition number or a name)."""
        return self.directory / f"{name}.bin"

    def contents(self, name: str) -> bytes:
        """The sealed bytes of one stream, for a task that runs where this disk is not."""
        path = self.path(name)
        return path.read_bytes() if path.exists() else b""

    def add(self, name: str, record: Any) -> None:
        """Append a record to the stream ``name``."""
        buffer = self._buffers.setdefault(name, [])
        buffer.append(record)
        if len(buffer) >= _CHUNK_RECORDS:
            self._flush(name)

    def _flush(self, name: str) -> None:
        buffer = self._buffers.get(name)
        if not buffer:
            return
        number = self._chunks.get(name, 0)
        self._chunks[name] = number + 1
        data = self._compress.compress(pickle.dumps(buffer, protocol=pickle.HIGHEST_PROTOCOL))
        sealed = self._sealer.seal(data, f"{name}\x00{number}".encode())
        with self.path(name).open("ab") as handle:
            handle.write(_LENGTH.pack(len(sealed)) + sealed)
        buffer.clear()

    def finish(self) -> None:
        """Write every buffered record out."""
        for name in list(self._buffers):
            self._flush(name)

    def remove(self) -> None:
        """Delete the files."""
        shutil.rmtree(self.directory, ignore_errors=True)


def read_stream(where: Path | bytes, key: bytes, name: str) -> Iterator[list[Any]]:
    """Yield the chunks of one stream (its file, or its sealed bytes), in the order they were
    written."""
    if isinstance(where, Path) and not where.exists():
        return
    sealer = Sealer(key)
    decompress = zstandard.ZstdDecompressor()
    with where.open("rb") if isinstance(where, Path) else io.BytesIO(where) as handle:
        number = 0
        while header := handle.read(_LENGTH.size):
            (size,) = _LENGTH.unpack(header)
            sealed = handle.read(size)
            data = sealer.open(sealed, f"{name}\x00{number}".encode(), what="a sync spill chunk")
            # Our own records, sealed with a key only this run knows: safe to unpickle.
            yield pickle.loads(decompress.decompress(data))
            number += 1
