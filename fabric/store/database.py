"""One connection to the SQL a store part keeps its tables in: SQLite (a file beside the
shards) or PostgreSQL (schema ``fabric``, shared by every node).

The catalog's and the online store's queries are written once, in the SQL both speak: ``?``
placeholders (turned into psycopg's ``%s`` here), upserts as ``INSERT … ON CONFLICT (key) DO
UPDATE`` (SQLite 3.24 and later take them), ``RETURNING``, ``IS NOT DISTINCT FROM``. What still
differs is an attribute or a method of the connection: a list of ids passed as one JSON
parameter (:attr:`~Database.ids`), the column that orders rows by insertion
(:attr:`~Database.insertion_order`), beginning a transaction that takes the write lock at
once (:meth:`~Database.begin`), how many rows a statement changed (:meth:`~Database.count`),
the fastest way to write many rows (:meth:`~Database.load`: ``COPY`` on PostgreSQL) and
SQLite's ``PRAGMA optimize``.

``with db:`` is a transaction; nested, a savepoint, so a write of one group of tables joins
a transaction another has open (a full sync's bulk rewrite), on both backends. On PostgreSQL
a process keeps a connection per thread (:class:`PostgresThreads`), so a transaction is its
thread's, as a sync (one thread) needs, and a server's threads do not queue on one
connection.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from fabric.errors import StoreError, StoreUnavailableError
from fabric.store.sqlite import ThreadConnections, apsw

__all__ = [
    "CONNECT_SECONDS",
    "GENERIC_PLANS",
    "SCHEMA",
    "Database",
    "PostgresDb",
    "PostgresThreads",
    "Rows",
    "SqliteDb",
    "connect_postgres",
    "describe_target",
    "driver_reason",
    "postgres_conninfo",
    "upsert_sql",
]

#: The PostgreSQL schema fabric's tables live in (blobs, catalog, online store).
SCHEMA = "fabric"
#: Seconds to wait for the server to accept a connection.
CONNECT_SECONDS = 5


def _batches(rows: Iterable[Sequence[Any]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    """``rows`` (a cursor) as lists of at most ``size`` tuples, read as they are handed on:
    a copy of a table of millions of rows never holds more than a batch of them."""
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(tuple(row))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def postgres_conninfo(url: str) -> str:
    """A libpq connection string from ``url`` (``postgresql://`` or SQLAlchemy's
    ``postgresql+psycopg://``).

    Raises:
        StoreError: not a PostgreSQL URL.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise StoreError(
            "the store URL must be postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE "
            f"(it starts with {scheme[:20]!r})"
        )
    return f"postgresql://{rest}"


def describe_target(conninfo: str) -> str:
    """Where ``conninfo`` points, for messages: host, port and database, no credentials."""
    import psycopg

    try:
        parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "the configured PostgreSQL server"
    host = parts.get("host") or "localhost"
    return f"postgresql://{host}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"


def driver_reason(exc: BaseException) -> str:
    """The first line of a driver error: libpq's messages name hosts, never passwords."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class Rows(Protocol):
    """What a query answers: rows to iterate, or to fetch."""

    def __iter__(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Database(Protocol):
    """A store part's connection, whichever the backend."""

    #: A subquery of the ids in one JSON array parameter (``… IN {ids}``).
    ids: str
    #: The column that orders a table's rows as they were inserted.
    insertion_order: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; how many rows it changed."""

    def stream(self, sql: str, size: int) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of a query in lists of at most ``size``, read from the database as they
        are taken (a table of millions of rows is never held whole, here or in the driver).
        The connection runs nothing else until the last is taken."""

    def load(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str],
        rows: Iterable[Sequence[Any]],
    ) -> None:
        """Write many whole rows of ``table`` (in a transaction the caller has open), a
        later row replacing an earlier one with the same ``key``: the fastest way the
        backend has (SQLite: one prepared upsert; PostgreSQL: ``COPY``)."""

    def stage(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str],
        rows: Iterable[Sequence[Any]],
    ) -> None:
        """Write rows of ``table`` as :meth:`load` does, in batches over a long
        transaction: they are in the table once :meth:`flush` has run (SQLite: at once)."""

    def flush(
        self, table: str, columns: Sequence[str], key: Sequence[str], *, emptied: bool = False
    ) -> None:
        """Put the rows :meth:`stage` wrote into ``table``; ``emptied``: the transaction
        deleted every row they could meet (a rewrite), so none is replaced."""

    def begin(self) -> None:
        """Start a transaction that holds the write lock until :meth:`commit`."""

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def optimize(self) -> None:
        """Let the database refresh its planner statistics (after a run)."""

    def restart_numbering(self, table: str, column: str) -> None:
        """Let the next row of ``table`` get an id above every ``column`` there (after rows
        were written with their ids)."""

    def close(self) -> None: ...

    def __enter__(self) -> Database: ...

    def __exit__(self, kind: Any, error: Any, trace: Any) -> Any: ...


