"""`fabric serve` as a real server process, spoken to over loopback HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """Status and body of a GET of ``target`` as sent (httpx refuses URLs over 64 KiB)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize(("server", "workers"), [("granian", 1), ("granian", 2), ("uvicorn", 1)])
def test_serve_answers_over_http(
    demo_dir: Path, demo_keys: dict[str, str], server: str, workers: int
) -> None:
    from fabric.project import Project

    with Project.open(demo_dir / "fabric.yaml") as project:
        entity_id = project.catalog.sample_ids("customer", 1)[0]
    port = free_port()
    kind = server
    env = {k: v for k, v in os.environ.items() if k != "FABRIC_CONFIG"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fabric",
            "serve",
            "-c",
            str(demo_dir / "fabric.yaml"),
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--server",
            server,
            "--access-log",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, "server exited early"
            assert time.monotonic() < deadline, "server did not start within 30 s"
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {demo_keys['analyst-demo']}"}
        for _ in range(4):  # spread over the workers
            response = httpx.get(f"{base}/v1/entities/customer/{entity_id}", headers=headers)
            assert response.status_code == 200
            assert response.json()["policy"] == "analyst"
        missing = httpx.get(f"{base}/v1/entities/customer/{entity_id}")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
        # A line forged in the path never reaches the log (OPTIONS needs a key too).
        forged = f"{base}/v1/entities/customer/abc%0AINFO - forged line%0D%0A"
        assert httpx.request("OPTIONS", forged).status_code == 401
        assert httpx.request("OPTIONS", forged, headers=headers).status_code == 204
        # A long URL: the app's 414, in the error shape. Past 64 KiB granian refuses it by
        # itself with an empty 414. (uvicorn hands such a target to the app, or past its
        # parser's limit answers 400 itself; it may close the connection while the request is
        # still being sent, a reset the client sees first: nothing to assert.)
        status, body = raw_get(port, "/v1/entities/customer/" + "x" * 16_000)
        assert status == 414 and json.loads(body)["error"]["code"] == "uri_too_long"
        if kind == "granian":
            assert raw_get(port, "/v1/entities/customer/" + "x" * 100_000) == (414, b"")
        # SIGHUP reloads (uvicorn: our handler; granian: it restarts its workers, which open
        # the project again); without a handler it would end the process.
        os.kill(server.pid, signal.SIGHUP)
        time.sleep(1.5)
        assert server.poll() is None, "SIGHUP ended the server"
        response = httpx.get(f"{base}/v1/entities/customer/{entity_id}", headers=headers)
        assert response.status_code == 200
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            output, _ = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            output, _ = server.communicate()
    text = output.decode(errors="replace")
    assert "Traceback" not in text
    assert demo_keys["analyst-demo"] not in text  # keys never reach the log
    # The access log names the key, never shows it.
    assert f'analyst-demo analyst "GET /v1/entities/customer/{entity_id}" 200' in text
    assert '- - "GET /v1/entities/{entity_type}/{entity_id}" 401' in text
    assert '"OPTIONS /v1/entities/{entity_type}/{entity_id}" 204' in text
    assert "forged" not in text and "x" * 100 not in text


def test_serve_bad_config_is_exit_1(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fabric", "serve", "-c", str(tmp_path / "none.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "none.yaml: file not found" in result.stderr and "Traceback" not in result.stderr
