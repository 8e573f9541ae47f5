"""A private, throw-away PostgreSQL server for the test suite.

Why this exists
---------------
The tests need a *real* PostgreSQL (SQLite or mocks do not exercise the dialect, the locking or
the type behaviour we care about), but they must not depend on, or touch, whatever server the
machine happens to run. So each test session builds its own cluster from the server binaries:

* in a fresh temporary directory (data, Unix socket and log all live there),
* on a free loopback TCP port, listening on ``127.0.0.1`` only,
* with its Unix socket in that temporary directory, so it can never collide with a Debian system
  cluster (``/var/run/postgresql``, port 5432) that ``apt-get install postgresql`` may have
  started,
* with durability switched off (``fsync``, ``synchronous_commit``, ``full_page_writes``): the
  data is thrown away anyway, and this makes DDL-heavy tests much faster,
* with ``trust`` authentication for the superuser ``fabric``: nothing outside the machine can
  reach it and the password dance would only add noise.

CI (and ``make test``) runs as root, and ``initdb``/``postgres`` refuse to run as root. When we
are root, the binaries are therefore run as an unprivileged system user (``postgres``, which
Debian's package creates, else ``nobody``) through ``runuser`` (or ``setpriv``), and the
temporary directory is handed to that user. Its parent directories must be traversable by that
user, which a 0700 pytest ``tmp_path`` is not, hence the directory is made directly in a
world-traversable temp dir (``/tmp`` if need be).

The binaries are found under ``/usr/lib/postgresql/<version>/bin`` (Debian's layout, highest
version wins) or on ``PATH``. If there are none, :class:`PostgresNotFoundError` says to run
``make test``, which installs PostgreSQL through ``scripts/ensure-postgres.sh``.

Use it through the session-scoped :func:`postgres` pytest fixture at the bottom of this module,
or directly as a context manager::

    with PostgresCluster() as pg:
        engine = sqlalchemy.create_engine(pg.url)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import psycopg
import pytest
from psycopg import sql

__all__ = [
    "DEFAULT_DATABASE",
    "SUPERUSER",
    "PostgresCluster",
    "PostgresNotFoundError",
    "find_bindir",
    "postgres",
]

#: Superuser created by ``initdb`` (``trust`` auth, so no password).
SUPERUSER = "fabric"
#: Database created at start-up; :attr:`PostgresCluster.url` points at it.
DEFAULT_DATABASE = "fabric_test"

_DEBIAN_LIB = Path("/usr/lib/postgresql")
_INSTALL_HINT = (
    "run `make test`, which installs PostgreSQL via scripts/ensure-postgres.sh "
    "(or: apt-get install -y postgresql)"
)
# Unprivileged users to run the server as when we are root, in order of preference.
_UNPRIVILEGED_USERS = ("postgres", "nobody")
_DB_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_START_ATTEMPTS = 3


class PostgresNotFoundError(RuntimeError):
    """The PostgreSQL server binaries (``initdb``, ``pg_ctl``) are not installed.

    A distinct type so the fixture can tell "not installed" (skip, or fail on CI) from
    "installed but broken" (always an error).
    """


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key for ``/usr/lib/postgresql/<version>``: numeric, so that 15 > 9.6."""
    return tuple(int(part) for part in re.findall(r"\d+", path.name)) or (-1,)


def find_bindir() -> Path:
    """Return the directory holding ``initdb`` and ``pg_ctl``.

    Debian installs the server binaries under ``/usr/lib/postgresql/<version>/bin`` and does not
    put them on ``PATH``, so that is searched first (highest version wins); other systems
    (Homebrew, Postgres.app, a source build) usually do have them on ``PATH``.
    """
    if _DEBIAN_LIB.is_dir():
        for version_dir in sorted(_DEBIAN_LIB.iterdir(), key=_version_key, reverse=True):
            bindir = version_dir / "bin"
            if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
                return bindir
    initdb = shutil.which("initdb")
    if initdb is not None:
        bindir = Path(initdb).resolve().parent
        if os.access(bindir / "pg_ctl", os.X_OK):
            return bindir
    raise PostgresNotFoundError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under "
        f"{_DEBIAN_LIB}/*/bin or on PATH: {_INSTALL_HINT}."
    )


