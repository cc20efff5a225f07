"""Netlink without a kernel: an opener whose sockets replay datagrams recorded from a real one.

The flowlens readers (``SockDiag``, ``DestroyEvents``, ``Conntrack``, ``RouteNetlink``) take an
``opener``; handed a :class:`Replay`, they send their requests to it and read the recorded
answers, so their parsing runs in unit tests, without root. The fixtures are written by
``tests/kernel/record_fixtures.py``.

Each exchange is a request and the datagrams that answered it. A request sent must match the
recorded one (type, flags and payload; the sequence number may differ), and the answer's
sequence numbers are rewritten to the request's, so a reader may send its requests from any
sequence number. With nothing left to read, ``recv`` does what a real socket does: a blocking
one times out (``TimeoutError``) at once instead of waiting, a non-blocking one raises
``BlockingIOError``. A reply may also be an exception, raised where it stands (``ENOBUFS``).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: len, type, flags, seq, pid


def load(name: str) -> dict[str, Any]:
    """A recorded fixture, its datagrams decoded to bytes."""
    with open(os.path.join(FIXTURES, f"{name}.json")) as f:
        data = json.load(f)
    for exchange in data["exchanges"]:
        exchange["request"] = base64.b64decode(exchange["request"])
        exchange["replies"] = [base64.b64decode(r) for r in exchange["replies"]]
    data["events"] = [base64.b64decode(e) for e in data["events"]]
    return data


@dataclass
class Exchange:
    """A request (``None``: any) and what answered it: datagrams, or exceptions to raise."""

    request: bytes | None
    replies: list[Any] = field(default_factory=list)


class Replay:
    """An opener: every socket it opens takes the next exchanges in turn (sockets opened one
    after the other share the list), and reads ``events`` when nothing was asked."""

    def __init__(self, exchanges: list[Exchange] | list[dict[str, Any]] = (), events: list[Any] = ()) -> None:
        self.exchanges: deque[Exchange] = deque(
            e if isinstance(e, Exchange) else Exchange(e["request"], list(e["replies"])) for e in exchanges
        )
        self.events = list(events)
        self.sockets: list[ReplaySocket] = []

    def __call__(self, protocol: int) -> ReplaySocket:
        sock = ReplaySocket(self, protocol)
        self.sockets.append(sock)
        return sock

    @property
    def used_up(self) -> bool:
        return not self.exchanges and all(not s.queue for s in self.sockets)


class ReplaySocket:
    """What NetlinkSocket asks of a socket, answered from a :class:`Replay`."""

    def __init__(self, replay: Replay, protocol: int) -> None:
        self.replay, self.protocol = replay, protocol
        self.queue: deque[Any] = deque(replay.events)
        replay.events = []
        self.timeout: float | None = None
        self.bound: Any = None
        self.options: list[tuple[int, int, Any]] = []
        self.sent: list[bytes] = []
        self.closed = False

    def bind(self, address: Any) -> None:
        self.bound = address

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def gettimeout(self) -> float | None:
        return self.timeout

    def setsockopt(self, level: int, option: int, value: Any) -> None:
        self.options.append((level, option, value))

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        self.closed = True

    def send(self, data: bytes, flags: int = 0) -> int:
        if self.closed:
            raise OSError(9, "Bad file descriptor")
        self.sent.append(bytes(data))
        if not self.replay.exchanges:
            raise AssertionError(f"request {len(self.sent)} was not recorded: {bytes(data[:32]).hex()}...")
        exchange = self.replay.exchanges.popleft()
        _length, _kind, _flags, seq, _pid = HEADER.unpack_from(data, 0)
        recorded_seq = None
        if exchange.request is not None:
            recorded = exchange.request
            if (recorded[4:8], recorded[16:]) != (bytes(data[4:8]), bytes(data[16:])):
                raise AssertionError(f"request {len(self.sent)} differs from the one recorded:\n"
                                     f"  sent     {bytes(data).hex()}\n  recorded {recorded.hex()}")
            recorded_seq = HEADER.unpack_from(recorded, 0)[3]
        for reply in exchange.replies:
            self.queue.append(_renumber(reply, recorded_seq, seq) if isinstance(reply, bytes) else reply)
        return len(data)

    def recv(self, size: int, flags: int = 0) -> bytes:
        if self.queue:
            item = self.queue.popleft()
            if isinstance(item, BaseException):
                raise item
            return item[:size]
        if flags & socket.MSG_DONTWAIT or self.timeout == 0:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        raise TimeoutError("timed out")


def _renumber(datagram: bytes, old: int | None, new: int) -> bytes:
    """The datagram with the sequence number of each message answering ``old`` set to ``new``:
    those numbered ``old`` or 0 (hand-made ones), or all when ``old`` is None. Whatever cannot
    be walked is left as it is."""
    out = bytearray(datagram)
    offset = 0
    while offset + HEADER.size <= len(out):
        length, kind, flags, seq, pid = HEADER.unpack_from(out, offset)
        if length < HEADER.size:
            break
        if old is None or seq in (old, 0):
            HEADER.pack_into(out, offset, length, kind, flags, new, pid)
        offset += (length + 3) & ~3
    return bytes(out)


def message(kind: int, payload: bytes, seq: int = 0, flags: int = 0) -> bytes:
    """One netlink message, padded to 4 bytes."""
    length = HEADER.size + len(payload)
    return HEADER.pack(length, kind, flags, seq, 0) + payload + b"\0" * (-length % 4)


def messages(datagram: bytes) -> list[tuple[int, int, int]]:
    """``(offset, length, type)`` of each message of a well-formed datagram."""
    found, offset = [], 0
    while offset + HEADER.size <= len(datagram):
        length, kind, _flags, _seq, _pid = HEADER.unpack_from(datagram, offset)
        found.append((offset, length, kind))
        offset += (length + 3) & ~3
    return found
