"""Benchmark the HTTP API as a server, driven by wrk from a separate process over loopback.

Usage: ``python benchmarks/http_bench.py --project DIR [--servers granian,uvicorn]
[--workers 2] [--connections 32] [--seconds 10]``

DIR is a synced demo project (`fabric demo --no-serve --dir DIR --customers 100000`). For each
server, `fabric serve --workers W` runs on a free port and wrk (``apt-get install -y wrk``;
`make bench-http` installs it) drives, for ``--seconds`` each:

  entity          GET /v1/entities/customer/{id}, ids drawn uniformly from every entity
  vector          GET /v1/features/customer_360/{id}, ids drawn uniformly
  entity_hot      one id, again and again (the read cache)
  batch100        POST /v1/features/customer_360 with 100 random ids (32 connections, and 1)
  bare            a Litestar route returning a constant JSON document of an entity's size,
                  served the same way: the framework's ceiling, measured in the same run

The project's online store is brought up to date first (`fabric materialize`, what every sync
ends with), and what that wrote is printed: vectors whose horizon passed since the last
sync, say. Each server gets two seconds of one hot id before the scenarios run (connections,
code paths and the page cache warm, as in a server that has been up).

Both servers run through :mod:`fabric.api.servers`, as `fabric serve` runs them (which
works around uvicorn issue #3149: with more than one worker, every keep-alive response
otherwise waited about 40 ms for a delayed ACK).

Targets (2 workers, 32 connections, wrk on the same 2 cores): entity and vector >= 4,000
requests/s with p99 <= 15 ms; entity_hot >= 0.5x bare; batch100 p99 <= 20 ms at 1
connection and >= 25,000 vectors/s at 32. Prints one JSON object per line; wrk's own
``--latency`` percentiles.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, log

from fabric.config.secrets import load_secrets
from fabric.entities import EntityService
from fabric.features.materialize import materialize
from fabric.project import Project

_BARE = """
from litestar import Litestar, get

DOCUMENT = {document!r}


@get("/bare", sync_to_thread=False)
def bare() -> dict:
    return DOCUMENT


