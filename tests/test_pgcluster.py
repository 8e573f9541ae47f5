"""The private PostgreSQL cluster from ``pgcluster`` works and stays private."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, text

if TYPE_CHECKING:
    from pgcluster import PostgresCluster

pytestmark = pytest.mark.postgres


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket in LISTEN state on ``port``, from /proc/net/tcp{,6}."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, _, port_hex = local.partition(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A = TCP_LISTEN
                found.add(address)
    return found


def _running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie.

    The postmaster is daemonized, so once it exits it is a zombie until init reaps it (which
    in containers may take a while, or never happen); that still counts as stopped.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to "does the pid exist"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def test_version_and_fresh_database(postgres: PostgresCluster) -> None:
    engine = create_engine(postgres.url)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("select version()")).scalar_one()
            assert version.startswith("PostgreSQL ")
            assert conn.execute(text("select current_database()")).scalar_one() == "fabric_test"
    finally:
        engine.dispose()

    url = postgres.create_database("pgcluster_smoke")
    assert url == f"postgresql+psycopg://fabric@127.0.0.1:{postgres.port}/pgcluster_smoke"
    fresh = create_engine(url)
    try:
        with fresh.begin() as conn:
            conn.execute(text("create table thing (id serial primary key, name text not null)"))
            conn.execute(text("insert into thing (name) values ('a'), ('b')"))
        with fresh.connect() as conn:
            assert conn.execute(text("select count(*) from thing")).scalar_one() == 2
    finally:
        fresh.dispose()

    # Unnamed databases get unique names, so isolated tests never see each other's tables.
    assert postgres.create_database() != postgres.create_database()


def test_listens_on_loopback_only(postgres: PostgresCluster) -> None:
    assert postgres.port != 5432  # never the port of a Debian system cluster
    engine = create_engine(postgres.url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("show listen_addresses")).scalar_one() == "127.0.0.1"
            assert str(conn.execute(text("select inet_server_addr()")).scalar_one()) == "127.0.0.1"
            socket_dirs = conn.execute(text("show unix_socket_directories")).scalar_one()
            assert socket_dirs == str(postgres.socket_dir)
    finally:
        engine.dispose()

    # 127.0.0.2 is loopback too on Linux, but a socket bound to 127.0.0.1 does not accept there.
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.settimeout(5)
        probe.connect(("127.0.0.2", postgres.port))

    if Path("/proc/net/tcp").exists():
        assert _listening_addresses(postgres.port) == {"0100007F"}  # 127.0.0.1, little-endian


def test_standalone_cluster_cleans_up(postgres: PostgresCluster) -> None:
    # Depends on the fixture only for its skip/fail-if-not-installed behaviour.
    from pgcluster import PostgresCluster  # already imported as a plugin by now

    with PostgresCluster(postgres.bindir) as cluster:
        assert cluster.port != postgres.port
        pid = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
        base_dir = cluster.base_dir
        engine = create_engine(cluster.url)
        with engine.connect() as conn:
            assert conn.execute(text("select 1")).scalar_one() == 1
        engine.dispose()
    assert not base_dir.exists()
    assert not _running(pid)
    cluster.stop()  # idempotent
