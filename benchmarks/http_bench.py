"""Benchmark the HTTP API as a server, driven by wrk from a separate process over loopback.

Usage: ``python benchmarks/http_bench.py --project DIR [--servers granian,uvicorn]
[--workers 2] [--connections 32] [--seconds 5] [--rounds 3] [--access-log]``

DIR is a synced demo project (`fabric demo --no-serve --dir DIR --customers 100000`). For each
server, `fabric serve --workers W` runs on a free port, with a bare app beside it, and wrk
(``apt-get install -y wrk``; `make bench-http` installs it) drives, ``--seconds`` each:

  entity          GET /v1/entities/customer/{id}, ids drawn uniformly from every entity
  vector          GET /v1/features/customer_360/{id}, ids drawn uniformly
  entity_hot      one id, again and again (the read cache)
  bare            a Litestar route returning a constant JSON document of an entity's size,
                  served the same way: the framework's ceiling
  batch100        POST /v1/features/customer_360 with 100 random ids (32 connections, and 1)

This machine is shared and its speed moves by a third from one minute to the next, so every
scenario runs ``--rounds`` times, turn about, and the summary gives the median of the rounds;
hot over bare is the median of each round's ratio, the two run back to back (in alternating
order) as the same constant request with the same header, without a wrk script. The server
runs without its access log unless ``--access-log`` (Feast's server, which issue 7 compares
with, was measured that way).

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
import statistics
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
from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.services.materialize import materialize

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


def _start(
    command: list[str], port: int, probe: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
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


def _wrk(
    url: str, script: Path | None, connections: int, seconds: int, header: str | None = None
) -> dict[str, Any]:
    threads = str(min(2, connections))  # wrk needs a connection per thread
    command = ["wrk", "--latency", "-t", threads, "-c", str(connections), "-d", f"{seconds}s"]
    if script is not None:
        command += ["-s", str(script)]
    if header is not None:
        command += ["-H", header]
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


def _median(rounds: list[dict[str, dict[str, Any]]], scenario: str, figure: str) -> float:
    return float(statistics.median(r[scenario][figure] for r in rounds))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", type=Path, required=True, help="a synced demo project")
    parser.add_argument("--servers", default="granian,uvicorn")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=5, help="each scenario, each round")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="every scenario runs this many times, turn about; figures are the medians",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="serve with the access log on (off by default, as Feast's server was measured)",
    )
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
    auth = f"Authorization: Bearer {key}"
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
                # As Feast's server was measured for issue 7; the log's cost is measured apart.
                "--access-log" if args.access_log else "--no-access-log",
            ],
            port,
            "/ready",
        )
        base = f"http://127.0.0.1:{port}"
        bare: subprocess.Popen[bytes] | None = None
        try:
            sample = httpx.get(
                f"{base}/v1/entities/customer/{hot}", headers={"Authorization": f"Bearer {key}"}
            ).json()
            # The framework's ceiling: a constant document of the same size, served the way
            # `fabric serve` serves (fabric.api.servers), up beside fabric's so the two are
            # measured turn about, in the same minutes of this shared machine.
            (scratch / "bare.py").write_text(_BARE.format(document=sample))
            bare_port = _free_port()
            bare = _start(
                [
                    sys.executable,
                    "-c",
                    f"from fabric.api.servers import run_{server} as run; "
                    f"run('bare:app', '127.0.0.1', {bare_port}, {args.workers}, factory=False)",
                ],
                bare_port,
                "/bare",
                env={**os.environ, "PYTHONPATH": str(scratch)},
            )
            hot_url = f"{base}/v1/entities/customer/{hot}"
            bare_url = f"http://127.0.0.1:{bare_port}/bare"
            # Two seconds of one hot id first: connections, code paths and the page cache
            # warm, as in a server that has been up, without warming the uniform scenarios'
            # caches (their ids are drawn from all entities).
            _wrk(hot_url, None, args.connections, 2, header=auth)
            _wrk(bare_url, None, args.connections, 2, header=auth)
            rounds: list[dict[str, dict[str, Any]]] = []
            for turn in range(args.rounds):
                log(f"  round {turn + 1} of {args.rounds}")
                results: dict[str, dict[str, Any]] = {}
                for name in ("entity", "vector"):
                    results[name] = _wrk(base, paths[name], args.connections, args.seconds)
                # A hot id and the bare route are both one constant request, sent by wrk
                # without a script and with the same header; which goes first alternates.
                pair = [("entity_hot", hot_url), ("bare", bare_url)]
                for name, url in pair if turn % 2 == 0 else pair[::-1]:
                    results[name] = _wrk(url, None, args.connections, args.seconds, header=auth)
                results["batch100"] = _wrk(base, paths["batch100"], args.connections, args.seconds)
                results["batch100_1conn"] = _wrk(base, paths["batch100"], 1, args.seconds)
                for name, figures in results.items():
                    emit(
                        {
                            "what": "http",
                            "server": server,
                            "round": turn + 1,
                            "scenario": name,
                            "workers": args.workers,
                            "connections": 1 if name == "batch100_1conn" else args.connections,
                            **figures,
                        }
                    )
                rounds.append(results)
        finally:
            _stop(process)
            if bare is not None:
                _stop(bare)

        emit(
            {
                "what": "http_summary",
                "server": server,
                "rounds": args.rounds,
                "seconds_each": args.seconds,
                "access_log": args.access_log,
                "medians_of_rounds": True,
                "entity_rps": _median(rounds, "entity", "requests_per_s"),
                "entity_p99_ms": _median(rounds, "entity", "p99_ms"),
                "vector_rps": _median(rounds, "vector", "requests_per_s"),
                "vector_p99_ms": _median(rounds, "vector", "p99_ms"),
                "entity_hot_rps": _median(rounds, "entity_hot", "requests_per_s"),
                "bare_rps": _median(rounds, "bare", "requests_per_s"),
                "hot_over_bare": statistics.median(
                    r["entity_hot"]["requests_per_s"] / r["bare"]["requests_per_s"] for r in rounds
                ),
                "batch100_vectors_per_s": 100 * _median(rounds, "batch100", "requests_per_s"),
                "batch100_1conn_p99_ms": _median(rounds, "batch100_1conn", "p99_ms"),
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
