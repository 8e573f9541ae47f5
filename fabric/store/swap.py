"""Read entity images through one open connection whose file is swapped, not re-opened.

``deserialize`` makes SQLite attach a new database: it drops the parsed schema and every
prepared statement, and the next query parses the schema and prepares itself again. For an
image read once that was most of the cost of a read (benchmarks/README.md, "Swapped file").
Here a read-only connection stays open on a file of a VFS of our own, whose bytes are
whichever image was loaded last, so SQLite keeps its parsed schema and statements from one
image to the next. Two header fields make that safe:

- the change counter (bytes 24-27) reads as a number new at every load, so SQLite drops the
  pages it cached from the last image at its next read transaction;
- the schema cookie (bytes 40-43) reads as a number that changes whenever the image's schema
  rows (type, name, table, root page and SQL of every ``sqlite_schema`` row, read at each
  load) differ from the last image's, along with the change counter again (page 1 was just
  cached with the old cookie); SQLite then parses the schema again and prepares its
  statements anew. Images of one schema share their parsed schema; no image is read with
  another's.

The connection is read-only and the VFS opens no journal or WAL file, so nothing is ever
written. Use one instance per thread.
"""

from __future__ import annotations

import itertools
import os
import struct
from typing import Any

import apsw

from fabric.store.sqlite import watch_time

__all__ = ["ImageSwap"]

_names = itertools.count()
_WORD = struct.Struct(">I")
_SCHEMA = "SELECT type, name, tbl_name, rootpage, sql FROM sqlite_schema"


class _Image:
    """The main database file: the loaded image's bytes, two header fields rewritten."""

    def __init__(self, swap: ImageSwap) -> None:
        self.swap = swap

    def xRead(self, amount: int, offset: int) -> bytes:
        data = self.swap.image[offset : offset + amount]
        if offset < 44 and offset + amount > 24:
            header = bytearray(self.swap.image[:100].ljust(100, b"\0"))
            header[24:28] = _WORD.pack(self.swap.load_number)
            header[40:44] = _WORD.pack(self.swap.cookie)
            end = min(offset + amount, 100)
            data = bytes(header[offset:end]) + data[end - offset :]
        # Fewer bytes than asked (past the end): APSW fills in zeros and reports a short read.
        return data

    def xFileSize(self) -> int:
        return len(self.swap.image)

    def xLock(self, level: int) -> None:
        return None

    def xUnlock(self, level: int) -> None:
        return None

    def xCheckReservedLock(self) -> bool:
        return False

    def xFileControl(self, op: int, pointer: int) -> bool:
        return False

    def xSectorSize(self) -> int:
        return 4096

    def xDeviceCharacteristics(self) -> int:
        return 0

    def xSync(self, flags: int) -> None:
        return None

    def xClose(self) -> None:
        return None

    def xWrite(self, data: bytes, offset: int) -> None:
        raise apsw.ReadOnlyError("entity images are read-only here")

    def xTruncate(self, size: int) -> None:
        raise apsw.ReadOnlyError("entity images are read-only here")


class _Vfs(apsw.VFS):
    """Opens the image as the main database; temporary files (a big sort) from the default
    VFS; no journal or WAL file exists."""

    def __init__(self, swap: ImageSwap, name: str) -> None:
        self.swap = swap
        super().__init__(name, "")

    def xOpen(self, name: Any, flags: list[int]) -> Any:
        if flags[0] & apsw.SQLITE_OPEN_MAIN_DB:
            return _Image(self.swap)
        if flags[0] & (apsw.SQLITE_OPEN_TEMP_DB | apsw.SQLITE_OPEN_TRANSIENT_DB):
            return super().xOpen(name, flags)
        raise apsw.CantOpenError("entity images have no journal")

    def xAccess(self, pathname: str, flags: int) -> bool:
        return False

    def xDelete(self, filename: str, syncdir: bool) -> None:
        return None

    def xFullPathname(self, name: str) -> str:
        return name


class ImageSwap:
    """One read-only connection over whichever image was loaded last."""

    def __init__(self) -> None:
        self.image = b""
        self.load_number = 0
        self.cookie = 1
        self._schema: list[Any] | None = None
        self._name = f"fabric-image-{os.getpid()}-{next(_names)}"
        self._vfs = _Vfs(self, self._name)
        self.connection = apsw.Connection("image", vfs=self._name, flags=apsw.SQLITE_OPEN_READONLY)
        watch_time(self.connection)

    def load(self, image: bytes) -> apsw.Connection:
        """Make ``image`` the connection's database and return the connection."""
        self.image = image
        self.load_number = (self.load_number + 1) & 0xFFFFFFFF
        # Read with the last schema's cookie: sqlite_schema is always page 1.
        schema = self.connection.execute(_SCHEMA).fetchall()
        if schema != self._schema:
            self._schema = schema
            self.cookie = (self.cookie + 1) & 0xFFFFFFFF or 1
            # Page 1 is cached with the old cookie: a new change counter drops it, so the
            # next statement reads the new cookie and parses the schema again.
            self.load_number = (self.load_number + 1) & 0xFFFFFFFF
        return self.connection

    def close(self) -> None:
        """Close the connection and unregister the VFS."""
        self.connection.close()
        self._vfs.unregister()
