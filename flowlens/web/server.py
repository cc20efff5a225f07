"""An ASGI app served by uvicorn on a thread of its own, with the limits an exposed port needs.

uvicorn closes idle keep-alive connections but waits forever for the first request of a
connection (or its headers): a client that connects and says nothing, or says it a byte at a
time, holds a connection slot for good. :class:`TimedH11Protocol` closes any connection that
has been waiting for a request's headers longer than ``header_timeout``; bodies are read
under a timeout by the handlers (:mod:`flowlens.web.body`). Past ``max_connections`` open
connections, requests are answered 503 at once. No ``Server`` header is sent.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from flowlens.model.errors import ConfigError, FlowlensError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ServerStats:
    """What the connection layer saw; exported by each service's /metrics."""

    header_timeouts: int = 0  # connections closed while waiting for a request's headers
    body_timeouts: int = 0  # requests whose body stopped coming
    disconnects: int = 0  # clients gone before their request was answered


@dataclass(slots=True)
class Limits:
    header_timeout: float = 10.0  # seconds a connection may wait for (or take to send) a request's headers
    body_timeout: float = 30.0  # seconds between two chunks of a request body
    max_connections: int = 256
    stats: ServerStats = field(default_factory=ServerStats)


def timed_protocol(limits: Limits) -> type[H11Protocol]:
    """An h11 protocol class that closes connections waiting too long for request headers."""

    class TimedH11Protocol(H11Protocol):
        _waiting_since: float | None
        _timer: asyncio.TimerHandle | None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._waiting_since = time.monotonic()
            self._timer = None
            self._arm(limits.header_timeout)

        def _arm(self, delay: float) -> None:
            self._timer = self.loop.call_later(max(delay, 0.05), self._check)

        def _check(self) -> None:
            if self.transport.is_closing():
                return
            since = self._waiting_since
            if since is None:  # a request is being handled: look again later
                self._arm(limits.header_timeout)
                return
            waited = time.monotonic() - since
            if waited >= limits.header_timeout:
                limits.stats.header_timeouts += 1
                self.transport.close()
                return
            self._arm(limits.header_timeout - waited)

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request's headers arrived
                self._waiting_since = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._waiting_since = time.monotonic()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._timer is not None:
                self._timer.cancel()
            super().connection_lost(exc)

    return TimedH11Protocol


@dataclass(slots=True)
class Tls:
    certfile: str = ""
    keyfile: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.certfile)


class Served:
    """A running server; :meth:`stop` ends it after in-flight requests (bounded)."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, url: str) -> None:
        self.server, self.thread, self.url = server, thread, url

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(1.0)


def check_address(address: str) -> None:
    """An address this machine can listen on, or one clear error."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(f"address {address!r} is not an IP address: use e.g. 0.0.0.0, 127.0.0.1 or ::") from None
    if ip.is_unspecified or ip.is_loopback:
        return
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as err:
            if err.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(f"address {address} is not an address of this machine: listen on one of its "
                                  "own addresses, or 0.0.0.0") from None
            raise


def bind(address: str, port: int) -> socket.socket:
    """The listening socket, or one clear error (taken port, foreign address, bad port)."""
    if not 0 < port < 65536:
        raise ConfigError(f"port {port} is out of range: use 1-65535")
    check_address(address)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # With the protocol named, asyncio sets TCP_NODELAY on accepted connections; without it a
    # response's headers and body meet Nagle and the client's delayed ACK: 40 ms a request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
        sock.listen(1024)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise FlowlensError(f"port {port} on {address} is already in use: stop the other process or choose "
                                "another with --port") from None
        if err.errno == errno.EACCES:
            raise FlowlensError(f"not allowed to listen on port {port}: use a port above 1023 or run with "
                                "CAP_NET_BIND_SERVICE") from None
        raise FlowlensError(f"cannot listen on {address}:{port}: {err.strerror}") from None
    return sock


def serve(app: Any, address: str, port: int, limits: Limits | None = None, tls: Tls | None = None,
          name: str = "http", extra_sockets: tuple[socket.socket, ...] = ()) -> Served:
    """Serve ``app`` on ``address:port`` (and on ``extra_sockets``) from a thread."""
    limits = limits or Limits()
    tls = tls or Tls()
    sock = bind(address, port)
    options: dict[str, Any] = dict(
        http=timed_protocol(limits), lifespan="off", log_level="warning", access_log=False, server_header=False,
        limit_concurrency=limits.max_connections, timeout_keep_alive=int(max(1, limits.header_timeout)),
        timeout_graceful_shutdown=5,
    )
    if tls.enabled:
        options.update(ssl_certfile=tls.certfile, ssl_keyfile=tls.keyfile or None)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    sockets = [sock, *extra_sockets]
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise FlowlensError(f"the {name} server could not start on {address}:{port}"
                                + (": check --tls-cert and --tls-key" if tls.enabled else ""))
        time.sleep(0.02)
    scheme = "https" if tls.enabled else "http"
    host = f"[{address}]" if ":" in address else address
    return Served(server, thread, f"{scheme}://{host}:{port}")
