"""Minimal netlink transport: open a socket, send a request, walk the reply messages.

Only what flowlens needs: dump requests answered by multi-part replies that end in
``NLMSG_DONE``, ``NLMSG_ERROR`` decoding, multicast subscription and non-blocking reads of
event sockets. Payload layouts live with each family (:mod:`sock_diag`, :mod:`rtnetlink`).
Messages are handed out as ``(type, buffer, start, end)`` so that hot paths can parse in place
with precompiled :class:`struct.Struct` objects instead of copying. Attributes, the kernel's
type-length-value records inside messages, are decoded by one function, :func:`iter_attrs`,
for every family.

What the kernel sends is checked before it is read: a message or an attribute whose length runs
past what holds it, or is shorter than its own header, raises :class:`NetlinkError` (``EBADMSG``)
rather than being read as garbage or looped on.

The socket itself comes from an *opener*, ``open_netlink`` unless told otherwise, so that tests
hand in one that replays recorded datagrams (``tests/kernel/replay.py``). What a socket is asked
for: ``bind``, ``settimeout``, ``setsockopt``, ``send``, ``recv`` (with ``MSG_DONTWAIT`` on event
sockets), ``fileno`` and ``close``.

A netlink socket answers one dump at a time: a second request sent while a dump is being read
makes the kernel refuse it or interleave answers, and a reader waiting for the wrong answer
waits forever. So a socket has at most one request in flight (a second is a programming error,
raised at once), a dump abandoned half-way is read to its end before the next request, and
every read has a timeout: the kernel answers in microseconds, so silence means something is
wrong, and the caller is told instead of blocked.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

from flowlens.model.errors import NetlinkError, NetlinkTimeout, PrivilegeError

NLMSG_HDR = struct.Struct("=IHHII")
NLA_HDR = struct.Struct("=HH")
NLMSG_ERR = struct.Struct("=i")

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLMSG_MIN_TYPE = 0x10  # types below are control messages

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH

NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4
NETLINK_NETFILTER = 12

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1

# The kernel never puts more than 32 KiB in one dump datagram; a bigger buffer costs nothing
# but lets event sockets drain several notifications per syscall.
RECV_SIZE = 1 << 16
# How long one read may wait for the kernel's answer to a request.
REPLY_TIMEOUT = 2.0

Message = tuple[int, bytes, int, int]


def align4(n: int) -> int:
    return (n + 3) & ~3


def malformed(what: str) -> NetlinkError:
    """The error for a reply that breaks netlink's framing: the kernel never sends one."""
    return NetlinkError(f"malformed netlink reply: {what}", errno.EBADMSG)


def iter_attrs(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Yield ``(type, payload_start, payload_end)`` for each netlink attribute in ``buf[start:end]``.

    The one attribute decoder of every family: ``struct nlattr`` and ``struct rtattr`` are the
    same 4-byte header, a length that includes it and a type. The type comes without its
    ``NLA_F_NESTED`` and ``NLA_F_NET_BYTEORDER`` flags; a nested attribute's payload is itself a
    range of attributes, decoded by calling this again on ``(payload_start, payload_end)``.
    Raises :class:`NetlinkError` on an attribute shorter than its header or longer than the
    range that holds it. Fewer than 4 bytes left over at the end are alignment padding."""
    unpack = NLA_HDR.unpack_from
    while start + 4 <= end:
        length, kind = unpack(buf, start)
        if length < 4 or start + length > end:
            raise malformed(f"an attribute of {length} bytes at offset {start} in a range ending at {end}")
        yield kind & 0x3FFF, start + 4, start + length
        start += (length + 3) & ~3


def attr_table(buf: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """:func:`iter_attrs` as a map from type to payload range (the last one wins; the kernel
    never repeats one where this is used)."""
    return {kind: (a, b) for kind, a, b in iter_attrs(buf, start, end)}


def pack_attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return NLA_HDR.pack(length, kind) + payload + b"\0" * (align4(length) - length)


def open_netlink(protocol: int) -> socket.socket:
    """The real socket; tests hand in another opener that replays recorded datagrams."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)


Opener = Callable[[int], Any]


class NetlinkSocket:
    """One netlink socket of one protocol, bound in the network namespace it was opened in."""

    def __init__(self, protocol: int, groups: tuple[int, ...] = (), rcvbuf: int = 0,
                 timeout: float = REPLY_TIMEOUT, opener: Opener = open_netlink) -> None:
        try:
            self.sock = opener(protocol)
        except PermissionError as err:
            raise PrivilegeError("cannot open a netlink socket: run as root or grant CAP_NET_ADMIN") from err
        self.sock.bind((0, 0))
        self.timeout = timeout
        self.sock.settimeout(timeout)
        self.rcvbuf = 0
        if rcvbuf:
            self.set_rcvbuf(rcvbuf)
        for group in groups:
            try:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
            except PermissionError as err:
                self.sock.close()
                raise PrivilegeError(
                    "cannot subscribe to socket-destroy events: run as root or grant CAP_NET_ADMIN"
                ) from err
        self._seq = 0
        self._in_flight = 0  # the sequence number of a request whose answer is not read yet

    def set_rcvbuf(self, size: int) -> None:
        try:  # SO_RCVBUFFORCE ignores rmem_max but needs CAP_NET_ADMIN.
            self.sock.setsockopt(socket.SOL_SOCKET, 33, size)
        except PermissionError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        self.rcvbuf = size

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def request(self, msg_type: int, payload: bytes, flags: int = NLM_F_REQUEST | NLM_F_DUMP) -> int:
        if self._in_flight:
            raise RuntimeError(f"netlink request sent while the answer to request {self._in_flight} is unread")
        self._seq += 1
        header = NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), msg_type, flags, self._seq, 0)
        self.sock.send(header + payload)
        self._in_flight = self._seq
        return self._seq

    def receive(self) -> bytes:
        """One datagram of the answer to the request in flight, or :class:`NetlinkTimeout`."""
        try:
            return self.sock.recv(RECV_SIZE)
        except TimeoutError as err:
            raise NetlinkTimeout(f"the kernel did not answer a netlink request within {self.timeout:g} s",
                                 errno.ETIMEDOUT) from err

    def answered(self) -> None:
        """The request in flight has been answered in full; the socket takes a new one."""
        self._in_flight = 0

    def dump(self, msg_type: int, payload: bytes) -> Iterator[list[Message]]:
        """Send a dump request and yield its reply one datagram (a list of messages) at a time.

        Abandoning the iteration early is allowed: the rest of the reply is read and dropped
        before the socket takes its next request."""
        seq = self.request(msg_type, payload)
        done = False
        try:
            while not done:
                data = self.receive()
                batch, last = answer_batch(data, seq)
                if last is not None:
                    done = True
                    kind, start, end = last
                    if kind == NLMSG_ERROR:
                        raise_for_error(data, start, end)
                if batch:
                    yield batch
        finally:
            if not done:
                self._finish(seq)
            self.answered()

    def _finish(self, seq: int) -> None:
        """Read an abandoned dump to its end, so its answers cannot be taken for the next one's."""
        try:
            while True:
                data = self.receive()
                for kind, _start, _end, msg_seq in split_messages(data):
                    if msg_seq == seq and kind in (NLMSG_DONE, NLMSG_ERROR):
                        return
        except (NetlinkError, OSError):
            return  # nothing more (readable) is coming; later answers are skipped by their sequence number

    def drain(self) -> Iterator[bytes]:
        """Yield every datagram waiting on a (multicast) socket without blocking.

        Raises ``OSError(ENOBUFS)`` when the kernel dropped notifications because the receive
        buffer overflowed; the socket stays usable afterwards.
        """
        while True:
            try:
                data = self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            yield data


