"""Serving the dashboard with uvicorn: ``ringwork dashboard MODULE:APP``.

The socket is bound here, before uvicorn starts, so a port in use (or a host this machine does
not have) is one ``Error:`` line from :func:`ringwork.addresses.bind_error` and exit 1, not
uvicorn's own log and traceback. ``--port 0`` takes a free port; the address served is logged
as ``event=dashboard_serving url=...`` either way.

Uvicorn's logging is left to ringwork's (no ``log_config`` of its own, no access log): one line
per event, and the dashboard's guard already turns a failing page into one line.

SIGTERM and SIGINT stop the server (open event streams get :data:`GRACEFUL_STOP` seconds) and
the command exits 0: a stop is how a server is meant to end. (Uvicorn itself raises the signal
again once it has stopped, which ends the process killed by SIGTERM, or as an aborted command.)

Threads: the main thread (uvicorn's event loop runs on it until SIGINT or SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Iterator
from typing import Any

from ringwork.addresses import bind_error
from ringwork.log import log_event

#: Seconds a stop waits for open pages' event streams before closing them.
GRACEFUL_STOP = 2


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; the failure as a one-line ConfigurationError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise bind_error("--host/--port", host, port, exc) from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise bind_error("--host/--port", host, port, exc) from None
    sock.set_inheritable(True)
    return sock


def serve(asgi: Any, host: str, port: int, prefix: str = "") -> None:
    """Serve ``asgi`` on ``host:port`` until SIGINT or SIGTERM."""
    import uvicorn

    sock = bind(host, port)
    chosen = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(asgi, log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=GRACEFUL_STOP)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # A second signal forces the exit (uvicorn's handle_exit); none is raised again.
            previous = {sig: signal.signal(sig, self.handle_exit)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    log_event("dashboard_serving", url=f"http://{shown}:{chosen}{prefix}/")
    try:
        Server(config).run(sockets=[sock])
    finally:
        sock.close()
    log_event("dashboard_stopped")