app = Litestar([bare])
"""

_LUA_IDS = """
local ids = {{}}
for line in io.lines("{ids}") do ids[#ids + 1] = line end
local headers = {{["Authorization"] = "Bearer {key}", ["Content-Type"] = "application/json"}}
math.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16))
request = function()
{body}
end
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(command: list[str], port: int, probe: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    _stop(process)
    raise SystemExit(f"the server did not start: {' '.join(command)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _unit(value: str) -> float:
    """wrk's "1.23ms" / "450.00us" / "1.02s" in milliseconds."""
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def _wrk(url: str, script: Path | None, connections: int, seconds: int) -> dict[str, Any]:
    threads = str(min(2, connections))  # wrk needs a connection per thread
    command = ["wrk", "--latency", "-t", threads, "-c", str(connections), "-d", f"{seconds}s"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": rate,
        "p50_ms": _unit(latency["50"]),
        "p99_ms": _unit(latency["99"]),
        "non_2xx": int(errors[1]) if errors else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", type=Path, required=True, help="a synced demo project")
    parser.add_argument("--servers", default="granian,uvicorn")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (or make bench-http)")
    config = args.project / "fabric.yaml"
    with Project.open(config) as project:
        ids = sorted(project.catalog.entities("customer"))
        key = load_secrets(project.config).api_keys["analyst-demo"]
        started = time.perf_counter()
        done = materialize(
            EntityService(project), project.online, project.views(), workers=args.workers
        )
        emit(
            {
                "what": "online_store",
                "vectors_written": done.written,
                "documents_written": done.documents,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    scratch = Path(tempfile.mkdtemp(prefix="fabric-http-bench-"))
    (scratch / "ids.txt").write_text("\n".join(ids) + "\n")
    hot = ids[len(ids) // 2]
    scripts = {
        "entity": 'return wrk.format("GET", "/v1/entities/customer/" .. ids[math.random(#ids)], '
        "headers)",
        "vector": 'return wrk.format("GET", "/v1/features/customer_360/" .. ids[math.random(#ids)]'
        ", headers)",
        "entity_hot": f'return wrk.format("GET", "/v1/entities/customer/{hot}", headers)',
        "batch100": "local picked = {}\n"
        "for i = 1, 100 do picked[i] = '\"' .. ids[math.random(#ids)] .. '\"' end\n"
        'return wrk.format("POST", "/v1/features/customer_360", headers, '
        "'{\"ids\": [' .. table.concat(picked, ',') .. ']}')",
    }
    paths = {}
    for name, body in scripts.items():
        paths[name] = scratch / f"{name}.lua"
        paths[name].write_text(_LUA_IDS.format(ids=scratch / "ids.txt", key=key, body=body))
    fabric = [sys.executable, "-m", "fabric"]
    for server in args.servers.split(","):
        port = _free_port()
        log(f"{server}: fabric serve --workers {args.workers} on port {port}")
        process = _start(
            [
                *fabric,
                "serve",
                "-c",
                str(config),
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--server",
                server,
            ],
            port,
            "/ready",
        )
        base = f"http://127.0.0.1:{port}"
        try:
            sample = httpx.get(
                f"{base}/v1/entities/customer/{hot}", headers={"Authorization": f"Bearer {key}"}
            ).json()
            # Two seconds of one hot id first: connections, code paths and the page cache
            # warm, as in a server that has been up, without warming the uniform scenarios'
            # caches (their ids are drawn from all entities).
            _wrk(base, paths["entity_hot"], args.connections, 2)
            results: dict[str, dict[str, Any]] = {}
            for name in ("entity", "vector", "entity_hot", "batch100"):
                log(f"  {name}")
                results[name] = _wrk(base, paths[name], args.connections, args.seconds)
            log("  batch100 at 1 connection")
            results["batch100_1conn"] = _wrk(base, paths["batch100"], 1, args.seconds)
        finally:
            _stop(process)
        # The framework's ceiling: a constant document of the same size, the same server.
        (scratch / "bare.py").write_text(_BARE.format(document=sample))
        bare_port = _free_port()
        # Served the way `fabric serve` serves (fabric.api.servers), so the two compare.
        bare_command = [
            sys.executable,
            "-c",
            f"from fabric.api.servers import run_{server} as run; "
            f"run('bare:app', '127.0.0.1', {bare_port}, {args.workers}, factory=False)",
        ]
        os.environ["PYTHONPATH"] = str(scratch)
        bare = _start(bare_command, bare_port, "/bare")
        try:
            _wrk(f"http://127.0.0.1:{bare_port}/bare", None, args.connections, 2)
            log("  bare")
            results["bare"] = _wrk(
                f"http://127.0.0.1:{bare_port}/bare", None, args.connections, args.seconds
            )
        finally:
            _stop(bare)
        for name, figures in results.items():
            emit(
                {
                    "what": "http",
                    "server": server,
                    "scenario": name,
                    "workers": args.workers,
                    "connections": 1 if name == "batch100_1conn" else args.connections,
                    **figures,
                }
            )
        emit(
            {
                "what": "http_summary",
                "server": server,
                "entity_rps": results["entity"]["requests_per_s"],
                "entity_p99_ms": results["entity"]["p99_ms"],
                "vector_rps": results["vector"]["requests_per_s"],
                "vector_p99_ms": results["vector"]["p99_ms"],
                "hot_over_bare": results["entity_hot"]["requests_per_s"]
                / results["bare"]["requests_per_s"],
                "batch100_vectors_per_s": 100 * results["batch100"]["requests_per_s"],
                "batch100_1conn_p99_ms": results["batch100_1conn"]["p99_ms"],
                "targets": {
                    "entity_and_vector_rps": 4000,
                    "entity_and_vector_p99_ms": 15,
                    "hot_over_bare": 0.5,
                    "batch100_vectors_per_s": 25000,
                    "batch100_1conn_p99_ms": 20,
                },
            }
        )
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