class SqliteDb:
    """A SQLite file through apsw (its ``with`` is a savepoint when nested)."""

    ids = "(SELECT value FROM json_each(?))"
    insertion_order = "rowid"

    def __init__(self, conn: apsw.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        rows: Rows = self._conn.execute(sql, params)
        return rows

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._conn.execute(sql, params)
        return int(self._conn.changes())

    def stream(self, sql: str, size: int) -> Iterator[list[tuple[Any, ...]]]:
        yield from _batches(self._conn.execute(sql), size)

    def load(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str],
        rows: Iterable[Sequence[Any]],
    ) -> None:
        self._conn.executemany(upsert_sql(table, columns, key), rows)

    def stage(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str],
        rows: Iterable[Sequence[Any]],
    ) -> None:
        # No staging table: a prepared statement per row is SQLite's fastest already.
        self.load(table, columns, key, rows)

    def flush(
        self, table: str, columns: Sequence[str], key: Sequence[str], *, emptied: bool = False
    ) -> None:
        """Nothing: :meth:`stage` wrote into the table."""

    def begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        self._conn.execute("ROLLBACK")

    def optimize(self) -> None:
        self._conn.pragma("optimize")

    def restart_numbering(self, table: str, column: str) -> None:
        """Nothing: SQLite numbers an INTEGER PRIMARY KEY from the largest there."""

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SqliteDb:
        self._conn.__enter__()
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> Any:
        return self._conn.__exit__(kind, error, trace)


# A ``?`` placeholder outside quotes (the catalog's SQL quotes only plain words).
_PLACEHOLDER = re.compile(r"\?")


