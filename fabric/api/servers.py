"""Run the app under an ASGI server process: granian (the default) or uvicorn.

uvicorn with more than one worker binds the listening socket itself and hands it to its
workers with ``proto`` 0; asyncio sets TCP_NODELAY only on connections of a socket that says
``IPPROTO_TCP``, so Nagle's algorithm stays on and every keep-alive response waits about
40 ms for the client's delayed ACK (uvicorn issue #3149, open): 2 workers served a bare route
far slower than one (benchmarks/README.md, "uvicorn's socket"). The socket is re-wrapped
with its protocol before the workers start.
"""

from __future__ import annotations

import socket

import uvicorn
from uvicorn.supervisors import Multiprocess

__all__ = ["run_granian", "run_uvicorn"]


class _TcpConfig(uvicorn.Config):
    """uvicorn's config, whose bound TCP socket says it is TCP (see the module's note)."""

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return sock
        tcp = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
        tcp.set_inheritable(True)
        return tcp


def run_uvicorn(target: str, host: str, port: int, workers: int, *, factory: bool) -> None:
    """Serve ``target`` (``module:app``) with uvicorn until interrupted."""
    config = _TcpConfig(
        target,
        factory=factory,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,
    )
    if workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()


def run_granian(target: str, host: str, port: int, workers: int, *, factory: bool) -> None:
    """Serve ``target`` (``module:app``) with granian until interrupted."""
    from granian import Granian
    from granian.constants import Interfaces

    Granian(
        target,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        factory=factory,
        log_access=False,
    ).serve()
