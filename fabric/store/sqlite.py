"""The one place fabric opens SQLite databases.

Every connection is opened the same way so behaviour does not depend on who opened it:
apsw's recommended best practice (WAL, foreign keys, busy timeout, no double-quoted strings),
an ``application_id`` that marks files as fabric's, and ``user_version`` for schema steps.
Identifiers are only ever quoted through :func:`quote_ident`; values are always bound.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import apsw
import apsw.bestpractice

__all__ = [
    "APPLICATION_ID",
    "ThreadConnections",
    "apsw",
    "one_row",
    "open_database",
    "open_memory",
    "quote_ident",
    "time_limit",
    "watch_time",
]

#: 'fabr' in ASCII: marks every SQLite file fabric writes, so a wrong file is caught early.
APPLICATION_ID = 0x66616272

# Everything apsw recommends except forwarding SQLite's own log to the root logger (our code
# turns every SQLite error into a message of its own, and the duplicate log lines only
# confuse) and ``PRAGMA optimize`` on every open: it may need the write lock, so opening the
# catalog (a server starting) while a full sync writes it failed with "database is locked".
# The catalog is optimized when a sync run ends instead (Catalog.finish_run).
apsw.bestpractice.apply(
    tuple(
        f
        for f in apsw.bestpractice.recommended
        if f not in (apsw.bestpractice.library_logging, apsw.bestpractice.connection_optimize)
    )
)


#: SQLite virtual machine steps between two looks at the clock (a few microseconds of work).
_STEPS = 1000
_deadline = threading.local()


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Stop SQLite work of this thread, on connections :func:`watch_time` watches, once it
    runs past ``seconds`` from now (None or 0: no limit): the statement raises
    ``apsw.InterruptError``."""
    previous = getattr(_deadline, "at", None)
    _deadline.at = time.monotonic() + seconds if seconds else None
    try:
        yield
    finally:
        _deadline.at = previous


def _over_time() -> bool:
    at: float | None = getattr(_deadline, "at", None)
    return at is not None and time.monotonic() > at


def watch_time(conn: apsw.Connection) -> None:
    """Let :func:`time_limit` stop this connection's statements."""
    conn.set_progress_handler(_over_time, _STEPS)


class _Closable(Protocol):
    def close(self) -> None: ...


_C = TypeVar("_C", bound=_Closable)


class ThreadConnections(Generic[_C]):
    """Each thread's connections to a store's files (or server), by name, and closing every
    thread's.

    apsw connections are used by the thread that opened them. The list of all of them has a
    lock of its own: a thread may open a connection while it holds its store's write lock.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._opened: list[_C] = []  # every thread's, so close() reaches them
        self._lock = threading.Lock()

    def mine(self) -> dict[Any, _C]:
        """This thread's connections, by name."""
        conns: dict[Any, _C] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        return conns

    def open(self, name: Any, opener: Callable[..., _C], *args: Any) -> _C:
        """This thread's connection ``name``, opened by ``opener(*args)`` the first time."""
        conns = self.mine()
        conn = conns.get(name)
        if conn is None:
            conn = conns[name] = opener(*args)
            with self._lock:
                self._opened.append(conn)
        return conn

    def close(self) -> None:
        """Close every thread's connections."""
        with self._lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()
        self._local = threading.local()


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (table or column name) for SQLite."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def open_database(path: Path, *, readonly: bool = False, vfs: str | None = None) -> apsw.Connection:
    """Open (or create) a fabric SQLite file with the project's connection settings.

    ``vfs``: a registered SQLite VFS to open it through (the default one otherwise).
    """
    flags = (
        apsw.SQLITE_OPEN_READONLY
        if readonly
        else (apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
    )
    if not readonly and not path.exists():
        # Entity data is personal data: the file (and the -wal/-shm files, which SQLite gives
        # the same mode) is readable by its owner only.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    conn = (
        apsw.Connection(str(path), flags=flags, vfs=vfs)
        if vfs
        else apsw.Connection(str(path), flags=flags)
    )
    if not readonly:
        conn.pragma("synchronous", "NORMAL")  # durable at checkpoints under WAL; much faster
        app_id = conn.pragma("application_id")
        if app_id == 0:
            conn.pragma("application_id", APPLICATION_ID)
        elif app_id != APPLICATION_ID:
            conn.close()
            raise apsw.NotADBError(f"{path} is a SQLite file but not one of fabric's")
    return conn


def one_row(conn: apsw.Connection, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    """Run a query that always returns exactly one row (aggregates) and return that row."""
    row = conn.execute(sql, params).fetchone()
    if row is None:  # pragma: no cover - aggregates always answer
        raise apsw.SQLError(f"query returned no row: {sql}")
    return tuple(row)


def open_memory() -> apsw.Connection:
    """Open an empty in-memory database (micro-DB builds and reads)."""
    return apsw.Connection(":memory:")