class PostgresDb:
    """Tables on PostgreSQL (schema ``fabric``), through one psycopg connection in autocommit
    mode: ``with db:`` and :meth:`begin` open transactions explicitly.

    A connection the server dropped (a restart) is replaced at the next statement outside a
    transaction; the statement that met the drop raises :class:`StoreUnavailableError`.
    """

    ids = "(SELECT jsonb_array_elements_text(?::jsonb))"
    insertion_order = "seq"

    def __init__(self, conn: Any, target: str, reconnect: Callable[[], Any]) -> None:
        self._conn = conn
        #: where the connection goes, for messages (host, port, database)
        self.target = target
        self._reconnect = reconnect
        self._sql: dict[str, str] = {}
        self._transactions: list[Any] = []
        self._begun = False
        # One connection serves every thread of the process (as the SQLite one does): a
        # transaction is one thread's at a time.
        self._lock = threading.RLock()

    @property
    def raw(self) -> Any:
        """The psycopg connection, for the entity store to write its images within a
        transaction of this connection (:meth:`Catalog.apply_images`)."""
        return self._live()

    def _live(self) -> Any:
        """The connection, replaced first if the server dropped it (outside a transaction)."""
        conn = self._conn
        if (conn.broken or conn.closed) and not self._transactions and not self._begun:
            with contextlib.suppress(Exception):
                conn.close()
            self._conn = conn = self._reconnect()
        return conn

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        import psycopg

        try:
            yield
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(
                f"the store at {self.target} does not answer: {driver_reason(exc)}"
            ) from None

    def _translate(self, sql: str) -> str:
        found = self._sql.get(sql)
        if found is None:
            found = self._sql[sql] = _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))
        return found

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        with self._answering():
            rows: Rows = self._live().execute(self._translate(sql), params)
        return rows

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = list(rows)
        if batch:
            with self._answering(), self._live().cursor() as cursor:
                cursor.executemany(self._translate(sql), batch)

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._answering():
            return int(self._live().execute(self._translate(sql), params).rowcount)

    def stream(self, sql: str, size: int) -> Iterator[list[tuple[Any, ...]]]:
        # psycopg's stream fetches `size` rows a round trip (libpq's chunked mode), where a
        # plain cursor would hold the whole result in libpq's memory.
        with self._answering(), self._live().cursor() as cursor:
            yield from _batches(cursor.stream(self._translate(sql), size=size), size)

    def load(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str],
        rows: Iterable[Sequence[Any]],
    ) -> None:
        """:meth:`stage` then :meth:`flush`."""
        self.stage(table, columns, key, rows)
        self.flush(table, columns, key)

    def stage(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str],
        rows: Iterable[Sequence[Any]],
    ) -> None:
        """``COPY`` into a temporary table of the transaction: several times faster than a
        statement per row for the million rows a full sync rewrites."""
        conn = self._live()
        with self._answering():
            conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS load_{table} (LIKE {table}, "
                "_n bigint GENERATED ALWAYS AS IDENTITY) ON COMMIT DROP"
            )
            with (
                conn.cursor() as cursor,
                cursor.copy(f"COPY load_{table} ({', '.join(columns)}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)

    def flush(
        self, table: str, columns: Sequence[str], key: Sequence[str], *, emptied: bool = False
    ) -> None:
        """One ``INSERT … SELECT`` of the staged rows that keeps the last row of each key
        (a key repeated among them would stop a ``COPY`` into the table itself, and ``ON
        CONFLICT`` cannot touch one row twice in a statement), then the staging emptied.
        Into an ``emptied`` table without ``ON CONFLICT``: its speculative insertion, row
        by row, was half the time of a full sync's rewrite of a million rows (a row that
        does meet one still fails the statement, and the caller's transaction with it)."""
        names, keys = ", ".join(columns), ", ".join(key)
        rest = [c for c in columns if c not in key]
        update = (
            ""
            if emptied
            else " ON CONFLICT ({}) {}".format(
                keys,
                "DO NOTHING"
                if not rest
                else "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in rest),
            )
        )
        conn = self._live()
        with self._answering():
            exists = conn.execute("SELECT to_regclass(%s)", (f"pg_temp.load_{table}",)).fetchone()
            if exists is None or exists[0] is None:
                return  # nothing was staged
            conn.execute(
                f"INSERT INTO {table} ({names}) SELECT DISTINCT ON ({keys}) {names} "
                f"FROM load_{table} ORDER BY {keys}, _n DESC{update}"
            )
            conn.execute(f"TRUNCATE load_{table}")

    def begin(self) -> None:
        self._lock.acquire()
        try:
            with self._answering():
                self._live().execute("BEGIN")
        except BaseException:
            self._lock.release()
            raise
        self._begun = True

    def commit(self) -> None:
        self._end("COMMIT")

    def rollback(self) -> None:
        self._end("ROLLBACK")

    def _end(self, statement: str) -> None:
        try:
            with self._answering():
                self._conn.execute(statement)
        finally:
            self._begun = False
            self._lock.release()

    def optimize(self) -> None:
        """Nothing: PostgreSQL's autovacuum keeps statistics."""

    def restart_numbering(self, table: str, column: str) -> None:
        self.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
            f"coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)"
        )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> PostgresDb:
        self._lock.acquire()
        try:
            with self._answering():
                transaction = self._live().transaction()
                transaction.__enter__()
        except BaseException:
            self._lock.release()
            raise
        self._transactions.append(transaction)
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> Any:
        try:
            with self._answering():
                return self._transactions.pop().__exit__(kind, error, trace)
        finally:
            self._lock.release()


class PostgresThreads:
    """The :class:`Database` of a process on PostgreSQL: one :class:`PostgresDb` per thread,
    so a server's threads do not queue on one connection, and each thread's transactions
    are its own (a sync writes from one thread)."""

    ids = PostgresDb.ids
    insertion_order = PostgresDb.insertion_order

    def __init__(self, connect: Callable[[], PostgresDb], target: str) -> None:
        self._connect = connect
        #: where the connections go, for messages (host, port, database)
        self.target = target
        self._connections: ThreadConnections[PostgresDb] = ThreadConnections()

    @classmethod
    def first(cls, connect: Callable[[], PostgresDb]) -> tuple[PostgresThreads, PostgresDb]:
        """Connect once, now (a server that cannot be reached fails here), and keep that
        connection as the calling thread's: the threads, and that connection."""
        db = connect()
        threads = cls(connect, db.target)
        threads._connections.open("db", lambda: db)
        return threads, db

    def mine(self) -> PostgresDb:
        """This thread's connection (opened the first time)."""
        return self._connections.open("db", self._connect)

    @property
    def raw(self) -> Any:
        """This thread's psycopg connection (see :attr:`PostgresDb.raw`)."""
        return self.mine().raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        return self.mine().execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.mine().executemany(sql, rows)

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.mine().count(sql, params)

    def stream(self, sql: str, size: int) -> Iterator[list[tuple[Any, ...]]]:
        return self.mine().stream(sql, size)

    def load(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str],
        rows: Iterable[Sequence[Any]],
    ) -> None:
        self.mine().load(table, columns, key, rows)

    def stage(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str],
        rows: Iterable[Sequence[Any]],
    ) -> None:
        self.mine().stage(table, columns, key, rows)

    def flush(
        self, table: str, columns: Sequence[str], key: Sequence[str], *, emptied: bool = False
    ) -> None:
        self.mine().flush(table, columns, key, emptied=emptied)

    def begin(self) -> None:
        self.mine().begin()

    def commit(self) -> None:
        self.mine().commit()

    def rollback(self) -> None:
        self.mine().rollback()

    def optimize(self) -> None:
        """Nothing: PostgreSQL's autovacuum keeps statistics."""

    def restart_numbering(self, table: str, column: str) -> None:
        self.mine().restart_numbering(table, column)

    def close(self) -> None:
        self._connections.close()

    def __enter__(self) -> PostgresThreads:
        self.mine().__enter__()
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> Any:
        return self.mine().__exit__(kind, error, trace)