def _free_port() -> int:
    """Ask the kernel for a free loopback port.

    There is a small window between closing the probe socket and the server binding the port;
    :meth:`PostgresCluster.start` retries with a new port if it loses that race.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _traversable_by_anyone(path: Path) -> bool:
    """True if every directory from ``/`` down to ``path`` has the "others may search" bit."""
    path = path.resolve()
    for directory in (path, *path.parents):
        try:
            if not directory.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _clean_env() -> dict[str, str]:
    """The environment for the server binaries, minus anything that could redirect them.

    ``PGDATA``, ``PGPORT``, ``PGHOST``... from the developer's shell would otherwise leak into
    ``initdb``/``pg_ctl``; a C locale keeps ``initdb`` from complaining about unknown locales.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


class PostgresCluster:
    """A private PostgreSQL cluster in a temporary directory (see the module docstring).

    ``PostgresCluster()`` finds the binaries, runs ``initdb``, starts the server and creates
    :data:`DEFAULT_DATABASE`; :meth:`stop` (or leaving the ``with`` block) shuts it down and
    deletes every file. An ``atexit`` hook stops it too, in case nobody else does.

    Raises :class:`PostgresNotFoundError` if the binaries are missing and ``RuntimeError`` if
    the cluster cannot be started (the message includes the server log).
    """

    host = "127.0.0.1"
    user = SUPERUSER

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir if bindir is not None else find_bindir()
        self._owner_pid = os.getpid()
        self._stopped = False
        self._started = False
        self._run_as = self._pick_run_as()

        parent = Path(tempfile.gettempdir())
        if self._run_as is not None and not _traversable_by_anyone(parent):
            # e.g. TMPDIR pointing into a 0700 home: the server user could not reach it.
            parent = Path("/tmp")
        self.base_dir = Path(tempfile.mkdtemp(prefix="fabric-pg-", dir=parent))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_file = self.base_dir / "server.log"
        self.port = 0
        atexit.register(self.stop)
        try:
            self.socket_dir.mkdir(mode=0o700)
            self.log_file.touch(mode=0o600)
            if self._run_as is not None:
                uid, gid = self._run_as[1], self._run_as[2]
                for path in (self.base_dir, self.socket_dir, self.log_file):
                    os.chown(path, uid, gid)
            self._initdb()
            self._start()
            self.create_database(DEFAULT_DATABASE)
        except BaseException:
            self.stop()
            raise

    # -- public API ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL of :data:`DEFAULT_DATABASE` (psycopg 3 driver)."""
        return self.url_for(DEFAULT_DATABASE)

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of ``database`` on this cluster."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def dsn(self, database: str = DEFAULT_DATABASE) -> str:
        """libpq connection string, for plain ``psycopg.connect``."""
        return f"host={self.host} port={self.port} user={self.user} dbname={database}"

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh, empty database and return its SQLAlchemy URL.

        Meant for tests that want isolation from each other; without ``name`` a unique one is
        made up. Names are restricted to plain identifiers so they need no quoting in a URL.
        """
        if name is None:
            name = f"t_{uuid.uuid4().hex}"
        if not _DB_NAME_RE.fullmatch(name):
            raise ValueError(f"not a plain database identifier (max 63 chars): {name!r}")
        # CREATE DATABASE cannot run inside a transaction, hence autocommit.
        with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete the temporary directory. Idempotent."""
        if self._stopped or os.getpid() != self._owner_pid:
            # Already done, or we are a forked child: the cluster belongs to the parent.
            return
        self._stopped = True
        atexit.unregister(self.stop)
        try:
            if self._started:
                self._stop_server()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"port={self.port}"
        return f"<PostgresCluster {self.base_dir} {state}>"

    # -- internals -----------------------------------------------------------------------------

    @staticmethod
    def _pick_run_as() -> tuple[str, int, int] | None:
        """(user, uid, gid) to run the binaries as, or None to run them as ourselves.

        ``initdb`` and ``postgres`` refuse to run as root, so as root we switch to ``postgres``
        (made by Debian's package) or, failing that, ``nobody``.
        """
        if os.geteuid() != 0:
            return None
        for name in _UNPRIVILEGED_USERS:
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return entry.pw_name, entry.pw_uid, entry.pw_gid
        raise RuntimeError(
            "running as root but no unprivileged user to run PostgreSQL as "
            f"(tried {', '.join(_UNPRIVILEGED_USERS)})"
        )

    def _command(self, tool: str, *args: str) -> list[str]:
        """Build the argv for a server binary, wrapped in ``runuser``/``setpriv`` as root."""
        argv = [str(self.bindir / tool), *args]
        if self._run_as is None:
            return argv
        user, uid, gid = self._run_as
        runuser = shutil.which("runuser")
        if runuser is not None:
            return [runuser, "-u", user, "--", *argv]
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]
        raise RuntimeError("running as root but neither runuser nor setpriv is available")

    def _run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a server binary; the working directory is ours so the server user can enter it."""
        return subprocess.run(
            self._command(tool, *args),
            cwd=self.base_dir,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _fail(self, what: str, result: subprocess.CompletedProcess[str]) -> RuntimeError:
        """A RuntimeError carrying the command output and the tail of the server log."""
        try:
            log = self.log_file.read_text(errors="replace")[-4000:]
        except OSError:
            log = ""
        return RuntimeError(
            f"{what} failed (exit {result.returncode}): {shlex.join(result.args)}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}\n"
            f"--- server log ({self.log_file}) ---\n{log}"
        )

    def _initdb(self) -> None:
        result = self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",  # the cluster is disposable; skipping fsync saves seconds
        )
        if result.returncode != 0:
            raise self._fail("initdb", result)

    def stop_immediately(self) -> None:
        """Stop the server as a crash would (``pg_ctl stop -m immediate``: no checkpoint,
        connections cut), for fault tests; :meth:`start_again` brings it back."""
        args = ("-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "60", "stop")
        result = self._run("pg_ctl", *args, timeout=90)
        if result.returncode != 0:
            raise self._fail("pg_ctl stop -m immediate", result)

    def start_again(self) -> None:
        """Start the stopped server again on the same port (it recovers from its WAL)."""
        self._start(port=self.port)

    def _start(self, port: int | None = None) -> None:
        """Start the server on a free port (or ``port``), retrying if another process grabs
        the port first."""
        server_options = (
            "-h 127.0.0.1",
            f"-k {shlex.quote(str(self.socket_dir))}",  # pg_ctl hands -o to /bin/sh
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
        )
        for attempt in range(1, _START_ATTEMPTS + 1):
            self.port = port or _free_port()
            log_offset = self.log_file.stat().st_size
            options = " ".join((f"-p {self.port}", *server_options))
            result = self._run(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",  # the server's output must not hold our capture pipes open
                str(self.log_file),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            )
            if result.returncode == 0:
                self._started = True
                return
            # pg_ctl may have given up waiting while the postmaster lives on: make sure not.
            self._started = True
            self._stop_server()
            self._started = False
            with self.log_file.open("rb") as log_stream:
                log_stream.seek(log_offset)
                log = log_stream.read().decode(errors="replace")
            if "Address already in use" not in log or attempt == _START_ATTEMPTS:
                raise self._fail("pg_ctl start", result)

    def _stop_server(self) -> None:
        """``pg_ctl stop -m fast``; ``-m immediate`` if that does not finish in time."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        args = ("-D", str(self.data_dir), "-w", "-t", "60", "stop")
        try:
            result = self._run("pg_ctl", "-m", "fast", *args, timeout=90)
        except subprocess.TimeoutExpired:
            result = None
        if result is None or result.returncode != 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._run("pg_ctl", "-m", "immediate", *args, timeout=90)


def _ci() -> bool:
    """True on CI: ``CI`` is set (GitHub, GitLab, ... set ``CI=true``) and not "0"/"false"."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One private PostgreSQL cluster for the whole test session, stopped at the end.

    If the server binaries are missing the tests that need it are skipped locally (with a hint
    that ``make test`` installs PostgreSQL) but *fail* on CI, where a silently skipped database
    suite would look like a green build.
    """
    try:
        bindir = find_bindir()
    except PostgresNotFoundError as exc:
        if _ci():
            pytest.fail(f"CI is set but PostgreSQL is not installed: {exc}", pytrace=False)
        pytest.skip(f"skipping PostgreSQL tests: {exc}")
    with PostgresCluster(bindir) as cluster:
        yield cluster
