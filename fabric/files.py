"""Files that hold entity data, written readable by their owner only.

Exports, their manifests, resolution results, suggested policies (their evidence quotes
sampled values) and the key file hold what masking protects elsewhere: other local users must
not read them, not even while they are being written. Files are created 0600 (``mkstemp`` is
exclusive and owner-only from the start: no chmod after the data is in) under a temporary
name beside their destination and renamed into place when complete, so a reader never sees
half a file; directories fabric creates for them are 0700.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["open_private", "private_dir", "private_temp", "write_private"]


def private_dir(path: Path) -> None:
    """Make the directory ``path`` and its missing parents, readable by their owner only
    (0700). Directories that exist are left as they are: they may be anyone's."""
    missing = []
    at = path
    while not at.exists() and at != at.parent:
        missing.append(at)
        at = at.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)


def private_temp(path: Path) -> tuple[int, Path]:
    """A new file beside ``path`` to write it under (its directory made with
    :func:`private_dir`): an open descriptor and its name, 0600 and exclusive."""
    private_dir(path.parent)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    return fd, Path(name)


def write_private(path: Path, data: bytes | str, *, sync: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically, readable by its owner only (``sync``: on
    disk before the rename, for files that must survive a crash whole, such as keys)."""
    fd, tmp = private_temp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def open_private(path: Path, *, newline: str | None = None) -> Iterator[TextIO]:
    """A text file to write ``path`` through (UTF-8), readable by its owner only, put in
    place when the block ends without an error (and never, half written, when it fails)."""
    fd, tmp = private_temp(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as handle:
            yield handle
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
