"""Real TCP traffic inside test namespaces, driven from the test process.

Sockets are opened by a thread that has entered the namespace; they stay bound to it, so the
test can use them from anywhere and knows exactly how many bytes went each way.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from flowlens.kernel.netns import entered


def ns_path(name: str) -> str:
    return f"/run/netns/{name}"


def open_socket(ns: str, family: int = socket.AF_INET) -> socket.socket:
    with entered(ns_path(ns)):
        return socket.socket(family, socket.SOCK_STREAM)


@dataclass
class Server:
    """A listener in a namespace: reads each connection to EOF, answers ``reply`` bytes, closes."""

    ns: str
    address: str
    port: int
    reply: int = 0
    family: int = socket.AF_INET
    received: list[int] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Server:
        self._sock = open_socket(self.ns, self.family)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.address, self.port))
        self._sock.listen(512)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        total = 0
        with conn:
            while data := conn.recv(1 << 16):
                total += len(data)
            if self.reply:
                conn.sendall(b"r" * self.reply)
        self.received.append(total)

    def stop(self) -> None:
        """Close the listener; waking the blocked accept() first, as it pins the socket."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)


def request(ns: str, address: str, port: int, payload: int, family: int = socket.AF_INET,
            on_connected: Callable[[socket.socket], None] | None = None) -> int:
    """Connect, send ``payload`` bytes, half-close, read the reply to EOF, close.

    Returns the reply size. Every byte is acknowledged and every FIN seen before ``close``,
    so both ends' kernel counters are final when this returns.
    """
    sock = open_socket(ns, family)
    with sock:
        sock.connect((address, port))
        if on_connected:
            on_connected(sock)
        sock.sendall(b"q" * payload)
        sock.shutdown(socket.SHUT_WR)
        got = 0
        while data := sock.recv(1 << 16):
            got += len(data)
    return got


def connect_result(ns: str, address: str, port: int, timeout: float) -> str:
    """Try one connection and close the socket: 'established', 'refused' or 'timeout'."""
    sock = open_socket(ns)
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
        return "established"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    finally:
        sock.close()