def split_messages(data: bytes) -> list[tuple[int, int, int, int]]:
    """``(type, payload_start, payload_end, seq)`` of each message of a datagram.

    The whole datagram is checked before any message is handed out: a message whose length is
    shorter than its header or runs past the end of the datagram, or a datagram that ends
    inside a message header, raises :class:`NetlinkError`."""
    messages: list[tuple[int, int, int, int]] = []
    append = messages.append
    offset, size = 0, len(data)
    unpack = NLMSG_HDR.unpack_from
    while offset + 16 <= size:
        length, kind, _flags, seq, _pid = unpack(data, offset)
        if length < 16 or offset + length > size:
            raise malformed(f"a message of {length} bytes at offset {offset} of a {size}-byte datagram")
        append((kind, offset + 16, offset + length, seq))
        offset += (length + 3) & ~3
    if offset < size:
        raise malformed(f"{size - offset} bytes after the last message of a {size}-byte datagram")
    return messages


def answer_batch(data: bytes, seq: int) -> tuple[list[Message], tuple[int, int, int] | None]:
    """The messages of a datagram that answer request ``seq``, up to the one that ends the
    answer (``NLMSG_DONE`` or ``NLMSG_ERROR``), given apart as ``(type, start, end)``; ``None``
    when more is to come. Messages of other requests (late answers to an abandoned one) and
    other control messages (``NLMSG_NOOP``) are skipped. The framing is checked as
    :func:`split_messages` does.

    :func:`split_messages` and the filter in one pass: this is every dump's inner loop."""
    batch: list[Message] = []
    append = batch.append
    offset, size = 0, len(data)
    unpack = NLMSG_HDR.unpack_from
    while offset + 16 <= size:
        length, kind, _flags, msg_seq, _pid = unpack(data, offset)
        if length < 16 or offset + length > size:
            raise malformed(f"a message of {length} bytes at offset {offset} of a {size}-byte datagram")
        if msg_seq == seq:
            if kind >= NLMSG_MIN_TYPE:
                append((kind, data, offset + 16, offset + length))
            elif kind in (NLMSG_DONE, NLMSG_ERROR):
                return batch, (kind, offset + 16, offset + length)
        offset += (length + 3) & ~3
    if offset < size:
        raise malformed(f"{size - offset} bytes after the last message of a {size}-byte datagram")
    return batch, None


def error_code(data: bytes, start: int, end: int) -> int:
    """The errno of an ``NLMSG_ERROR`` message (0 for an ACK)."""
    if end - start < NLMSG_ERR.size:
        raise malformed(f"an error message of {end - start} bytes, too short for its error code")
    return -NLMSG_ERR.unpack_from(data, start)[0]


def raise_for_error(data: bytes, start: int, end: int | None = None) -> None:
    """Raise what an ``NLMSG_ERROR`` message says; return on an ACK. ``end``, when given, is
    checked to hold the error code."""
    err = error_code(data, start, len(data) if end is None else end)
    if err == 0:
        return  # an ACK
    if err in (errno.EPERM, errno.EACCES):
        raise PrivilegeError("the kernel refused a netlink request: run as root or grant CAP_NET_ADMIN")
    if err < 0 or err > 4095:
        raise malformed(f"an error message with error code {-err}")
    raise NetlinkError(f"netlink request failed: {os.strerror(err)}", err)