def upsert_sql(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """``INSERT`` of one whole row of ``table`` that replaces the row with its ``key``, in the
    SQL both backends speak."""
    marks = ", ".join("?" * len(columns))
    head = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
        f"ON CONFLICT ({', '.join(key)})"
    )
    rest = [c for c in columns if c not in key]
    if not rest:
        return f"{head} DO NOTHING"
    return f"{head} DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in rest)}"


#: The session setting of connections whose statements touch the partitioned images: a
#: custom plan of such a statement is planned again at every execution, partition pruning
#: included, which costs more than running it (a key lookup: about 0.3 ms of planning for
#: 0.05 ms of execution); a generic plan is made once per connection and prunes partitions
#: when it runs.
GENERIC_PLANS = "-c plan_cache_mode=force_generic_plan"


def connect_postgres(
    url: str, what: str, statement_timeout_ms: int | None = None, *, generic_plans: bool = False
) -> PostgresDb:
    """A connection to the PostgreSQL server at ``url``, its search path schema ``fabric``
    (it connects again, the same way, when the server dropped it); with ``generic_plans``,
    prepared statements keep one plan (:data:`GENERIC_PLANS`).

    Raises:
        StoreError: the server cannot be reached: ``cannot open {what} at`` host, port and
            database (never the password) and the driver's reason.
    """
    import psycopg

    conninfo = postgres_conninfo(url)
    options = f"-c search_path={SCHEMA}"
    if statement_timeout_ms is not None:
        options += f" -c statement_timeout={int(statement_timeout_ms)}"
    if generic_plans:
        options += f" {GENERIC_PLANS}"
    target = describe_target(conninfo)

    def connect() -> Any:
        try:
            return psycopg.connect(
                conninfo, autocommit=True, connect_timeout=CONNECT_SECONDS, options=options
            )
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"cannot open {what} at {target}: {driver_reason(exc)}"
            ) from None

    return PostgresDb(connect(), target, connect)
